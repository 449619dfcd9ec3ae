"""Source items (training data only) and the test items the outputs must not leak."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from domainqa.data import LABELS, PUBMEDQA_ENV, DataError, Example, load_pubmedqa, read_examples, split_pubmedqa
from domainqa.data_spec import CUSTOM_SPLIT, load_parts

from .arguments import AugmentArguments, AugmentError
from .validation import LeakIndex

logger = logging.getLogger(__name__)
PQAL_SIZE = 1000


def task_labels(args: AugmentArguments) -> tuple[str, ...]:
    """The decisions outputs may have: the data set's label set (known once load_sources has run)."""
    return tuple(args.labels) if args.labels else LABELS


def load_sources(args: AugmentArguments) -> tuple[list[Example], LeakIndex, dict]:
    """(training items to augment, index of the test items, facts for the summary).

    A PQA-L file (1,000 items) is split with --split and only its train part is used. Any other dataset
    counts as training data as a whole, but its items that are test items of PQA-L (--pubmedqa_path or
    $PUBMEDQA_PATH) are refused, and that PQA-L test part is also what outputs are checked against. A data
    set of one's own (split custom) gives its train part and its own test part; its label set (declared, or
    read off the data into args.labels) is what the outputs' decisions must be."""
    if args.split == CUSTOM_SPLIT:
        return own_sources(args)
    path = args.dataset_path or os.environ.get(PUBMEDQA_ENV)
    if not path:
        raise AugmentError(f"no dataset: give --dataset_path (a PQA-L file such as ori_pqal.json) or ${PUBMEDQA_ENV}")
    try:
        examples = read_examples(path)
    except DataError as e:
        raise AugmentError(f"cannot use the dataset: {e}") from None
    try:
        if len(examples) == PQAL_SIZE:
            parts = split_pubmedqa(examples, args.split, args.fold)
            candidates, test_items = parts["train"], parts["test"]
            origin = f"train part of the {args.split} split"
        else:
            pqal_path = args.pubmedqa_path or os.environ.get(PUBMEDQA_ENV)
            if not pqal_path:
                raise AugmentError(
                    f"{path} is not PQA-L, so its test part must come from elsewhere for the leak check: give "
                    f"--pubmedqa_path or ${PUBMEDQA_ENV}"
                )
            test_items = split_pubmedqa(load_pubmedqa(pqal_path), args.split, args.fold)["test"]
            candidates = examples
            origin = "whole dataset (not PQA-L)"
    except DataError as e:
        raise AugmentError(f"cannot split the data: {e}") from None
    return checked_sources(args, path, candidates, test_items, origin)


def own_sources(args: AugmentArguments) -> tuple[list[Example], LeakIndex, dict]:
    try:
        data = load_parts(args)
    except DataError as e:
        raise AugmentError(f"cannot use the dataset: {e}") from None
    return checked_sources(args, args.dataset_path, data["train"], data["test"], "train part of your data set")


def checked_sources(
    args: AugmentArguments, path: str, candidates: list[Example], test_items: list[Example], origin: str
) -> tuple[list[Example], LeakIndex, dict]:
    """The candidates that are no test item, at most --max_sources of them."""
    leak_index = LeakIndex(test_items, args.overlap_threshold)
    sources = [e for e in candidates if not leak_index.is_test_item(e)]
    refused = len(candidates) - len(sources)
    if refused:
        logger.warning("refused %d source item(s) that belong to the test split", refused)
    if args.max_sources is not None:
        sources = sources[: args.max_sources]
    if not sources:
        raise AugmentError(f"{path}: no training items left to augment")
    facts = {
        "dataset": str(Path(path)),
        "source_origin": origin,
        "sources_refused_test": refused,
        "labels": list(task_labels(args)),
    }
    return sources, leak_index, facts
