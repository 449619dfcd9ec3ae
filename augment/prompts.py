"""Zero-shot prompts in the spirit of the paper, and robust parsing of what the LLM answers.

The prompt text is versioned: add a version whenever a prompt changes, so outputs of different prompts are never
mixed up (the prompt itself is the cache key, so an unchanged prompt keeps its cached answers). The decisions
asked for are the task's label set (PubMedQA's yes/no/maybe by default), in the prompts and in the schema.

v1 shows every field of the source item. v2 differs only for new pairs: it hides the source question, which a
small model otherwise repeats (SmolLM2-135M did so for 210 of 450 new pairs under v1). v3 asks in v2's words
and adds to the answer's schema, where it is bounded, a pattern that makes the question one question (it ends
at its first question mark): SmolLM2-135M wrote statements as new "questions" for about half its v2 pairs.

Each version has two wordings, chosen by the data (`Shape`): PubMedQA's (research questions on abstracts, a long
answer, the bounds of PubMedQA's lengths), and a generic one for a data set of one's own (split custom): no
domain words, a long answer only where the data set has one, and string bounds from the data set's own lengths.
PubMedQA's prompts and schemas are those of every earlier run of each version, so their cached answers stay
valid; summary.json records the wording and the bounds a run used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domainqa.data import LABELS, Example
from domainqa.prompts import either, parse_answer

PROMPT_VERSION = "v1"  # the default of the openai backend
LOCAL_PROMPT_VERSION = "v3"  # the default of the transformers backend (results/smollm2-135m-augment/local-run.md)
PROMPT_VERSIONS = ("v1", "v2", "v3")
KINDS = ("rewrite", "new", "verify")

SYSTEM = (
    "You are a biomedical researcher who writes precise question-answering data from PubMed abstracts. "
    "Always answer with one JSON object and nothing else."
)
OUTPUT_FORMAT = (
    'Answer with a JSON object with the keys "question", "context", "long_answer" and "final_decision" '
    "(one of {labels})."
)
INSTRUCTIONS = {
    "rewrite": (
        "Rewrite the following research question, its context (an abstract without its conclusion) and its long "
        "answer (the conclusion) in new words. Keep every fact, number and the meaning exactly; the final decision "
        "must stay the same. Do not copy sentences."
    ),
    "new": (
        "Write a new research question that can be answered from the following abstract, different from the given "
        "question. Give the part of the abstract that the answer needs as the context (in your own words, without "
        "stating the conclusion), a long answer that concludes from it, and the final decision."
    ),
    "verify": (
        'Answer the research question from the context. Answer with a JSON object {{"final_decision": ...}} whose '
        "value is one of {either}."
    ),
}
# v2: a new pair from the abstract alone, its question unseen.
INSTRUCTIONS_V2 = {
    **INSTRUCTIONS,
    "new": (
        "Write a research question that the following abstract answers. Give the part of the abstract that the "
        "answer needs as the context (in your own words, without stating the conclusion), a long answer that "
        "concludes from it, and the final decision."
    ),
}
INSTRUCTIONS_BY_VERSION = {"v1": INSTRUCTIONS, "v2": INSTRUCTIONS_V2, "v3": INSTRUCTIONS_V2}
# From v2 a new-pair prompt hides the source question; the rest show every field of the source.
SHOWN_FIELDS = {(version, "new"): ("context", "long_answer") for version in ("v2", "v3")}

# The generic wording, for a data set of one's own: the same requests without PubMedQA's domain, and without a
# long answer where the data set has none ({rewritten} and {long_answer} are filled in).
GENERIC_SYSTEM = (
    "You write precise question-answering data from the passages you are given. "
    "Always answer with one JSON object and nothing else."
)
GENERIC_INSTRUCTIONS = {
    "rewrite": (
        "Rewrite the following {rewritten} in new words. Keep every fact, number and the meaning "
        "exactly, and keep all of the context's content, about as long as it is; the final decision must stay the "
        "same. Do not copy sentences."
    ),
    "new": (
        "Write a new question that can be answered from the following context, different from the given question. "
        "Give the part of the context that the answer needs as the context (in your own words, without stating the "
        "answer), {long_answer}and the final decision."
    ),
    "verify": (
        'Answer the question from the context. Answer with a JSON object {{{{"final_decision": ...}}}} whose value '
        "is one of {{either}}."
    ),
}
GENERIC_INSTRUCTIONS_V2 = {
    **GENERIC_INSTRUCTIONS,
    "new": (
        "Write a question that the following context answers. Give the part of the context that the answer needs as "
        "the context (in your own words, without stating the answer), {long_answer}and the final decision."
    ),
}
GENERIC_INSTRUCTIONS_BY_VERSION = {
    "v1": GENERIC_INSTRUCTIONS,
    "v2": GENERIC_INSTRUCTIONS_V2,
    "v3": GENERIC_INSTRUCTIONS_V2,
}
GENERIC_LONG = {  # the long answer's words in the generic wording, and their absence
    True: {
        "rewritten": "question, its context and its long answer",
        "long_answer": "a long answer that concludes from it, ",
    },
    False: {"rewritten": "question and its context", "long_answer": ""},
}
ALIASES = {
    "question": ("question", "new_question", "rewritten_question"),
    "context": ("context", "contexts", "abstract", "rewritten_context"),
    "long_answer": ("long_answer", "longanswer", "answer_explanation", "conclusion", "rewritten_long_answer"),
    "final_decision": ("final_decision", "decision", "answer", "label", "final_answer"),
}
OUTPUT_FIELDS = tuple(ALIASES)
JSON_OBJECT = {"type": "json_object"}  # the fallback for servers without JSON-schema output

# Longest string per field, in characters. Under a grammar, a small model only stops a string when the
# grammar lets it, so without bounds it may run past max_tokens and leave the object unclosed. The
# bounds cover 90% of the training items' own lengths (context: median 1,329, p90 1,753 characters).
MAX_CHARS = {"question": 300, "context": 1600, "long_answer": 700}
# Shortest string per field: a one-word long answer ("Yes") or an empty context is no training example.
MIN_CHARS = {"question": 15, "context": 100, "long_answer": 20}
# v3's question: one question, ending at its only question mark, MIN_CHARS to QUESTION_MAX_CHARS long (87% of
# PubMedQA's questions fit). xgrammar lets a pattern stand in for the length keywords, and fails to compile a
# bounded repetition much longer than this one; a question without its bound ran to hundreds of tokens.
QUESTION_MAX_CHARS = 129


def question_pattern(min_chars: int = MIN_CHARS["question"]) -> str:
    """One question of `min_chars` to QUESTION_MAX_CHARS characters, ending at its only question mark."""
    return rf"^[^?]{{{min_chars - 1},{QUESTION_MAX_CHARS - 1}}}\?$"


QUESTION_PATTERN = question_pattern()


@dataclass(frozen=True)
class Shape:
    """What the prompts and the answer's schema ask for, from the data set: PubMedQA's wording and bounds (the
    default), or the generic wording of a data set of one's own, with a long answer only where it has one and
    string bounds (in characters) from its own lengths (`augment.sources.data_shape`)."""

    generic: bool = False
    long_answer: bool = True
    max_chars: Mapping[str, int] = field(default_factory=lambda: dict(MAX_CHARS))
    min_chars: Mapping[str, int] = field(default_factory=lambda: dict(MIN_CHARS))
    question_pattern: bool = True  # v3's one-question pattern (bounded schemas only)

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The text fields an answer holds."""
        return ("question", "context", "long_answer") if self.long_answer else ("question", "context")

    def as_dict(self) -> dict[str, Any]:
        return {
            "wording": "generic" if self.generic else "pubmedqa",
            "long_answer": self.long_answer,
            "max_chars": {k: self.max_chars[k] for k in self.text_fields},
            "min_chars": {k: self.min_chars[k] for k in self.text_fields},
            "question_pattern": self.question_pattern,
        }


