"""PubMedQA-style data: reading any supported file, validating it, and the paper / official splits.

Every example is a plain dict with the fields of `FIELDS`. Files written by `augment/` carry extra
provenance fields, which are kept as they are.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any

from .config import UsageError

LABELS = ("yes", "no", "maybe")
FIELDS = ("id", "question", "context", "long_answer", "final_decision")
PUBMEDQA_ENV = "PUBMEDQA_PATH"
PUBMEDQA_HUB_ID = ("qiaojin/PubMedQA", "pqa_labeled")
SPLITS = ("paper", "official")
NUM_OFFICIAL_FOLDS = 10

Example = dict[str, Any]


class DataError(UsageError):
    """Input data that cannot be used; the message names the file and the row."""


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-case words, without spacing and punctuation: how texts are compared by content."""
    return _WORD.findall(text.lower())


def content_key(example: Example) -> str:
    """Equal for two items whose question and context differ only in case, spacing or punctuation."""
    return " ".join(words(example["question"])) + " || " + " ".join(words(example["context"]))


def _first(row: dict, *keys: str) -> Any:
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    return None


def _context_text(value: Any) -> str | None:
    """Contexts come as a string, a list of paragraphs, or the Hub's {'contexts': [...], ...} dict."""
    if isinstance(value, dict):
        value = value.get("contexts")
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        return " ".join(p.strip() for p in value)
    return None


def normalize_example(row: dict, where: str, default_id: str | None = None) -> Example:
    """Map the official file's, the Hub's and our own field names onto `FIELDS`, and validate."""
    question = _first(row, "question", "QUESTION")
    raw_context = _first(row, "context", "contexts", "CONTEXTS")
    decision = _first(row, "final_decision", "label", "answer")
    example_id = _first(row, "id", "pubid", "pmid", "PMID")
    if example_id is None:
        example_id = default_id
    missing = [
        name
        for name, value in (
            ("id", example_id),
            ("question", question),
            ("context", raw_context),
            ("final_decision", decision),
        )
        if value is None
    ]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: empty question")
    context = _context_text(raw_context)
    if context is None or not context.strip():
        raise DataError(f"{where}: context must be a non-empty string or list of strings")
    label = str(decision).strip().lower()
    if label not in LABELS:
        raise DataError(f"{where}: final_decision {decision!r} is not one of {', '.join(LABELS)}")
    long_answer = _first(row, "long_answer", "LONG_ANSWER") or ""
    if not isinstance(long_answer, str):
        raise DataError(f"{where}: long_answer must be a string")
    example = {k: v for k, v in row.items() if k not in _ALIASES}
    example.update(
        id=str(example_id),
        question=question.strip(),
        context=context.strip(),
        long_answer=long_answer.strip(),
        final_decision=label,
    )
    return example


_ALIASES = {
    "QUESTION", "CONTEXTS", "LABELS", "MESHES", "YEAR", "LONG_ANSWER", "reasoning_required_pred",
    "reasoning_free_pred", "pubid", "pmid", "PMID", "contexts", "label", "answer",
}  # fmt: skip


class DuplicateKeyError(ValueError):
    """A JSON object with a key twice: json.loads would keep the last value without a word."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook for json.loads that refuses a repeated key."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"key {key} appears a second time")
        seen[key] = value
    return seen


def _read_rows(path: Path) -> list[tuple[dict, str | None]]:
    """Rows of a file as (row, id from the file's own keys if it is keyed by id)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
        except DuplicateKeyError as e:
            raise DataError(f"{path}: {e}") from None
        if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
            return [(row, key) for key, row in data.items()]  # the official {pmid: {...}} layout
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if isinstance(data, list):
            return [(row, None) for row in data]
        raise DataError(f"{path}: expected a list of records or an object keyed by id")
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append((json.loads(line), None))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}, line {line_no}: invalid JSON ({e.msg})") from e
        return rows
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return [(row, None) for row in csv.DictReader(f)]
    raise DataError(f"{path}: unsupported file type {suffix!r} (use .json, .jsonl, .csv or a saved datasets folder)")


