"""The two types every stage passes around: a chat `Request` (what is sent, and its cache key) and its `Answer`.

The key is the SHA-256 of backend, model, messages, sampling parameters and the output schema, never the
API key or the server address (the same model behind two URLs gives the same answers); `cache.py` stores
answers under it, and a change to it would orphan every cached answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .teacher_probs import DecisionLogprobs


@dataclass
class Request:
    """One chat request: what is sent, and what it is for."""

    messages: list[dict[str, str]]
    params: dict[str, Any]  # sampling parameters: temperature, top_p, max_tokens, seed
    backend: str
    model: str
    meta: dict[str, Any] = field(default_factory=dict)  # source id, kind, variant: not part of the key
    schema: dict[str, Any] | None = None  # JSON schema the answer must follow (None: free text)

    @property
    def key(self) -> str:
        payload = {"backend": self.backend, "model": self.model, "messages": self.messages, "params": self.params}
        if self.schema is not None:  # a constrained answer differs from a free one: never mix them up
            payload["schema"] = self.schema
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class Answer:
    """The text a backend returned for one request, the tokens it cost, and the teacher's token probabilities
    where the decision value starts (None where the backend gave none)."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    decision_logprobs: DecisionLogprobs | None = None