PUBMEDQA = Shape()


def instructions(version: str = PROMPT_VERSION, shape: Shape = PUBMEDQA) -> dict[str, str]:
    """The instruction templates of prompt `version` in the wording of `shape`, by kind ({labels} and
    {either} still to fill in)."""
    if not shape.generic:
        return INSTRUCTIONS_BY_VERSION[version]
    words = GENERIC_LONG[shape.long_answer]
    return {kind: text.format(**words) for kind, text in GENERIC_INSTRUCTIONS_BY_VERSION[version].items()}


def instruction(
    kind: str, labels: Sequence[str] = LABELS, version: str = PROMPT_VERSION, shape: Shape = PUBMEDQA
) -> str:
    """The instruction of `kind` in prompt `version` for the label set `labels`, in the wording of `shape`."""
    quoted = [f'"{label}"' for label in labels]
    return instructions(version, shape)[kind].format(labels=", ".join(quoted), either=either(quoted))


def output_schema(
    kind: str,
    bounded: bool = True,
    labels: Sequence[str] = LABELS,
    version: str = PROMPT_VERSION,
    shape: Shape = PUBMEDQA,
) -> dict[str, Any]:
    """The JSON schema of an answer of `kind` in prompt `version` with a decision from `labels`, the one
    definition both backends use; its text fields are those of `shape` (no long answer where the data set
    has none).

    `bounded` adds maxLength/minLength to the strings (and, from v3, the question's pattern); OpenAI's
    strict mode refuses those keywords, other servers (llama.cpp, vLLM, Ollama, TGI) and the local grammar
    honour them."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}")
    decision = {"type": "string", "enum": list(labels)}
    if kind == "verify":
        properties: dict[str, Any] = {"final_decision": decision}
    else:
        properties = {name: _string(name, bounded, shape) for name in shape.text_fields}
        if bounded and version not in ("v1", "v2") and shape.question_pattern:
            properties["question"] = {"type": "string", "pattern": question_pattern(shape.min_chars["question"])}
        properties["final_decision"] = decision
    prefix = "qa" if shape.generic else "pubmedqa"
    return {
        "title": f"{prefix}_verdict" if kind == "verify" else f"{prefix}_item",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _string(name: str, bounded: bool, shape: Shape = PUBMEDQA) -> dict[str, Any]:
    if not bounded:
        return {"type": "string"}
    return {"type": "string", "minLength": shape.min_chars[name], "maxLength": shape.max_chars[name]}


def without_max_lengths(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with no maxLength on its strings. llama.cpp turns a maxLength into one nested optional rule
    per character and refuses a grammar of 1,600 of them ("exceeds sane defaults"), then drops the request;
    minLength stays (a flat repetition it takes), and the maxima are checked after generation."""
    properties = {k: {f: v for f, v in p.items() if f != "maxLength"} for k, p in schema["properties"].items()}
    return {**schema, "properties": properties}


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI `response_format` asking for answers under `schema`."""
    return {"type": "json_schema", "json_schema": {"name": schema["title"], "strict": True, "schema": schema}}


def output_format(labels: Sequence[str], shape: Shape = PUBMEDQA) -> str:
    """The sentence naming the answer's keys: PubMedQA's, or those of `shape`."""
    quoted = ", ".join(f'"{label}"' for label in labels)
    if not shape.generic:
        return OUTPUT_FORMAT.format(labels=quoted)
    keys = [f'"{name}"' for name in shape.text_fields]
    return f'Answer with a JSON object with the keys {", ".join(keys)} and "final_decision" (one of {quoted}).'


def shown_fields(kind: str, version: str = PROMPT_VERSION, shape: Shape = PUBMEDQA) -> tuple[str, ...]:
    """The fields of the source item a prompt of `kind` shows."""
    if kind == "verify":
        return ("question", "context")
    fields = SHOWN_FIELDS.get((version, kind), OUTPUT_FIELDS)
    return fields if shape.long_answer else tuple(f for f in fields if f != "long_answer")


def build_messages(
    kind: str,
    example: Example,
    labels: Sequence[str] = LABELS,
    version: str = PROMPT_VERSION,
    shape: Shape = PUBMEDQA,
) -> list[dict[str, str]]:
    """Chat messages in prompt `version` asking for one `kind` output from `example`, its decision one of
    `labels` (a verify prompt hides the decision), in the wording of `shape`."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}")
    shown = {k: example[k] for k in shown_fields(kind, version, shape)}
    task = instruction(kind, labels, version, shape)
    if kind != "verify":
        task = f"{task} {output_format(labels, shape)}"
    user = f"{task}\n\nInput:\n{json.dumps(shown, ensure_ascii=False)}"
    return [
        {"role": "system", "content": GENERIC_SYSTEM if shape.generic else SYSTEM},
        {"role": "user", "content": user},
    ]


