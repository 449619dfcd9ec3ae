"""Source items (training data only) and the test items the outputs must not leak."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from domainqa.data import LABELS, PUBMEDQA_ENV, DataError, Example, load_pubmedqa, read_examples, split_pubmedqa, words
from domainqa.data_spec import CUSTOM_SPLIT, load_parts

from .arguments import AugmentArguments, AugmentError
from .prompts import MAX_CHARS, MIN_CHARS, QUESTION_MAX_CHARS, Shape
from .validation import LeakIndex

logger = logging.getLogger(__name__)
PQAL_SIZE = 1000
# A data set of one's own: the schema lets an answer's string be this much longer than the longest of its kind in
# the training part (rounded up to a multiple of BOUND_STEP characters), and the context this much longer in words.
HEADROOM = 1.25
BOUND_STEP = 100
PUBMEDQA_CONTEXT_WORDS = 800  # the context word limit for PubMedQA (its longest labelled context has 544 words)
# Output columns that hold provenance, which a data set's own column may not be named.
PROVENANCE = ("source_id", "strategy", "model", "prompt_version")


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
    """The candidates that are no test item, at most --max_sources of them. The shape of the prompts and
    schema, and the context's word limit, come from all of them (not only the first --max_sources: a run
    that grows --max_sources keeps its requests, and so its cached answers)."""
    leak_index = LeakIndex(test_items, args.overlap_threshold)
    training = [e for e in candidates if not leak_index.is_test_item(e)]
    refused = len(candidates) - len(training)
    if refused:
        logger.warning("refused %d source item(s) that belong to the test split", refused)
    sources = training[: args.max_sources] if args.max_sources is not None else training
    if not sources:
        raise AugmentError(f"{path}: no training items left to augment")
    shape = data_shape(args, training)
    if args.max_context_words is None:
        args.max_context_words = context_word_limit(args, training)
    facts = {
        "dataset": str(Path(path)),
        "source_origin": origin,
        "sources_refused_test": refused,
        "labels": list(task_labels(args)),
        "columns": output_columns(args, shape),
        "shape": shape.as_dict(),
    }
    return sources, leak_index, facts


def bound(longest: int) -> int:
    """A string bound with headroom over the longest such string of the data set."""
    return math.ceil(longest * HEADROOM / BOUND_STEP) * BOUND_STEP


def data_shape(args: AugmentArguments, training: list[Example]) -> Shape:
    """What the prompts and the answer's schema ask for. PubMedQA (split paper or official): its wording and
    bounds, as every earlier run had them (a data set read as PubMedQA that has no long answers gets the generic
    wording with PubMedQA's bounds). A data set of one's own (split custom): the generic wording, a long
    answer only where its items have one, each string bounded by the longest of its kind in the training part
    with 25% headroom (at least PubMedQA's bound, except the context's, which follows the data alone), the
    shortest no longer than the data set's own shortest, and v3's one-question pattern only where every
    training question is one question mark-ended question that fits it. --max_context_chars sets the
    context's bound for both."""
    long_answer = any(e["long_answer"].strip() for e in training)
    if args.split != CUSTOM_SPLIT:  # PubMedQA's words name a long answer: without one, the generic words
        shape = Shape(generic=not long_answer, long_answer=long_answer)
    else:
        fields = ("question", "context", "long_answer") if long_answer else ("question", "context")
        lengths = {f: [len(e[f]) for e in training if e[f].strip()] for f in fields}
        most = {f: bound(max(lengths[f])) for f in fields}
        max_chars = {f: max(most[f], MAX_CHARS[f]) for f in fields} | {"context": most["context"]}
        min_chars = {f: max(1, min(MIN_CHARS[f], min(lengths[f]))) for f in fields}
        pattern = all(e["question"].rstrip().endswith("?") and e["question"].count("?") == 1 for e in training)
        pattern = pattern and max(lengths["question"]) <= QUESTION_MAX_CHARS and min_chars["question"] >= 2
        shape = Shape(True, long_answer, max_chars, min_chars, pattern)
    if args.max_context_chars is not None:
        if args.max_context_chars < shape.min_chars["context"]:
            raise AugmentError(
                f"max_context_chars {args.max_context_chars} is below the shortest context the schema asks for "
                f"({shape.min_chars['context']} characters)"
            )
        shape = Shape(
            shape.generic, shape.long_answer, {**shape.max_chars, "context": args.max_context_chars},
            shape.min_chars, shape.question_pattern,
        )  # fmt: skip
    return shape


def context_word_limit(args: AugmentArguments, training: list[Example]) -> int:
    """The longest context in words an output may have (--max_context_words unset): 800 for PubMedQA, for a
    data set of one's own its longest training context with 25% headroom (at least 800)."""
    if args.split != CUSTOM_SPLIT:
        return PUBMEDQA_CONTEXT_WORDS
    return max(PUBMEDQA_CONTEXT_WORDS, math.ceil(max(len(words(e["context"])) for e in training) * HEADROOM))


def output_columns(args: AugmentArguments, shape: Shape) -> dict[str, str]:
    """The column each field of an output row is written under: the data set's own names (split custom), so
    that the recipe's data block reads the output back, else PubMedQA's. No long answer where the data set
    has none."""
    names = {field: column or field for field, column in args.columns().items()}
    if not shape.long_answer:
        names.pop("long_answer")
    clash = sorted(set(names.values()) & set(PROVENANCE))
    if clash:
        raise AugmentError(f"the column name(s) {', '.join(clash)} are the outputs' provenance columns; rename them")
    return names
