"""Training data from the Hugging Face Hub: `user/name`, `user/name:split`, `user/name@revision` or
`user/name@revision:split` names a dataset repo, read with `datasets.load_dataset` (any format it reads:
JSON lines, CSV, Parquet, ...). Without a split, the repo's `train` split is used, or its only split.

A value is taken as a Hub id only where it cannot be a local path: nothing of that name exists, it has the
user/name form without a data-file suffix, and its first part is not a local folder. So a missing
`outputs/run` or `data/train.csv` stays a "no such file" error instead of becoming a Hub query."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .checks import looks_like_path
from .data import DataError
from .hub_access import REPO_REVISION, HubUnreachable, check_hub_dataset

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
    from datasets import DatasetDict, load_dataset

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
