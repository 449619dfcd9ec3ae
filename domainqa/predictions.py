"""Prediction files: the official PubMedQA JSON ({PMID: label}) and our JSONL with the raw
generations or label scores, one row per item; and the partial files infer.py appends rows to as it goes,
with the protocol that resumes them (the same settings, or refused)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .config import UsageError
from .data import LABELS, DuplicateKeyError, unique_keys
from .io import atomic_write_json, atomic_write_jsonl
from .run_folder import as_json, differences, refuse_mismatch

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


# ------------------------------------------------------------------------------------- partial files

# The settings that change what a row says; a partial file made under others is not resumed. The data
# file counts by its content (data_hash), so a moved copy of it resumes.
PREDICTION_SETTINGS = (
    "model", "trained_model", "model_hash", "adapter_hash", "adapter_commit", "data_hash", "split", "fold",
    "prompt_format", "answer_style", "system_prompt", "eval_split", "mode", "num_beams", "repetition_penalty",
    "max_new_tokens", "labels", "max_length", "dtype",
)  # fmt: skip


def resume_key(settings: dict) -> dict:
    return {name: settings.get(name) for name in PREDICTION_SETTINGS}


def read_partial(path: Path, settings: dict, overwrite: bool = False) -> tuple[list[dict], int]:
    """Rows already predicted under the same settings, and the bytes they fill: a line cut off by a
    kill or a full disk ends them. Rows made under other settings are refused, or with `overwrite`
    dropped, so that one file never holds rows of two runs."""
    rows, length = read_complete_rows(path)
    if not rows or not isinstance(rows[0].get("settings"), dict):
        return [], 0  # nothing yet, or only a cut-off header
    changed = differences(rows[0]["settings"], as_json(settings))
    if changed and not overwrite:
        refuse_mismatch(str(path), changed, "--overwrite_output_dir true")
    if changed or any("id" not in row for row in rows[1:]):
        return [], 0
    return rows[1:], length


def start_partial(partial: Path, settings: dict, overwrite: bool) -> set[str]:
    """Open `partial` for appending: a new file starts with its settings; an existing one under the same
    settings keeps its complete rows. Returns the ids already predicted."""
    done_rows, length = read_partial(partial, settings, overwrite)
    if not done_rows:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"settings": settings}) + "\n", encoding="utf-8")
    else:
        cut_to_complete_rows(partial, length)  # appended rows must not continue a cut-off line
    return {row["id"] for row in done_rows}


def refuse_non_finite_scores(row: dict, where: str) -> None:
    """A label score that is NaN or infinite means a broken model: its "prediction" would be a guess."""
    scores = row.get("label_logprobs") or {}
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in scores.values()):
        raise UsageError(
            f"{where}: the label scores of item {row.get('id')} are not finite ({scores}); the model is broken (a "
            "diverged run or a damaged weight file) and nothing is scored with it"
        )


def append_rows(partial: Path, rows: Iterable[dict], total: int, done: int) -> None:
    """Append each row to `partial` as soon as it exists, with a progress bar over all `total` items."""
    try:
        with partial.open("a", encoding="utf-8") as f, tqdm(total=total, initial=done, unit="ex") as bar:
            for row in rows:
                refuse_non_finite_scores(row, str(partial))
                f.write(json.dumps(row) + "\n")
                f.flush()
                bar.update(1)
    except OSError as e:  # a full disk: name the file (a rerun keeps its complete rows)
        raise OSError(e.errno, e.strerror, str(partial)) from e


# ------------------------------------------------------------------------------------- finished sets


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
            refuse_non_finite_scores(row, f"{path}, line {line_no}")
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
    # infer.py's official file: the rows beside it carry the scores, its metadata the unparsed count.
    rows, meta = path.with_suffix(".jsonl"), prediction_meta(path)
    if rows.is_file():
        read_predictions(rows, None)
    unparsed = meta.get("num_unparsed")
    return _checked_labels(path, {str(k): v for k, v in predictions.items()}, labels), unparsed


def prediction_meta(path: str | Path) -> dict:
    """The .meta.json infer.py wrote beside a prediction file ({} for a file from elsewhere)."""
    path = Path(path)
    stem = path.name.removesuffix(".jsonl").removesuffix(".json")
    try:
        meta = json.loads(path.with_name(stem + ".meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _checked_labels(path: Path, predictions: dict[str, object], labels: Sequence[str] | None) -> dict[str, str]:
    """Every label must be one of the task's: another one would add a class to the macro-F1."""
    for pmid, label in predictions.items():
        if labels is not None and label not in labels:
            raise UsageError(f"{path}: PMID {pmid}: label {label!r} is not one of {', '.join(labels)}")
    return predictions
