"""On-disk answer cache: one JSON file per request, written atomically before the answer is used.

A run killed at any moment loses at most the requests in flight; a rerun finds every completed answer
here and sends nothing twice. The key covers backend, model, messages, sampling parameters and the output
schema, never the API key or the server address (the same model behind two URLs gives the same answers)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainqa.io import atomic_write_json


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
    text: str
    tokens_in: int = 0
    tokens_out: int = 0


class AnswerCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, request: Request) -> Answer | None:
        path = self._path(request.key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):  # cannot happen with atomic writes, but never trust a cache
            return None
        return Answer(entry["text"], entry.get("tokens_in", 0), entry.get("tokens_out", 0))

    def put(self, request: Request, answer: Answer) -> None:
        entry = {
            "backend": request.backend,
            "model": request.model,
            "messages": request.messages,
            "params": request.params,
            "schema": request.schema,
            "text": answer.text,
            "tokens_in": answer.tokens_in,
            "tokens_out": answer.tokens_out,
        }
        atomic_write_json(self._path(request.key), entry)

    def __contains__(self, request: Request) -> bool:
        return self._path(request.key).is_file()
