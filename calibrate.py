"""Fit the per-label calibration of label scoring on scored training or validation items, into the run folder;
infer.py then writes calibrated predictions beside the raw ones.

    python infer.py RECIPE --eval_split validation            # label scores of the validation items
    python calibrate.py --predictions outputs/run/predictions_paper_validation_score.jsonl
    python infer.py RECIPE                                    # test: raw and *_calibrated predictions

Test items are refused: a calibration fitted on the items it is scored on is not a result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from domainqa import config
from domainqa.arguments import DataArguments, pipeline_keys
from domainqa.calibration import CALIBRATION_FILE, fit_calibration, save_calibration
from domainqa.config import UsageError, run_cli, setup_logging
from domainqa.data_spec import load_parts
from domainqa.predictions import read_complete_rows

logger = logging.getLogger(__name__)


@dataclass
class CalibrationArguments:
    predictions: str = field(
        metadata={"help": "The JSONL of infer.py in score mode on training or validation items (not test)."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": f"Where {CALIBRATION_FILE} goes; default: the predictions' folder."}
    )


ARGUMENTS = (DataArguments, CalibrationArguments)


def parse_args(
    args: list[str] | None = None, settings: dict | None = None
) -> tuple[DataArguments, CalibrationArguments]:
    """The command line (default: this process's); `settings` are recipe keys set on top of the recipe."""
    return config.parse_args(*ARGUMENTS, args=args, settings=settings, shared_keys=pipeline_keys())


def main(data_args: DataArguments, calibration_args: CalibrationArguments) -> dict:
    """Fit the calibration and save it into the run folder; returns it."""
    setup_logging()
    path = Path(calibration_args.predictions)
    rows, _ = read_complete_rows(path)
    rows = [r for r in rows if "label_logprobs" in r]
    if not rows:
        raise UsageError(f"{path}: no label scores; run infer.py with --mode score on training or validation items")
    data = load_parts(data_args)
    parts = data.parts
    by_id = {e["id"]: (name, e) for name in ("train", "validation", "test") for e in parts[name]}
    unknown = [r["id"] for r in rows if r["id"] not in by_id]
    if unknown:
        raise UsageError(f"{path}: {len(unknown)} id(s) not in the {data_args.split} split: {', '.join(unknown[:5])}")
    items = [by_id[r["id"]][1] for r in rows]
    fitted_on = "+".join(sorted({by_id[r["id"]][0] for r in rows}))
    test_ids = {e["id"] for e in parts["test"]}
    calibration = fit_calibration(rows, items, fitted_on, test_ids, data.labels)
    calibration["predictions"] = str(path)
    folder = calibration_args.output_dir or str(path.parent)
    save_calibration(folder, calibration)
    raw, fitted, held_out = (calibration[k] for k in ("raw", "calibrated", "cross_validated"))
    logger.info(
        "Calibration on %d %s items, bias %s: macro-F1 %.3f raw, %.3f fitted, %.3f cross-validated; accuracy "
        "%.3f / %.3f / %.3f; wrote %s", len(items), fitted_on, calibration["bias"], raw["macro_f1"],
        fitted["macro_f1"], held_out["macro_f1"], raw["accuracy"], fitted["accuracy"], held_out["accuracy"],
        Path(folder) / CALIBRATION_FILE,
    )  # fmt: skip
    return calibration


if __name__ == "__main__":
    run_cli(lambda argv: main(*parse_args(argv)))  # parsing at the edge: bad input exits 2 in one line
