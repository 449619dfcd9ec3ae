"""One augmentation run: sources -> requests -> cached answers -> validated examples -> output files."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from domainqa.cards import dataset_card
from domainqa.data import Example
from domainqa.hub_upload import push_dataset
from domainqa.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from domainqa.redaction import Redactor

from .arguments import AugmentArguments, AugmentError
from .backends import OpenAIBackend, OpenAISettings, TransformersBackend, TransformersSettings
from .batch import BatchSettings, run_batch
from .cache import AnswerCache
from .prompts import (
    INSTRUCTIONS_BY_VERSION,
    ParseError,
    build_messages,
    output_schema,
    parse_output,
    parse_verdict,
)
from .requests import Answer, Request
from .sources import load_sources, task_labels
from .validation import LeakIndex, Limits, check_fields, fingerprint

logger = logging.getLogger("augment")

KINDS_BY_STRATEGY = {"rewrite": ("rewrite",), "new": ("new",), "combined": ("rewrite", "new")}
# US$ per million tokens (input, output), OpenAI's list prices; --price_table adds or overrides models.
PRICES = {
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4": (30.00, 60.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
}
VERIFY_MAX_TOKENS = 64


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text.split("/")[-1].split(":")[-1]).strip("-").lower()


def make_request(args: AugmentArguments, kind: str, example: Example, variant: int, meta: dict) -> Request:
    temperature, max_tokens = args.temperature, args.max_tokens
    if kind == "verify":  # the verifier should answer, not be creative
        temperature, max_tokens = 0.0, VERIFY_MAX_TOKENS
    params = {"temperature": temperature, "top_p": args.top_p, "max_tokens": max_tokens, "seed": args.seed + variant}
    if args.repetition_penalty != 1.0 and kind != "verify":  # only when set: earlier cache keys stay valid
        params["repetition_penalty"] = args.repetition_penalty
    labels = task_labels(args)
    schema = output_schema(kind, bounded_schema(args), labels, args.prompt_version) if args.json_mode != "off" else None
    messages = build_messages(kind, example, labels, args.prompt_version)
    return Request(messages, params, args.backend, args.model, meta, schema)


def bounded_schema(args: AugmentArguments) -> bool:
    """String length bounds everywhere but on OpenAI's own API, whose strict mode refuses them."""
    return args.backend == "transformers" or (args.base_url is not None and "api.openai.com" not in args.base_url)


def price_table(args: AugmentArguments) -> dict[str, tuple[float, float]]:
    table = dict(PRICES)
    if args.price_table:
        try:
            extra = yaml.safe_load(Path(args.price_table).read_text(encoding="utf-8")) or {}
            table.update({m: (float(p["input"]), float(p["output"])) for m, p in extra.items()})
        except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError) as e:
            raise AugmentError(
                f"{args.price_table}: not a price table {{model: {{input: .., output: ..}}}} ({e})"
            ) from None
    return table


def estimate_cost(args: AugmentArguments, tokens_in: int, tokens_out: int) -> float | None:
    if args.backend == "transformers":
        return 0.0
    prices = price_table(args).get(args.model)
    if prices is None:
        return None
    cost = (tokens_in * prices[0] + tokens_out * prices[1]) / 1e6
    return round(cost / 2 if args.use_batch_api else cost, 6)  # the Batch API costs half


