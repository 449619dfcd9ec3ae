"""Write PubMedQA's yes/no items as a data set of another shape: a binary (BioASQ-style) task in CSV files
with their own column names, the example of docs/your-own-data.md.

    python scripts/export_yesno_csv.py [--pqal ori_pqal.json] [--output_dir outputs/data/pubmedqa-yesno]

Writes train.csv (the yes/no items of PQA-L's first 500, the paper split's training and validation items) and
test.csv (those of its last 500, the paper's test items), with the columns pmid, query, passage, conclusion
and answer (yes or no). The files are derived from the official file, so they stay outside the repository.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from domainqa.config import run_cli
from domainqa.data import PUBMEDQA_ENV, load_pubmedqa

COLUMNS = {"pmid": "id", "query": "question", "passage": "context", "conclusion": "long_answer",
           "answer": "final_decision"}  # fmt: skip
LABELS = ("yes", "no")
TRAIN_ITEMS = 500  # the paper split: 450 training and 50 validation items first, the 500 test items last


def export(pqal: str | None, output_dir: Path) -> dict[str, int]:
    """Write train.csv and test.csv; returns the rows written to each."""
    items = load_pubmedqa(pqal)
    parts = {"train": items[:TRAIN_ITEMS], "test": items[TRAIN_ITEMS:]}
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, part in parts.items():
        rows = [{column: item[field] for column, field in COLUMNS.items()} for item in part
                if item["final_decision"] in LABELS]  # fmt: skip
        with (output_dir / f"{name}.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        written[name] = len(rows)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pqal", "--dataset_path", dest="pqal",
                        help=f"the official ori_pqal.json (default ${PUBMEDQA_ENV}, else the Hub)")  # fmt: skip
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/data/pubmedqa-yesno"))
    args = parser.parse_args(argv)
    written = export(args.pqal or os.environ.get(PUBMEDQA_ENV), args.output_dir)
    for name, count in written.items():
        print(f"wrote {args.output_dir / name}.csv ({count} yes/no items)")
    return 0


if __name__ == "__main__":
    run_cli(main)  # no data offline, a full disk: one line and exit 2
