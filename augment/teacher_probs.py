"""The teacher's label distribution (`teacher_probs`): its probability of each label where the decision value starts.

A backend that can see the writer's token probabilities keeps, per answer, the alternatives at the token where
the `final_decision` value starts (`DecisionLogprobs`: the token written there and [token, log-probability]
pairs): an OpenAI-compatible server's `top_logprobs` (`from_openai_logprobs`), or the local model's own
scores before the grammar masks them. The runner maps them onto the data set's label set
(`label_distribution`) for each accepted item. Everything here is pure: no backend, no I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

# Where the decision value starts: right after the key, the colon and the opening quote (any spacing).
DECISION_VALUE = re.compile(r'"final_decision"\s*:\s*"')
# What a token may carry around the value's first letters: the opening quote, a space, the colon before it.
TOKEN_PADDING = ' \t\r\n":'
SOURCES = {"openai": "logprobs", "transformers": "local scores"}  # each backend has one source


class DecisionLogprobs(TypedDict):
    """What an answer keeps of the token probabilities: JSON-ready, as the cache stores it."""

    source: str  # "logprobs" (a server's top_logprobs) or "local scores" (the local model's own)
    token: str  # the token the teacher wrote where the decision value starts
    alternatives: list[list[Any]]  # [token, log-probability] pairs at that position


def decision_token_index(tokens: Sequence[str]) -> int | None:
    """The index of the token holding the first character of the `final_decision` value in the text these
    tokens spell (the last such key: it ends the answer); None when the text has no decision value."""
    text = "".join(tokens)
    matches = list(DECISION_VALUE.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    offset = 0
    for index, token in enumerate(tokens):
        offset += len(token)
        if offset > start:
            return index
    return None  # the text ends at the opening quote: no value written


def from_openai_logprobs(content: Sequence[Mapping[str, Any]] | None) -> DecisionLogprobs | None:
    """The alternatives at the decision value's first token from a chat completion's `logprobs.content`
    ({token, logprob, top_logprobs: [{token, logprob}]} per generated token); None without them."""
    if not content or not all(isinstance(t, Mapping) for t in content):
        return None
    index = decision_token_index([str(t.get("token") or "") for t in content])
    if index is None:
        return None
    position = content[index]
    top = position.get("top_logprobs")
    alternatives = [
        [str(a["token"]), float(a["logprob"])]
        for a in (top if isinstance(top, list) else [])
        if isinstance(a, Mapping) and a.get("token") is not None and isinstance(a.get("logprob"), int | float)
    ]
    if not alternatives:
        return None
    return DecisionLogprobs(source=SOURCES["openai"], token=str(position.get("token") or ""), alternatives=alternatives)


def label_prefix(token: str, labels: Sequence[str]) -> list[str]:
    """The labels whose case-folded text begins with the token's (stripped of quotes, spaces and colons)."""
    text = token.strip(TOKEN_PADDING).casefold()
    if not text:
        return []
    return [label for label in labels if label.casefold().startswith(text)]


def label_distribution(decision: DecisionLogprobs, labels: Sequence[str]) -> dict[str, float] | None:
    """{label: probability} over `labels` (each label a key, summing to 1), or None when it cannot be told.

    An alternative counts for a label when its text is a prefix of that label only; one that begins two labels
    (the "o" of on/off) tells them apart no more than it counts for either, so it is left out. Nothing is
    recorded when the token the teacher wrote itself begins two labels (the labels share their first token,
    as "no" and "none" do) or when no alternative counts for any label."""
    if len(label_prefix(decision["token"], labels)) > 1:
        return None
    mass = dict.fromkeys(labels, 0.0)
    for token, logprob in decision["alternatives"]:
        matched = label_prefix(token, labels)
        if len(matched) == 1:
            mass[matched[0]] += math.exp(logprob)
    total = sum(mass.values())
    if not total > 0:  # also NaN
        return None
    return {label: value / total for label, value in mass.items()}
