"""Checks on every generated example: fields, decision, lengths, a rewrite's share of its source's context, question
form, copies, invented numbers, repetition, duplicates, test leaks."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from domainqa.data import LABELS, Example, content_key, words

# Two outputs that differ only in case, spacing or punctuation are the same example.
fingerprint = content_key


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: str, b: str, n: int = 3) -> float:
    x, y = ngrams(a, n), ngrams(b, n)
    return len(x & y) / len(x | y) if x and y else float(x == y)


class LeakIndex:
    """N-gram index of the test items: the share of an output's n-grams found in one test item.

    Questions are short, so they use word trigrams; contexts use 8-grams, long enough that shared
    biomedical phrases do not count but a paraphrase keeping whole sentences does."""

    QUESTION_N = 3
    CONTEXT_N = 8

    def __init__(self, test_items: Iterable[Example], threshold: float):
        self.threshold = threshold
        self.ids: set[str] = set()
        self.questions: set[str] = set()
        self._index: dict[str, dict[tuple, set[int]]] = {"question": defaultdict(set), "context": defaultdict(set)}
        for number, item in enumerate(test_items):
            self.ids.add(item["id"])
            self.questions.add(" ".join(words(item["question"])))
            for field, n in (("question", self.QUESTION_N), ("context", self.CONTEXT_N)):
                for gram in ngrams(item[field], n):
                    self._index[field][gram].add(number)

    def is_test_item(self, example: Example) -> bool:
        return example["id"] in self.ids or " ".join(words(example["question"])) in self.questions

    def overlap(self, field: str, text: str) -> float:
        grams = ngrams(text, self.QUESTION_N if field == "question" else self.CONTEXT_N)
        if not grams:
            return 0.0
        hits: dict[int, int] = defaultdict(int)
        for gram in grams:
            for number in self._index[field].get(gram, ()):
                hits[number] += 1
        return max(hits.values(), default=0) / len(grams)

    def leak(self, example: Example) -> str | None:
        for field in ("question", "context"):
            share = self.overlap(field, example[field])
            if share > self.threshold:
                return f"{field} overlaps a test item ({share:.0%} of its n-grams)"
        return None


TEXT_FIELDS = ("question", "context", "long_answer")


@dataclass
class Limits:
    min_words: int = 3
    max_question_words: int = 80
    max_context_words: int = 800
    max_answer_words: int = 300
    copy_threshold: float = 0.9
    check_numbers: bool = True
    max_repeat_share: float = 0.25
    min_context_ratio: float = 0.6  # a rewrite's context keeps at least this share of its source's words
    long_answer: bool = True  # the data set has long answers (else outputs have none, and none is checked)

    @property
    def fields(self) -> tuple[str, ...]:
        return TEXT_FIELDS if self.long_answer else TEXT_FIELDS[:2]


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers(text: str) -> set[str]:
    """The numbers in `text`, thousands separators removed; 0..10 left out (often spelled as words)."""
    found = {m.group().replace(",", "") for m in _NUMBER.finditer(text)}
    return {n for n in found if not (n.isdigit() and int(n) <= 10)}


def invented_numbers(output: dict, source: Example, fields: Sequence[str] = TEXT_FIELDS) -> set[str]:
    """Numbers in the output that its source item never states: a rewrite keeps every number, and a new
    pair may only use the abstract's; a small model makes figures up (checked by hand on SmolLM2 rewrites)."""
    stated = numbers(" ".join(source.get(f) or "" for f in TEXT_FIELDS))
    written = numbers(" ".join(output.get(f) or "" for f in fields))
    return written - stated


def context_share(output: dict, source: Example) -> float:
    """The rewritten context's length in words as a share of its source's."""
    return len(words(output["context"])) / max(1, len(words(source["context"])))


def check_fields(
    output: dict, kind: str, source: Example, limits: Limits, labels: Sequence[str] = LABELS
) -> tuple[str, str] | None:
    """(reason, detail) if `output` cannot be used, else None. Checks that need no other output; the
    decision must be one of `labels`; a long answer is checked only where the data set has them
    (`limits.long_answer`)."""
    fields = limits.fields
    missing = [f for f in fields if not output.get(f)]
    if missing:
        return "missing_field", ", ".join(missing)
    decision = output.get("final_decision")
    if decision not in labels:
        return "bad_decision", f"final_decision {output.get('final_decision_raw', decision)!r}"
    if kind == "rewrite" and decision != source["final_decision"]:
        return "decision_changed", f"{source['final_decision']} -> {decision}"
    most = {"question": limits.max_question_words, "context": limits.max_context_words}
    most["long_answer"] = limits.max_answer_words
    for field in fields:
        count = len(words(output[field]))
        if count < limits.min_words or count > most[field]:
            return "length", f"{field} has {count} words (allowed {limits.min_words}..{most[field]})"
    if kind == "rewrite" and context_share(output, source) < limits.min_context_ratio:
        kept, whole = len(words(output["context"])), len(words(source["context"]))
        return (
            "context_shortened",
            f"the context keeps {kept} of its source's {whole} words ({kept / whole:.0%}; at least "
            f"{limits.min_context_ratio:.0%} required)",
        )
    if source["question"].rstrip().endswith("?") and not output["question"].rstrip().endswith("?"):
        return "not_a_question", "the source asks a question; the output's question is a statement"
    if is_copy(output, kind, source, limits.copy_threshold, fields):
        return "copy_of_source", "too close to its source item"
    invented = invented_numbers(output, source, fields) if limits.check_numbers else set()
    if invented:
        return "invented_number", "not in the source: " + ", ".join(sorted(invented)[:5])
    share = repeat_share(" ".join(output[f] for f in fields))
    if share > limits.max_repeat_share:
        return "repetitive", f"{share:.0%} of its word 4-grams repeat (allowed {limits.max_repeat_share:.0%})"
    return None


def repeat_share(text: str, n: int = 4) -> float:
    """The share of the word n-grams of `text` that repeat an earlier one: a small model at temperature 0.7
    falls into loops ("This is the solution to the problem. This is the solution to ..."), which every other
    check lets through. Of the 1,000 labelled PubMedQA items none exceeds 0.19 (question, context and long
    answer together)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def is_copy(output: dict, kind: str, source: Example, threshold: float, fields: Sequence[str] = TEXT_FIELDS) -> bool:
    """A rewrite that rewrote nothing, or a 'new' question that is the source question."""
    if kind == "new":
        return jaccard(output["question"], source["question"]) >= threshold
    return all(jaccard(output[f], source[f]) >= threshold for f in fields)