class ParseError(ValueError):
    """The answer holds no usable JSON object."""


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in `text`: plain, in a code fence, or surrounded by prose."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ParseError("no JSON object in the answer")


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(v.strip() for v in value)
    return None


def normalize_decision(value: Any, labels: Sequence[str] = LABELS) -> str | None:
    """One of `labels` as spelled there, or None."""
    if not isinstance(value, str):
        return None
    word = value.strip().strip(".!\"'").lower()
    spelled = {label.lower(): label for label in labels}
    return spelled[word] if word in spelled else parse_answer(value, labels)


def parse_output(text: str, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Map an answer onto {question, context, long_answer, final_decision}; missing fields are None, and so
    is a decision outside `labels`."""
    raw = extract_json(text)
    lowered = {str(k).lower().replace(" ", "_"): v for k, v in raw.items()}
    out: dict[str, Any] = {}
    for name, keys in ALIASES.items():
        value = next((lowered[k] for k in keys if k in lowered), None)
        out[name] = normalize_decision(value, labels) if name == "final_decision" else _text(value)
    if out["final_decision"] is None and any(k in lowered for k in ALIASES["final_decision"]):
        out["final_decision_raw"] = next(lowered[k] for k in ALIASES["final_decision"] if k in lowered)
    return out


def parse_verdict(text: str, labels: Sequence[str] = LABELS) -> str | None:
    """The decision in a verifier answer: its JSON, else the whole-word label in the text."""
    try:
        raw = extract_json(text)
    except ParseError:
        return parse_answer(text, labels)
    lowered = {str(k).lower(): v for k, v in raw.items()}
    value = next((lowered[k] for k in ALIASES["final_decision"] if k in lowered), None)
    return normalize_decision(value, labels) if value is not None else None
