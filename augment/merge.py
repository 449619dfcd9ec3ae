"""`python -m augment.merge RUN_DIR... --output_dir DIR` (or `--merges FILE`): join several runs into one set.

Provenance (source_id, strategy, model, prompt_version) stays on every row; ids are already unique
across models (they hold the model's name); an original item present in several runs is kept once. Runs of a
data set of one's own are read with the label set and column names their summary.json records, and the
merged data keeps those column names; runs with different ones are refused."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from domainqa.config import ArgumentParser, UsageError, run_cli
from domainqa.data import FIELDS, LABELS, DataError, read_examples
from domainqa.io import atomic_write_json, atomic_write_jsonl
from domainqa.run_folder import lock_run_folder, release_run_folder

from .validation import fingerprint


def run_format(run_dir: str) -> tuple[list[str] | None, dict[str, str] | None]:
    """(label set, {field: column}) of an augment output folder, from its summary.json; (None, None) for
    a folder or file without one (any dataset file)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None, None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e})") from e
    return summary.get("labels"), summary.get("columns")


def merge(run_dirs: list[str], output_dir: str) -> dict:
    formats = {run_dir: run_format(run_dir) for run_dir in run_dirs}
    columns = {json.dumps(c, sort_keys=True) for _, c in formats.values() if c is not None}
    labels = {tuple(lab) for lab, _ in formats.values() if lab is not None}
    if len(columns) > 1 or len(labels) > 1:
        raise DataError(f"{', '.join(run_dirs)}: the runs hold different label sets or column names; merge alike runs")
    out_columns = json.loads(columns.pop()) if columns else None
    out_labels = list(labels.pop()) if labels else list(LABELS)
    rows, seen_ids, seen_text = [], set(), set()
    dropped = Counter()
    for run_dir in run_dirs:
        # The data set's own columns: fields other than the id read as their column or PubMedQA's name.
        spec = {f: c for f, c in (out_columns or {}).items() if c != f} or None
        for row in read_examples(run_dir, out_labels, spec):
            if row["id"] in seen_ids or fingerprint(row) in seen_text:
                dropped["original" if row.get("strategy") == "original" else "duplicate"] += 1
                continue
            seen_ids.add(row["id"])
            seen_text.add(fingerprint(row))
            rows.append(row)
    summary = {
        "runs": [str(Path(d)) for d in run_dirs],
        "examples": len(rows),
        "by_strategy": dict(Counter(r.get("strategy", "original") for r in rows)),
        "by_model": dict(Counter(str(r.get("model")) for r in rows)),
        "dropped": dict(dropped),
        "labels": out_labels,
    }
    if out_columns is not None:
        summary["columns"] = out_columns
        rows = [
            {out_columns.get(k, k): v for k, v in row.items() if k in out_columns or k not in FIELDS} for row in rows
        ]
    lock_run_folder(output_dir, "python -m augment.merge")
    try:
        atomic_write_jsonl(Path(output_dir) / "data.jsonl", rows)
        atomic_write_json(Path(output_dir) / "summary.json", summary)
    finally:
        release_run_folder(output_dir)
    return summary


def merges_from_file(path: str, root: str = "outputs/augment") -> list[tuple[list[str], str]]:
    """(run folders, output folder) for each entry {merged name: [data recipe name, ...]} of a merges file."""
    try:
        table = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read the merges file ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise DataError(f"{path}: expected {{merged name: [recipe name, ...]}}")
    return [([f"{root}/{name}" for name in names], f"{root}/{merged}") for merged, names in table.items()]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m augment.merge", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="output folders of augment runs (or any dataset files)")
    parser.add_argument("--output_dir", help="where the merged data.jsonl goes")
    parser.add_argument("--merges", help="a merges file such as recipes/augment/merges.yaml: build every entry")
    args = parser.parse_args(argv)
    if args.merges:
        jobs = merges_from_file(args.merges)
    elif args.runs and args.output_dir:
        jobs = [(args.runs, args.output_dir)]
    else:
        raise UsageError("give run folders and --output_dir, or --merges FILE")
    for runs, output_dir in jobs:
        summary = merge(runs, output_dir)
        print(f"augment.merge: {summary['examples']} examples in {output_dir}/data.jsonl")
    return 0


if __name__ == "__main__":
    run_cli(main, "augment.merge")
