"""On-disk answer cache: one JSON file per request, written atomically before the answer is used.

A run killed at any moment loses at most the requests in flight; a rerun finds every completed answer
here and sends nothing twice. Each file is named by its request's key (`requests.Request.key`).

Several runs may share one cache at the same time (say rewriteQA and newQA through one --cache_dir): each
answer file is written to a temporary name and renamed into place, so no reader ever sees a torn one, and
`Claims` keeps two live runs from sending the same request at once."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from domainqa.io import atomic_write_json

from .requests import Answer, Request

CLAIMS_FOLDER = ".claims"
CLAIMS_SUFFIX = ".claims"


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
        # Answers cached before the token probabilities were kept have none: no teacher_probs, never a guess.
        return Answer(
            entry["text"], entry.get("tokens_in", 0), entry.get("tokens_out", 0), entry.get("decision_logprobs")
        )

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
        if answer.decision_logprobs is not None:  # the model's token probabilities only: no secret goes in here
            entry["decision_logprobs"] = answer.decision_logprobs
        atomic_write_json(self._path(request.key), entry)

    def __contains__(self, request: Request) -> bool:
        return self._path(request.key).is_file()


class Claims:
    """The requests each live run sharing a cache is answering now, so that a request goes out once.

    Every run has a claims file `<cache>/.claims/<pid>-<random>.claims` holding the keys it is sending, one a
    line, and an exclusive flock on it for as long as it lives (the kernel drops the lock when the process
    ends, kill -9 included). A run claims only keys no live run holds; a claims file nobody holds the lock of
    is left over from a dead run, and is removed. Claims are read and written under one short flock of
    `<cache>/.claims/.lock`, so that no run reads a half-written list or claims a key another is claiming."""

    def __init__(self, cache_folder: str | Path):
        self.folder = Path(cache_folder) / CLAIMS_FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}{CLAIMS_SUFFIX}"
        with self._locked():  # created and locked at once: no other run ever sees it unlocked
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # a fresh name: nobody else waits for it
        self.held: set[str] = set()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock

    def _others(self) -> set[str]:
        """The keys live runs other than this one hold (call under the lock)."""
        keys: set[str] = set()
        for path in self.folder.glob(f"*{CLAIMS_SUFFIX}"):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its run is alive
                keys.update(os.pread(fd, os.fstat(fd).st_size, 0).decode("ascii", "replace").split())
            else:  # its run is gone
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return keys

    def _write(self) -> None:
        data = "".join(f"{key}\n" for key in sorted(self.held)).encode("ascii")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def claim(self, keys: Iterable[str]) -> set[str]:
        """Claim those of `keys` that no other live run holds; returns the keys this run now holds of them."""
        keys = set(keys)
        with self._locked():
            mine = keys - self._others()
            self.held |= mine
            self._write()
        return mine

    def held_by_others(self, keys: Iterable[str]) -> set[str]:
        with self._locked():
            return set(keys) & self._others()

    def release(self, keys: Iterable[str] | None = None) -> None:
        """Give up `keys` (all claims when None): answered and cached, or failed."""
        with self._locked():
            self.held = set() if keys is None else self.held - set(keys)
            self._write()

    def close(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
            self.held = set()
