"""Prediction files: the official PubMedQA JSON ({PMID: label}) and our JSONL with the raw
generations or label scores, one row per item."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from .config import UsageError
from .data import LABELS, DuplicateKeyError, unique_keys
from .io import atomic_write_json, atomic_write_jsonl

logger = logging.getLogger(__name__)


def write_predictions(stem: Path, rows: list[dict], unparsed_fallback: str) -> dict[str, str]:
    """Write `<stem>.json` (official format) and `<stem>.jsonl`; returns the official mapping.
    Unparseable generations get `unparsed_fallback` in both files, and `parsed: false` in the JSONL."""
    for row in rows:
        row["parsed"] = row["prediction"] is not None
        if not row["parsed"]:
            row["prediction"] = unparsed_fallback
    official = {row["id"]: row["prediction"] for row in rows}
    atomic_write_jsonl(stem.with_suffix(".jsonl"), rows)
    atomic_write_json(stem.with_suffix(".json"), official)
    return official


def read_complete_rows(path: Path) -> tuple[list[dict], int]:
    """The rows of a JSONL file up to the last complete one, and the byte length of that prefix.

    A row is complete when its line ends with a newline and holds a JSON object: a kill or a full disk
    can leave a cut-off line, and anything after the first bad line is not trusted either."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    rows, end = [], 0
    while (newline := data.find(b"\n", end)) != -1:
        try:
            row = json.loads(data[end:newline])
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            break
        if not isinstance(row, dict):
            break
        rows.append(row)
        end = newline + 1
    return rows, end


def cut_to_complete_rows(path: Path, length: int) -> None:
    """Drop whatever follows the complete rows, so that appended rows start on a line of their own."""
    size = path.stat().st_size
    if size > length:
        logger.warning("%s: dropping %d byte(s) after the last complete row", path, size - length)
        with path.open("r+b") as f:
            f.truncate(length)


def read_predictions(path: str | Path, labels: Sequence[str] | None = LABELS) -> tuple[dict[str, str], int | None]:
    """Predictions keyed by PMID from either format, and the number of unparseable generations
    (None when the file cannot tell, as with the official format). Labels outside `labels` are an error
    (None: not checked here, for a label set read off the data later)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read predictions ({e.strerror})") from e
    if path.suffix == ".jsonl":
        predictions, unparsed = {}, 0
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pmid, parsed = str(row["id"]), row.get("parsed", True)
                label = row["prediction"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UsageError(f"{path}, line {line_no}: not a prediction row with id and prediction ({e})") from e
            if pmid in predictions:  # which of two answers counts would be a guess
                raise UsageError(f"{path}, line {line_no}: id {pmid} appears a second time")
            predictions[pmid] = label
            unparsed += not parsed
        return _checked_labels(path, predictions, labels), unparsed
    try:
        predictions = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from e
    except DuplicateKeyError as e:
        raise UsageError(f"{path}: {e}") from e
    if not isinstance(predictions, dict):
        raise UsageError(f"{path}: expected the official format, an object {{PMID: label}}")
    return _checked_labels(path, {str(k): v for k, v in predictions.items()}, labels), None


def _checked_labels(path: Path, predictions: dict[str, object], labels: Sequence[str] | None) -> dict[str, str]:
    """Every label must be one of the task's: another one would add a class to the macro-F1."""
    for pmid, label in predictions.items():
        if labels is not None and label not in labels:
            raise UsageError(f"{path}: PMID {pmid}: label {label!r} is not one of {', '.join(labels)}")
    return predictions
