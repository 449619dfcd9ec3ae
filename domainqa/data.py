"""PubMedQA-style data: reading any supported file, validating it, and the paper / official splits.

Every example is a plain dict with the fields of `FIELDS`. Files written by `augment/` carry extra
provenance fields, which are kept as they are. A data set of another task names its own columns
(`columns`: field -> column) and its own closed label set (`labels`); domainqa/data_spec.py builds it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import looks_like_path
from .config import UsageError
from .hub_access import REPO_REVISION, HubUnreachable, check_hub_dataset

LABELS = ("yes", "no", "maybe")
FIELDS = ("id", "question", "context", "long_answer", "final_decision")
TEACHER_PROBS = "teacher_probs"  # the writer's {label: probability}, recorded by augment (docs/augment.md)
PUBMEDQA_ENV = "PUBMEDQA_PATH"
PUBMEDQA_HUB_ID = ("qiaojin/PubMedQA", "pqa_labeled")
SPLITS = ("paper", "official")
NUM_OFFICIAL_FOLDS = 10

Example = dict[str, Any]

# The longest text field a CSV file may hold (Python's csv module stops at 131,072 characters by default); a
# longer one is refused in one line. Contexts are fitted to the model's length later, so a long one is fine.
MAX_FIELD_CHARS = 2**24
csv.field_size_limit(MAX_FIELD_CHARS)


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


# The names each field goes by: the official file's, the Hub's and our own. Where a data set names its own
# column for a field (`columns`), only that column and our own name (the field's) count: augment/ outputs
# read under the same mapping, and a misnamed column is an error, not another column of a similar name.
FIELD_NAMES = {
    "id": ("id", "pubid", "pmid", "PMID"),
    "question": ("question", "QUESTION"),
    "context": ("context", "contexts", "CONTEXTS"),
    "long_answer": ("long_answer", "LONG_ANSWER"),
    "final_decision": ("final_decision", "label", "answer"),
}


def field_keys(field: str, columns: Mapping[str, str | None] | None) -> tuple[str, ...]:
    """The keys a row may hold `field` under, the data set's own column first."""
    own = (columns or {}).get(field)
    return (own, field) if own else FIELD_NAMES[field]


def canonical_label(value: Any, labels: Sequence[str] | None) -> str | None:
    """`value` as spelled in `labels` (compared without case or surrounding space), None if it is not one;
    without a label set, the value itself (stripped)."""
    text = str(value).strip()
    if labels is None:
        return text or None
    return {label.lower(): label for label in labels}.get(text.lower())


def normalize_example(
    row: dict,
    where: str,
    default_id: str | None = None,
    labels: Sequence[str] | None = LABELS,
    columns: Mapping[str, str | None] | None = None,
) -> Example:
    """Map the official file's, the Hub's, our own or the data set's own (`columns`) field names onto
    `FIELDS`, and validate; the label must be one of `labels` (None: any non-empty value)."""
    question = _first(row, *field_keys("question", columns))
    raw_context = _first(row, *field_keys("context", columns))
    decision = _first(row, *field_keys("final_decision", columns))
    example_id = _first(row, *field_keys("id", columns))
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
    if not isinstance(question, str):
        raise DataError(f"{where}: the question is not text ({type(question).__name__} {question!r})")
    if not question.strip():
        raise DataError(f"{where}: empty question")
    if not str(example_id).strip():
        raise DataError(f"{where}: empty id")
    context = _context_text(raw_context)
    if context is None or not context.strip():
        raise DataError(f"{where}: context must be a non-empty string or list of strings")
    label = canonical_label(decision, labels)
    if label is None:
        name = (columns or {}).get("final_decision") or "final_decision"
        if labels is None:
            raise DataError(f"{where}: empty {name}")
        raise DataError(f"{where}: {name} {decision!r} is not one of {', '.join(labels)}")
    long_answer = _first(row, *field_keys("long_answer", columns)) or ""
    if not isinstance(long_answer, str):
        raise DataError(f"{where}: long_answer must be a string")
    if row.get(TEACHER_PROBS) is not None:
        row = {**row, TEACHER_PROBS: teacher_distribution(row[TEACHER_PROBS], labels, where)}
    own_columns = {c for c in (columns or {}).values() if c}
    example = {k: v for k, v in row.items() if k not in _ALIASES and k not in own_columns}
    example.update(
        id=str(example_id),
        question=question.strip(),
        context=context.strip(),
        long_answer=long_answer.strip(),
        final_decision=label,
    )
    return example


def teacher_distribution(value: Any, labels: Sequence[str] | None, where: str) -> dict[str, float]:
    """A teacher's {label: probability} checked (one probability for each label of the set: numbers, finite, not
    negative, not all zero) and renormalised to sum to 1."""
    probabilities = list(value.values()) if isinstance(value, dict) else []
    if not probabilities or not all(_probability(p) for p in probabilities) or not sum(probabilities):
        raise DataError(f"{where}: {TEACHER_PROBS} must map each label to a probability, got {value!r}")
    canonical = {canonical_label(label, labels): p for label, p in value.items()}
    if None in canonical or len(canonical) != len(value) or (labels is not None and len(canonical) != len(labels)):
        wanted = ", ".join(labels) if labels is not None else "the data set's labels"
        raise DataError(f"{where}: {TEACHER_PROBS} has labels {', '.join(value)}; expected {wanted}")
    total = sum(canonical.values())
    return {label: p / total for label, p in canonical.items()}


def _probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


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


# ------------------------------------------------------------------------------------ Hub datasets

# user/name, then @revision (a branch, tag, commit or refs/pr/N), then :split
_HUB_ID = re.compile(REPO_REVISION + r"(?::(?P<split>[\w.-]+))?")
_DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".tsv")


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    revision: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "") + (f":{self.split}" if self.split else "")


