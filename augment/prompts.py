"""Zero-shot prompts in the spirit of the paper, and robust parsing of what the LLM answers.

The prompt text is versioned: add a version whenever a prompt changes, so outputs of different prompts are never
mixed up (the prompt itself is the cache key, so an unchanged prompt keeps its cached answers). The decisions
asked for are the task's label set (PubMedQA's yes/no/maybe by default), in the prompts and in the schema.

v1 shows every field of the source item. v2 differs only for new pairs: it hides the source question, which a
small model otherwise repeats (SmolLM2-135M did so for 210 of 450 new pairs under v1). v3 asks in v2's words
and adds to the answer's schema, where it is bounded, a pattern that makes the question one question (it ends
at its first question mark): SmolLM2-135M wrote statements as new "questions" for about half its v2 pairs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from domainqa.data import LABELS, Example
from domainqa.prompts import either, parse_answer

PROMPT_VERSION = "v1"  # the default
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
QUESTION_PATTERN = rf"^[^?]{{{MIN_CHARS['question'] - 1},{QUESTION_MAX_CHARS - 1}}}\?$"


def instruction(kind: str, labels: Sequence[str] = LABELS, version: str = PROMPT_VERSION) -> str:
    """The instruction of `kind` in prompt `version` for the label set `labels`."""
    quoted = [f'"{label}"' for label in labels]
    return INSTRUCTIONS_BY_VERSION[version][kind].format(labels=", ".join(quoted), either=either(quoted))


def output_schema(
    kind: str, bounded: bool = True, labels: Sequence[str] = LABELS, version: str = PROMPT_VERSION
) -> dict[str, Any]:
    """The JSON schema of an answer of `kind` in prompt `version` with a decision from `labels`, the one
    definition both backends use.

    `bounded` adds maxLength/minLength to the strings (and, from v3, the question's pattern); OpenAI's
    strict mode refuses those keywords, other servers (llama.cpp, vLLM, Ollama, TGI) and the local grammar
    honour them."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}")
    decision = {"type": "string", "enum": list(labels)}
    if kind == "verify":
        properties: dict[str, Any] = {"final_decision": decision}
    else:
        properties = {name: _string(name, bounded) for name in MAX_CHARS}
        if bounded and version not in ("v1", "v2"):
            properties["question"] = {"type": "string", "pattern": QUESTION_PATTERN}
        properties["final_decision"] = decision
    return {
        "title": "pubmedqa_verdict" if kind == "verify" else "pubmedqa_item",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _string(name: str, bounded: bool) -> dict[str, Any]:
    if not bounded:
        return {"type": "string"}
    return {"type": "string", "minLength": MIN_CHARS[name], "maxLength": MAX_CHARS[name]}


def without_max_lengths(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with no maxLength on its strings. llama.cpp turns a maxLength into one nested optional rule
    per character and refuses a grammar of 1,600 of them ("exceeds sane defaults"), then drops the request;
    minLength stays (a flat repetition it takes), and the maxima are checked after generation."""
    properties = {k: {f: v for f, v in p.items() if f != "maxLength"} for k, p in schema["properties"].items()}
    return {**schema, "properties": properties}


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI `response_format` asking for answers under `schema`."""
    return {"type": "json_schema", "json_schema": {"name": schema["title"], "strict": True, "schema": schema}}


def build_messages(
    kind: str, example: Example, labels: Sequence[str] = LABELS, version: str = PROMPT_VERSION
) -> list[dict[str, str]]:
    """Chat messages in prompt `version` asking for one `kind` output from `example`, its decision one of
    `labels` (a verify prompt hides the decision)."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}")
    if kind == "verify":
        shown = {"question": example["question"], "context": example["context"]}
        user = f"{instruction('verify', labels, version)}\n\nInput:\n{json.dumps(shown, ensure_ascii=False)}"
    else:
        shown = {k: example[k] for k in SHOWN_FIELDS.get((version, kind), OUTPUT_FIELDS)}
        output_format = OUTPUT_FORMAT.format(labels=", ".join(f'"{label}"' for label in labels))
        task = f"{instruction(kind, labels, version)} {output_format}"
        user = f"{task}\n\nInput:\n{json.dumps(shown, ensure_ascii=False)}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


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
