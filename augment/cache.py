"""On-disk answer cache: one JSON file per request, written atomically before the answer is used.

A run killed at any moment loses at most the requests in flight; a rerun finds every completed answer
here and sends nothing twice. Each file is named by its request's key (`requests.Request.key`)."""

from __future__ import annotations

import json
from pathlib import Path

from domainqa.io import atomic_write_json

from .requests import Answer, Request


class AnswerCache:
    """Answers by request key, one file each under `<folder>/<first two hex digits of the key>/`."""

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