def parse_hub_dataset(value: str) -> HubDataset | None:
    """The Hub dataset that `value` names, or None where it is, or can only be, a local path."""
    match = _HUB_ID.fullmatch(value)
    if match is None or Path(value).exists():
        return None
    repo = match["repo"]
    if looks_like_path(repo) or repo.lower().endswith(_DATA_SUFFIXES):
        return None
    return HubDataset(repo, match["revision"], match["split"])


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__


def load_hub_rows(dataset: HubDataset) -> list[dict]:
    """Every row of one split of a Hub dataset; DataError in one line when it cannot be loaded."""
    from datasets import DatasetDict, load_dataset  # slow to import: only for a Hub dataset

    try:
        check_hub_dataset(dataset.repo_id, dataset.revision)  # one line now where the loader would retry for minutes
    except HubUnreachable as e:
        raise DataError(str(e)) from None
    try:
        loaded = load_dataset(dataset.repo_id, revision=dataset.revision, split=dataset.split)
    except Exception as e:  # noqa: BLE001 - not found, no such revision or split, offline: all end here
        raise DataError(f"{dataset}: no such file or folder, nor a Hub dataset that loads ({_one_line(e)})") from e
    if isinstance(loaded, DatasetDict):
        if "train" in loaded:
            loaded = loaded["train"]
        elif len(loaded) == 1:
            loaded = next(iter(loaded.values()))
        else:
            names = ", ".join(loaded)
            raise DataError(f"{dataset}: the Hub dataset has the splits {names}; name one as {dataset}:SPLIT")
    return list(loaded)


# ------------------------------------------------------------------------------------ local files


def _read_rows(path: Path) -> list[tuple[dict, str | None]]:
    """Rows of a file as (row, id from the file's own keys if it is keyed by id)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=unique_keys)
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
        with path.open(encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append((json.loads(line), None))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}, line {line_no}: invalid JSON ({e.msg})") from e
        return rows
    if suffix == ".csv":
        # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name.
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            try:
                return [(row, None) for row in reader]
            except csv.Error as e:  # a field over MAX_FIELD_CHARS, or a broken quote
                raise DataError(f"{path}, line {reader.line_num}: {e}") from None
    if suffix == ".parquet":
        import pyarrow.parquet

        try:
            return [(row, None) for row in pyarrow.parquet.read_table(path).to_pylist()]
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a file that is not Parquet vary by version
            raise DataError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:200]})") from e
    raise DataError(
        f"{path}: unsupported file type {suffix!r} (use .json, .jsonl, .csv, .parquet or a saved datasets folder)"
    )


def check_columns(path: Path, row: dict, columns: Mapping[str, str | None]) -> None:
    """Every field a row needs has a column in the file (the first row's keys): one line naming the
    file, the missing column and the columns there are."""
    for field, argument in (
        ("question", "question_column"),
        ("context", "context_column"),
        ("final_decision", "label_column"),
        ("long_answer", "long_answer_column"),
        ("id", "id_column"),
    ):
        optional = field in ("long_answer", "id") and not columns.get(field)
        if optional or any(key in row for key in field_keys(field, columns)):
            continue
        wanted = columns.get(field) or field
        raise DataError(f"{path}: no column {wanted!r} ({argument}); its columns are {', '.join(map(str, row))}")


def read_examples(
    path: str | os.PathLike,
    labels: Sequence[str] | None = LABELS,
    columns: Mapping[str, str | None] | None = None,
) -> list[Example]:
    """Read and validate every row of a JSON/JSONL/CSV/Parquet file, a saved `datasets` folder, or an
    augmentation output folder (its `data.jsonl`), or a Hub dataset `user/name[@revision][:split]` where no
    such local path exists. Raises `DataError` naming the file and row.

    `columns` (a data set of its own, domainqa/data_spec.py) maps fields to the file's columns: every needed
    column must exist, and rows without an id column are numbered `<file stem>-<row>`. Labels must be one
    of `labels` (None: any non-empty value)."""
    hub = parse_hub_dataset(str(path))
    path = Path(path)
    if hub is not None:
        rows = [(row, None) for row in load_hub_rows(hub)]
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    elif path.is_dir():
        if (path / "data.jsonl").is_file():
            return read_examples(path / "data.jsonl", labels, columns)
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
    if columns is not None and isinstance(rows[0][0], dict):
        check_columns(path, rows[0][0], columns)
    examples = []
    for index, (row, key) in enumerate(rows):
        where = f"{path}, row {index + 1}" + (f" (id {key})" if key else "")
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        if key is None and columns is not None and not columns.get("id"):
            key = f"{path.stem}-{index + 1}"  # used only where the row has no id of its own
        examples.append(normalize_example(row, where, default_id=key, labels=labels, columns=columns))
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
    check_hub_dataset(  # one line now, where the loader would retry for minutes
        PUBMEDQA_HUB_ID[0], local_hint=f"give the official ori_pqal.json with --dataset_path or ${PUBMEDQA_ENV}"
    )
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


def refuse_leaks(where: str, training: list[Example], test: list[Example], part: str) -> None:
    """Training rows that are test items (same id, a source_id naming one, or the same question and
    context) stop the run: a score on items the model trained on is no result."""
    leaked = test_leaks(training, test)
    if leaked:
        raise DataError(
            f"{where}: {len(leaked)} training row(s) are, or come from, {part} items: "
            + ", ".join(sorted(set(leaked.values()))[:20])
        )


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
        refuse_leaks(train_data, training, parts["test"], f"{split}-split test")
        parts["train"] = training
    return parts