class Collector:
    """Receives answers: caches each one before anything else touches it, and shows the progress."""

    def __init__(self, cache: AnswerCache, total: int):
        self.cache = cache
        self.total = total
        self.done = 0
        self.failures: dict[str, str] = {}
        self.new_tokens = Counter()
        self._last_log = time.monotonic()
        self.bar: tqdm | None = None  # set while requests are out

    def on_answer(self, request: Request, answer: Answer) -> None:
        self.cache.put(request, answer)
        self.new_tokens["in"] += answer.tokens_in
        self.new_tokens["out"] += answer.tokens_out
        self._progress()

    def on_failure(self, request: Request, reason: str) -> None:
        self.failures[request.key] = reason
        logger.warning(
            "request failed for %s (%s): %s", request.meta.get("source_id"), request.meta.get("kind"), reason
        )
        self._progress()

    def _progress(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if time.monotonic() - self._last_log > 10 or self.done == self.total:
            self._last_log = time.monotonic()
            logger.info("%d/%d requests done", self.done, self.total)


async def answer_all(args: AugmentArguments, backend, requests: list[Request], collector: Collector) -> None:
    if args.use_batch_api:
        settings = BatchSettings.from_arguments(args)
        await run_batch(backend, requests, collector.on_answer, collector.on_failure, settings)
    else:
        await backend.run(requests, collector.on_answer, collector.on_failure)


class Run:
    def __init__(self, args: AugmentArguments):
        self.args = args
        self.api_key = os.environ.get(args.api_key_env) if args.backend == "openai" else None
        self.redact = Redactor.for_server(self.api_key, args.base_url)  # the key, and any in the URL
        self.cache = AnswerCache(args.cache_dir or Path(args.output_dir) / "cache")
        self.backend = None
        self.stats: Counter = Counter()

    async def _backend(self):
        """Created (and checked) only when a request must really be sent."""
        if self.backend is None:
            if self.args.backend == "openai":
                if not self.api_key:
                    raise AugmentError(
                        f"no API key: set ${self.args.api_key_env} (any value for a local server without auth)"
                    )
                self.backend = OpenAIBackend(OpenAISettings.from_arguments(self.args), self.api_key, self.redact)
            else:
                self.backend = TransformersBackend(TransformersSettings.from_arguments(self.args))
            await self.backend.preflight()
        return self.backend

    async def answer(self, requests: list[Request]) -> dict[str, Answer | str]:
        """Answer for each request key (str: why it failed), from the cache or the backend."""
        pending = [r for r in requests if r not in self.cache]
        self.stats["cache_hits"] += len(requests) - len(pending)
        collector = Collector(self.cache, len(pending))
        if pending:
            logger.info("%d request(s) to send, %d answered from the cache", len(pending), len(requests) - len(pending))
            backend = await self._backend()  # a refused key or an unreachable server stops the run before the bar
            # One bar, on the main process only (RANK is set where a launcher starts several).
            with tqdm(
                total=len(pending), unit="request", desc="augment", disable=os.environ.get("RANK", "0") != "0"
            ) as bar:
                collector.bar = bar
                await answer_all(self.args, backend, pending, collector)
        self.stats["tokens_in_this_run"] += collector.new_tokens["in"]
        self.stats["tokens_out_this_run"] += collector.new_tokens["out"]
        results: dict[str, Answer | str] = {}
        for request in requests:
            cached = self.cache.get(request)
            results[request.key] = cached if cached is not None else collector.failures.get(request.key, "no answer")
            if cached is not None:  # tokens of every answer used, whether paid in this run or an earlier one
                self.stats["tokens_in"] += cached.tokens_in
                self.stats["tokens_out"] += cached.tokens_out
        self.stats["requests"] += len(requests)
        return results

    async def close(self) -> None:
        if self.backend is not None:
            self.stats.update(self.backend.stats)
            await self.backend.close()


def _row(args: AugmentArguments, source: Example, kind: str, variant: int, output: dict) -> dict[str, Any]:
    return {
        "id": f"{source['id']}-{kind}-{slug(args.model)}-{variant}",
        "question": output["question"],
        "context": output["context"],
        "long_answer": output["long_answer"],
        "final_decision": output["final_decision"],
        "source_id": source["id"],
        "strategy": kind,
        "model": args.model,
        "prompt_version": args.prompt_version,
    }


def _original(source: Example) -> dict[str, Any]:
    row = {k: source[k] for k in ("id", "question", "context", "long_answer", "final_decision")}
    return {**row, "source_id": source["id"], "strategy": "original", "model": None, "prompt_version": None}


async def execute(args: AugmentArguments) -> dict[str, Any]:
    """The whole run; returns the summary. Raises AugmentError on bad input before any request."""
    started = time.monotonic()
    sources, leak_index, facts = load_sources(args)
    price_table(args)  # a broken price table stops the run before any request
    run = Run(args)
    try:
        requests = [
            make_request(
                args, kind, source, variant, {"source": n, "source_id": source["id"], "kind": kind, "variant": variant}
            )
            for n, source in enumerate(sources)
            for kind in KINDS_BY_STRATEGY[args.strategy]
            for variant in range(args.num_variants)
        ]
        answers = await run.answer(requests)
        rows, rejected = await assemble(args, run, sources, requests, answers, leak_index)
    finally:
        await run.close()
    summary = summarize(args, facts, sources, requests, answers, rows, rejected, run, time.monotonic() - started)
    write_outputs(args, rows, rejected, summary)
    if args.push_to_hub:
        push_dataset(args.output_dir, args.hub_dataset_id, private=args.hub_private)
    return summary


async def assemble(
    args: AugmentArguments,
    run: Run,
    sources: list[Example],
    requests: list[Request],
    answers: dict[str, Answer | str],
    leak_index: LeakIndex,
) -> tuple[list[dict], list[dict]]:
    """Validate every answer in a fixed order (so reruns give the same files) and keep the good ones."""
    limits = Limits(
        args.min_words,
        args.max_question_words,
        args.max_context_words,
        args.max_answer_words,
        args.copy_threshold,
        args.check_numbers,
        args.max_repeat_share,
    )
    rows: list[dict] = [_original(s) for s in sources] if args.strategy == "combined" else []
    seen = {fingerprint(s) for s in sources}  # an output equal to any source item is no new example
    rejected: list[dict] = []
    candidates: list[tuple[Request, dict]] = []
    labels = task_labels(args)
    for request in requests:
        source, kind, variant = sources[request.meta["source"]], request.meta["kind"], request.meta["variant"]
        base = {"source_id": source["id"], "strategy": kind, "variant": variant, "model": args.model}
        answer = answers[request.key]
        if isinstance(answer, str):
            rejected.append({**base, "reason": "request_failed", "detail": run.redact(answer)})
            continue
        try:
            output = parse_output(answer.text, labels)
        except ParseError as e:
            rejected.append({**base, "reason": "unparseable", "detail": str(e), "output": answer.text})
            continue
        problem = check_fields(output, kind, source, limits, labels)
        if problem is None:
            leak = leak_index.leak(output)
            problem = ("test_overlap", leak) if leak else None
        if problem is None and fingerprint(output) in seen:
            problem = ("duplicate", "same question and context as another example")
        if problem is not None:
            rejected.append({**base, "reason": problem[0], "detail": problem[1], "output": output})
            continue
        seen.add(fingerprint(output))
        candidates.append((request, _row(args, source, kind, variant, output)))
    if args.verify:
        candidates = await verify(args, run, sources, candidates, rejected)
    rows.extend(row for _, row in candidates)
    return rows, rejected


async def verify(
    args: AugmentArguments, run: Run, sources: list[Example], candidates: list[tuple[Request, dict]], rejected: list
) -> list[tuple[Request, dict]]:
    """The LLM answers each rewritten question; a rewrite whose answer differs from its source's is dropped."""
    checks = {
        request.key: make_request(args, "verify", row, request.meta["variant"], dict(request.meta, kind="verify"))
        for request, row in candidates
        if row["strategy"] == "rewrite"
    }
    answers = await run.answer(list(checks.values()))
    kept = []
    for request, row in candidates:
        check = checks.get(request.key)
        if check is not None:
            answer = answers[check.key]
            verdict = None if isinstance(answer, str) else parse_verdict(answer.text, task_labels(args))
            expected = sources[request.meta["source"]]["final_decision"]
            if verdict != expected:
                detail = f"verifier answered {verdict}, source says {expected}"
                if isinstance(answer, str):
                    detail = f"verifier request failed: {run.redact(answer)}"
                base = {"source_id": row["source_id"], "strategy": row["strategy"], "variant": request.meta["variant"]}
                rejected.append(
                    {**base, "model": args.model, "reason": "verifier_flipped", "detail": detail, "output": row}
                )
                continue
        kept.append((request, row))
    return kept


def summarize(args, facts, sources, requests, answers, rows, rejected, run: Run, wall_time: float) -> dict[str, Any]:
    tokens_in, tokens_out = run.stats.get("tokens_in", 0), run.stats.get("tokens_out", 0)
    reasons = Counter(r["reason"] for r in rejected)
    return {
        "strategy": args.strategy,
        "backend": args.backend + (" (batch API)" if args.use_batch_api else ""),
        "model": args.model,
        "prompt_version": args.prompt_version,
        **facts,
        "split": args.split,
        "sources": len(sources),
        "requests": run.stats.get("requests", 0),
        "requests_sent_this_run": run.stats.get("sent", 0),
        "cache_hits": run.stats.get("cache_hits", 0),
        "retries": run.stats.get("retries", 0),
        "failed_requests": reasons.get("request_failed", 0),
        "accepted": len(rows),
        "accepted_by_strategy": dict(Counter(r["strategy"] for r in rows)),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "test_overlap_rejected": reasons.get("test_overlap", 0),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "tokens_in_this_run": run.stats.get("tokens_in_this_run", 0),
        "tokens_out_this_run": run.stats.get("tokens_out_this_run", 0),
        "estimated_cost_usd": estimate_cost(args, tokens_in, tokens_out),
        "wall_time_s": round(wall_time, 3),
        "sampling": {
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_tokens": args.max_tokens,
            "seed": args.seed,
            "repetition_penalty": args.repetition_penalty,
        },
        "num_variants": args.num_variants,
        "verify": args.verify,
        "json_mode": args.json_mode,
        "check_numbers": args.check_numbers,
        "max_repeat_share": args.max_repeat_share,
    }


def write_outputs(args: AugmentArguments, rows: list[dict], rejected: list[dict], summary: dict) -> None:
    """Each file is replaced atomically: a kill leaves the old complete file or the new one, never half."""
    out = Path(args.output_dir)
    atomic_write_jsonl(out / "data.jsonl", rows)
    atomic_write_jsonl(out / "rejected.jsonl", rejected)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(
        out / "README.md",
        dataset_card(summary, rows, INSTRUCTIONS_BY_VERSION[args.prompt_version], args.prompt_version),
    )
    logger.info(
        "%d accepted, %d rejected -> %s (%s)",
        len(rows),
        len(rejected),
        out / "data.jsonl",
        json.dumps(summary["rejected_by_reason"]),
    )
