"""OpenAI's Batch API (half price, answers within 24 h): submit once, record the batch, poll, collect.

The batch id is recorded in <output_dir>/batch_state.json the moment the batch exists, so a rerun (after
a kill, or after --batch_wait_timeout ran out) picks the same batch up instead of paying twice. The batch
goes through the openai backend's client and request bodies; its own settings are `BatchSettings`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from domainqa.io import atomic_write_json

from .arguments import AugmentArguments
from .backends import OnAnswer, OnFailure, OpenAIBackend
from .requests import Answer, Request

logger = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


@dataclass(frozen=True)
class BatchSettings:
    """What a Batch API run uses besides the backend: the client's retries, polling, and the state file."""

    max_retries: int  # of each file and batch call, by the openai client itself
    poll_interval: float
    wait_timeout: float
    state_path: Path

    @classmethod
    def from_arguments(cls, args: AugmentArguments) -> BatchSettings:
        return cls(
            max_retries=args.max_retries,
            poll_interval=args.batch_poll_interval,
            wait_timeout=args.batch_wait_timeout,
            state_path=Path(args.output_dir) / "batch_state.json",
        )


class BatchPending(Exception):
    """The batch is still running; rerun the same command later to collect it."""


def _load_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


async def _submit(backend: OpenAIBackend, client, requests: Sequence[Request], state_path: Path) -> str:
    lines = [
        json.dumps(
            # No logprobs: a server refusing them would fail every line of the batch, with no fallback.
            {"custom_id": r.key, "method": "POST", "url": ENDPOINT, "body": backend.request_body(r, logprobs=False)},
            ensure_ascii=False,
        )
        for r in requests
    ]
    uploaded = await client.files.create(file=("requests.jsonl", "\n".join(lines).encode()), purpose="batch")
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
    atomic_write_json(
        state_path, {"batch_id": batch.id, "input_file_id": uploaded.id, "keys": [r.key for r in requests]}
    )
    logger.info("submitted batch %s with %d requests", batch.id, len(requests))
    backend.stats["batches_submitted"] += 1
    return batch.id


async def run_batch(
    backend: OpenAIBackend,
    requests: Sequence[Request],
    on_answer: OnAnswer,
    on_failure: OnFailure,
    settings: BatchSettings,
) -> None:
    """Answer `requests` through one batch (reusing a recorded one that covers them)."""
    if not requests:
        return
    state_path = settings.state_path
    client = backend.client.with_options(max_retries=settings.max_retries)
    state = _load_state(state_path)
    if state and {r.key for r in requests} <= set(state["keys"]):
        batch_id = state["batch_id"]
        logger.info("resuming recorded batch %s", batch_id)
    else:
        batch_id = await _submit(backend, client, requests, state_path)
    started = time.monotonic()
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            break
        if time.monotonic() - started > settings.wait_timeout:
            raise BatchPending(f"batch {batch_id} is {batch.status}; run the same command again to collect it")
        await asyncio.sleep(settings.poll_interval)
    by_key = {r.key: r for r in requests}
    if batch.status != "completed":
        for request in requests:
            on_failure(request, f"batch {batch_id} {batch.status}")
        state_path.unlink(missing_ok=True)
        return
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await client.files.content(file_id)
        for line in content.text.splitlines():
            if line.strip():
                _collect(json.loads(line), by_key, on_answer, on_failure)
    for request in by_key.values():
        on_failure(request, f"missing from the output of batch {batch_id}")
    state_path.unlink(missing_ok=True)  # every answer is cached now


def _collect(row: dict, by_key: dict[str, Request], on_answer: OnAnswer, on_failure: OnFailure) -> None:
    request = by_key.pop(row.get("custom_id"), None)
    if request is None:
        return  # answered already (a rerun after a kill during collection)
    response = row.get("response") or {}
    body = response.get("body") or {}
    if response.get("status_code") != 200 or not body.get("choices"):
        error = row.get("error") or body.get("error") or {}
        on_failure(request, f"batch error: {error.get('message', response.get('status_code'))}")
        return
    usage = body.get("usage") or {}
    text = body["choices"][0]["message"].get("content") or ""
    on_answer(request, Answer(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)))
