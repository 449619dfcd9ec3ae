"""Prediction files: the official PubMedQA JSON ({PMID: label}) and our JSONL with the raw
generations or label scores, one row per item."""

from __future__ import annotations

import json
from pathlib import Path

from .config import UsageError
from .io import atomic_write_json, atomic_write_jsonl


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


def read_predictions(path: str | Path) -> tuple[dict[str, str], int | None]:
    """Predictions keyed by PMID from either format, and the number of unparseable generations
    (None when the file cannot tell, as with the official format)."""
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
                predictions[pmid] = row["prediction"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UsageError(f"{path}, line {line_no}: not a prediction row with id and prediction ({e})") from e
            unparsed += not parsed
        return predictions, unparsed
    try:
        predictions = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from e
    if not isinstance(predictions, dict):
        raise UsageError(f"{path}: expected the official format, an object {{PMID: label}}")
    return {str(k): v for k, v in predictions.items()}, None