def read_examples(path: str | os.PathLike) -> list[Example]:
    """Read and validate every row of a JSON/JSONL/CSV file, a saved `datasets` folder, or an
    augmentation output folder (its `data.jsonl`), or a Hub dataset `user/name[@revision][:split]` where no
    such local path exists (domainqa.hub_data). Raises `DataError` naming the file and row."""
    from .hub_data import load_hub_rows, parse_hub_dataset  # it imports this module

    hub = parse_hub_dataset(str(path))
    path = Path(path)
    if hub is not None:
        rows = [(row, None) for row in load_hub_rows(hub)]
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    elif path.is_dir():
        if (path / "data.jsonl").is_file():
            return read_examples(path / "data.jsonl")
        try:
            from datasets import load_from_disk

            dataset = load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - any failure means the folder is not a dataset we can read
            raise DataError(f"{path}: not a saved datasets folder nor an augmentation output ({e})") from e
        if hasattr(dataset, "keys"):  # DatasetDict: use its train split
            dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
        rows = [(row, None) for row in dataset]
    else:
        try:
            rows = _read_rows(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: unreadable ({e})") from e
    if not rows:
        raise DataError(f"{path}: no examples")
    examples = []
    for index, (row, key) in enumerate(rows):
        where = f"{path}, row {index + 1}" + (f" (id {key})" if key else "")
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        examples.append(normalize_example(row, where, default_id=key))
    seen: set[str] = set()
    for index, example in enumerate(examples):
        if example["id"] in seen:
            raise DataError(f"{path}, row {index + 1}: duplicate id {example['id']}")
        seen.add(example["id"])
    return examples


def load_pubmedqa(path: str | None = None) -> list[Example]:
    """PQA-L in file order: from `path`, else $PUBMEDQA_PATH, else the Hub dataset."""
    path = path or os.environ.get(PUBMEDQA_ENV)
    if path:
        return read_examples(path)
    try:
        from datasets import load_dataset

        hub = load_dataset(*PUBMEDQA_HUB_ID, split="train")
    except Exception as e:  # noqa: BLE001 - offline, missing, or blocked: all need the same advice
        raise DataError(
            f"could not load {'/'.join(PUBMEDQA_HUB_ID)} from the Hub ({type(e).__name__}); give the official "
            f"ori_pqal.json with --dataset_path or ${PUBMEDQA_ENV}"
        ) from e
    return [normalize_example(row, f"{PUBMEDQA_HUB_ID[0]}, row {i + 1}") for i, row in enumerate(hub)]


def paper_split(examples: list[Example]) -> dict[str, list[Example]]:
    """The paper's split of PQA-L: first 450 train, next 50 validation, last 500 test, in file order."""
    if len(examples) != 1000:
        raise DataError(f"the paper split needs the 1,000 PQA-L items, got {len(examples)}")
    return {"train": examples[:450], "validation": examples[450:500], "test": examples[500:]}


def _official_partition(ids_by_label: dict[str, list[str]], parts: int) -> list[list[str]]:
    # Same procedure (and random call order) as the official PubMedQA split script: shuffle each
    # label's ids, cut into `parts` chunks of ceil(n/parts), and join label by label.
    chunks = {}
    for label, ids in ids_by_label.items():
        random.shuffle(ids)
        size = math.ceil(len(ids) / parts)
        chunks[label] = [ids[i * size :] if i == parts - 1 else ids[i * size : (i + 1) * size] for i in range(parts)]
    return [sum((chunks[label][i] for label in ids_by_label), []) for i in range(parts)]


def official_split(examples: list[Example], fold: int = 0) -> dict[str, list[Example]]:
    """The official PubMedQA split: 500 test items, 10-fold cross-validation over the other 500.

    Reproduces the official script (seed 0); its test half is exactly the official test PMIDs."""
    if not 0 <= fold < NUM_OFFICIAL_FOLDS:
        raise DataError(f"fold must be in 0..{NUM_OFFICIAL_FOLDS - 1}, got {fold}")
    if len(examples) != 1000:
        raise DataError(f"the official split needs the 1,000 PQA-L items, got {len(examples)}")
    by_id = {e["id"]: e for e in examples}

    def by_label(ids: list[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {label: [] for label in LABELS}
        for i in ids:
            groups[by_id[i]["final_decision"]].append(i)
        return groups

    state = random.getstate()
    try:
        random.seed(0)
        cv_ids, test_ids = _official_partition(by_label(list(by_id)), 2)
        folds = _official_partition(by_label(cv_ids), NUM_OFFICIAL_FOLDS)
    finally:
        random.setstate(state)
    dev = set(folds[fold])
    train_ids = [i for i in cv_ids if i not in dev]
    order = {e["id"]: n for n, e in enumerate(examples)}  # keep file order inside each part
    pick = lambda ids: [by_id[i] for i in sorted(ids, key=order.__getitem__)]  # noqa: E731
    return {"train": pick(train_ids), "validation": pick(dev), "test": pick(test_ids)}


def split_pubmedqa(examples: list[Example], split: str, fold: int = 0) -> dict[str, list[Example]]:
    if split == "paper":
        return paper_split(examples)
    if split == "official":
        return official_split(examples, fold)
    raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def test_leaks(training: list[Example], test: list[Example]) -> dict[str, str]:
    """{training row id: test item id} for the rows that are test items: the same id, a source_id naming
    one, or the same question and context whatever the id (" 19648304", "x19648304")."""
    test_ids = {e["id"].strip() for e in test}
    by_content = {content_key(e): e["id"] for e in test}
    leaked = {}
    for example in training:
        for candidate in (example["id"].strip(), str(example.get("source_id")).strip()):
            if candidate in test_ids:
                leaked[example["id"]] = candidate
                break
        else:
            if content_key(example) in by_content:
                leaked[example["id"]] = by_content[content_key(example)]
    return leaked


def load_task_data(
    dataset_path: str | None = None,
    split: str = "paper",
    fold: int = 0,
    train_data: str | None = None,
) -> dict[str, list[Example]]:
    """Train / validation / test parts for a run. With `train_data`, training uses that file or
    folder instead of the split's train part; it must not contain any test item."""
    parts = split_pubmedqa(load_pubmedqa(dataset_path), split, fold)
    if train_data:
        training = read_examples(train_data)
        leaked = test_leaks(training, parts["test"])
        if leaked:
            raise DataError(
                f"{train_data}: {len(leaked)} training row(s) are, or come from, {split}-split test items: "
                + ", ".join(sorted(set(leaked.values()))[:20])
            )
        parts["train"] = training
    return parts
