"""The data set of a run: PubMedQA with its paper or official split (the default), or a data set of one's own
(`split: custom`) named by a spec: a file or Hub dataset, its columns, its closed label set, and where its
test and validation items come from.

A data set of its own takes its test (and validation) items from a file or Hub split given for them, else
holds them out of `dataset_path` by a seeded shuffle; the ids of every part are written to the run folder
(`data_split.json`). Its label set is declared (`labels: [yes, no]`) or read off the training rows; every
stage (prompts, label scoring, metrics, calibration, the classifier head, augmentation) follows it, and
run_config.yaml records it so that infer.py and evaluate.py use the same one.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from .config import UsageError
from .data import LABELS, NUM_OFFICIAL_FOLDS, SPLITS, DataError, Example, load_task_data, read_examples, refuse_leaks

CUSTOM_SPLIT = "custom"
ALL_SPLITS = (*SPLITS, CUSTOM_SPLIT)
PARTS = ("train", "validation", "test")
DEFAULT_TEST_SIZE = 0.2
DEFAULT_VALIDATION_SIZE = 0.1
DEFAULT_SPLIT_SEED = 0
# An inferred label set larger than this is a free-text column, not labels.
MAX_INFERRED_LABELS = 20
# The recipe keys of a data set of one's own, by the field each maps.
COLUMN_KEYS = {
    "question": "question_column",
    "context": "context_column",
    "long_answer": "long_answer_column",
    "final_decision": "label_column",
    "id": "id_column",
}
SPEC_KEYS = (*COLUMN_KEYS.values(), "labels", "test_data", "validation_data", "test_size", "validation_size",
             "split_seed")  # fmt: skip


# None (unset) is the default of every spec key: runs made before these keys existed keep their fingerprint.
@dataclass
class DataSpec:
    """Which data a run uses: PubMedQA's PQA-L (split paper or official), or a data set of one's own
    (split custom) with its columns, label set and parts."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "PQA-L file (official ori_pqal.json; default $PUBMEDQA_PATH, else the Hub dataset), or with "
            "split custom your data: a .json/.jsonl/.csv/.parquet file, a saved datasets folder or a Hub "
            "dataset user/name[@revision][:split]."
        },
    )
    split: Literal["paper", "official", "custom"] = field(
        default="paper",
        metadata={"help": "paper or official (PQA-L's splits), or custom: your data set (docs/your-own-data.md)."},
    )
    fold: int = field(default=0, metadata={"help": "Official split: cross-validation fold 0..9 for train/validation."})
    question_column: str | None = field(default=None, metadata={"help": "split custom: question column (question)."})
    context_column: str | None = field(default=None, metadata={"help": "split custom: context column (context)."})
    long_answer_column: str | None = field(
        default=None, metadata={"help": "split custom: optional long answer column (long_answer)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "split custom: label column (final_decision, label or answer)."}
    )
    id_column: str | None = field(
        default=None, metadata={"help": "split custom: id column (id); without one, rows are numbered <file>-<row>."}
    )
    labels: list[str] | None = field(
        default=None,
        metadata={
            "help": 'split custom: the closed label set, e.g. yes no (in a recipe: ["yes", "no"]); unset: '
            "every label of the training rows. PQA-L: yes no maybe."
        },
    )
    test_data: str | None = field(
        default=None,
        metadata={"help": "split custom: file or Hub dataset (user/name:test) of the test items; unset: test_size."},
    )
    validation_data: str | None = field(
        default=None,
        metadata={"help": "split custom: file or Hub dataset of the validation items; unset: validation_size."},
    )
    test_size: float | None = field(
        default=None,
        metadata={"help": f"split custom without test_data: share (below 1) or count held out (unset: "
                          f"{DEFAULT_TEST_SIZE})."},
    )  # fmt: skip
    validation_size: float | None = field(
        default=None,
        metadata={"help": f"split custom without validation_data: share or count of the rest held out (unset: "
                          f"{DEFAULT_VALIDATION_SIZE})."},
    )  # fmt: skip
    split_seed: int | None = field(
        default=None, metadata={"help": f"split custom: seed of the held-out parts (unset: {DEFAULT_SPLIT_SEED})."}
    )

    def columns(self) -> dict[str, str | None]:
        """{field: the data set's column for it, or None}."""
        return {name: getattr(self, key) for name, key in COLUMN_KEYS.items()}

    def __post_init__(self) -> None:
        self.check_spec()

    def check_spec(self) -> None:
        """ValueError (one line) for a spec that cannot be used, before any data loads: the one check of it."""
        if self.split not in ALL_SPLITS:
            raise ValueError(f"split must be one of {', '.join(ALL_SPLITS)}, got {self.split!r}")
        if not 0 <= self.fold < NUM_OFFICIAL_FOLDS:
            raise ValueError(f"fold must be in 0..{NUM_OFFICIAL_FOLDS - 1}, got {self.fold}")
        given = [key for key in SPEC_KEYS if getattr(self, key) is not None]
        if self.split != CUSTOM_SPLIT and given and not (given == ["labels"] and self.labels == list(LABELS)):
            raise ValueError(f"{given[0]} describes your own data set: add split: custom (now split {self.split})")
        if self.labels is not None:
            self.labels = checked_labels(self.labels)
        for name in ("test_size", "validation_size"):
            size = getattr(self, name)
            if size is not None and (size <= 0 or size >= 1 and size != int(size)):
                raise ValueError(f"{name} must be a share in (0, 1) or a whole count, got {size}")


def checked_labels(labels: list) -> list[str]:
    """A declared label set: two or more distinct strings. YAML 1.1 reads yes/no as booleans; the recipe
    loader does not, but a value given as true/false still arrives as one."""
    if not isinstance(labels, (list, tuple)):
        raise ValueError(f"labels must be a list such as [yes, no], got {labels!r}")
    if any(isinstance(label, bool) for label in labels):
        raise ValueError(f'labels must be strings; write them in quotes (labels: ["yes", "no"]), got {labels}')
    names = [str(label).strip() for label in labels]
    if len(names) < 2 or "" in names or len({n.lower() for n in names}) < len(names):
        raise ValueError(f"labels must be two or more distinct non-empty labels, got {labels}")
    return names


@dataclass
class DataParts:
    """The parts of a run's data and its label set; `seeded` holds how held-out parts were made."""

    parts: dict[str, list[Example]]
    labels: tuple[str, ...]
    seeded: dict | None = None

    def __getitem__(self, part: str) -> list[Example]:
        return self.parts[part]


def label_order(label: str) -> tuple[int, str]:
    """PubMedQA's labels in its order (yes before no), then the others alphabetically."""
    return (LABELS.index(label) if label in LABELS else len(LABELS), label)


def infer_labels(examples: list[Example], where: str) -> tuple[str, ...]:
    counts = Counter(e["final_decision"] for e in examples)
    if len(counts) < 2:
        raise DataError(f"{where}: the labels hold {len(counts)} value(s) ({', '.join(counts)}); a task needs two")
    if len(counts) > MAX_INFERRED_LABELS:
        raise DataError(
            f"{where}: the label column holds {len(counts)} different values; check label_column or declare labels"
        )
    by_case = Counter(label.lower() for label in counts)
    clash = [label for label in counts if by_case[label.lower()] > 1]
    if clash:
        raise DataError(f"{where}: labels {', '.join(sorted(clash))} differ only in case; declare labels")
    return tuple(sorted(counts, key=label_order))


def held_out(items: list[Example], size: float, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """(rest, held out): `size` items (a share below 1, else a count) chosen by `rng`, file order kept."""
    count = round(size * len(items)) if size < 1 else int(size)
    chosen = set(rng.sample(range(len(items)), min(count, len(items))))
    return [e for i, e in enumerate(items) if i not in chosen], [e for i, e in enumerate(items) if i in chosen]


def load_parts(spec: DataSpec, train_data: str | None = None) -> DataParts:
    """The run's data: PQA-L's split, or the data set of `spec` (split custom). An inferred label set is
    written into `spec.labels`, so that run_config.yaml and the fingerprint record it.

    Every problem is a DataError in one line naming the file (and row): a missing column, a label outside
    the set, an empty part, a test item among the training or validation items."""
    if spec.split != CUSTOM_SPLIT:
        return DataParts(load_task_data(spec.dataset_path, spec.split, spec.fold, train_data), LABELS)
    data = custom_parts(spec)
    spec.labels = list(data.labels)
    if train_data:
        training = read_examples(train_data, data.labels, spec.columns())
        refuse_leaks(train_data, training, data.parts["test"], "test")
        data.parts["train"] = training
    return data


def custom_parts(spec: DataSpec) -> DataParts:
    if not spec.dataset_path:
        raise DataError("split custom needs dataset_path: your data file or Hub dataset")
    columns = spec.columns()
    train = read_examples(spec.dataset_path, spec.labels, columns)
    labels = tuple(spec.labels) if spec.labels else infer_labels(train, spec.dataset_path)
    given = {part: read_examples(path, labels, columns) for part, path in
             (("test", spec.test_data), ("validation", spec.validation_data)) if path}  # fmt: skip
    seed = DEFAULT_SPLIT_SEED if spec.split_seed is None else spec.split_seed
    rng, seeded = random.Random(seed), None
    parts = {"train": train}
    for part, size, default in (("test", spec.test_size, DEFAULT_TEST_SIZE),
                                ("validation", spec.validation_size, DEFAULT_VALIDATION_SIZE)):  # fmt: skip
        if part in given:
            parts[part] = given[part]
            continue
        size = default if size is None else size
        rest, parts[part] = held_out(parts["train"], size, rng)
        if not rest or not parts[part]:
            empty = "train" if not rest else part
            raise DataError(f"{spec.dataset_path}: the {empty} part is empty ({part}_size {size:g} of "
                            f"{len(parts['train'])} items)")  # fmt: skip
        parts["train"], seeded = rest, {"split_seed": seed}
    refuse_leaks(spec.dataset_path, parts["train"] + parts["validation"], parts["test"], "test")
    return DataParts({part: parts[part] for part in PARTS}, labels, seeded)


def known_labels(spec: DataSpec) -> tuple[str, ...] | None:
    """The label set as far as it is known before any data loads (None: it is read off the data)."""
    if spec.split != CUSTOM_SPLIT:
        return LABELS
    return tuple(spec.labels) if spec.labels else None


def fallback_label(value: str | None, labels: tuple[str, ...]) -> str:
    """The label an unparseable generation is written as: `value`, else maybe where the set has it, else
    its first label."""
    if value is None:
        return "maybe" if "maybe" in labels else labels[0]
    if value not in labels:
        raise UsageError(f"invalid argument: --unparsed_fallback: invalid choice: {value!r} (choose from "
                         f"{', '.join(labels)})")  # fmt: skip
    return value
