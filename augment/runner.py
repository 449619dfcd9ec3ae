"""One augmentation run: sources -> requests -> cached answers -> validated examples -> output files.

The output folder is locked for the whole run (a second run on it is refused, naming the first), and a folder
that holds another run's output (another strategy, model, prompt version, label set, columns or sampling) is
refused unless --overwrite_output_dir: its data would otherwise be replaced without a word."""

from __future__ import annotations

import asyncio
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
from domainqa.run_folder import lock_run_folder, release_run_folder

from .arguments import AugmentArguments, AugmentError
from .backends import OpenAIBackend, OpenAISettings, TransformersBackend, TransformersSettings
from .batch import BatchSettings, run_batch
from .cache import AnswerCache, Claims
from .prompts import (
    PUBMEDQA,
    ParseError,
    Shape,
    build_messages,
    instructions,
    output_schema,
    parse_output,
    parse_verdict,
)
from .requests import Answer, Request
from .sources import load_sources, task_labels
from .teacher_probs import SOURCES, label_distribution
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
LOCK_HOLDER = "python -m augment"
CHARS_PER_TOKEN = 4  # English text in SmolLM2's (and GPT's) tokens, roughly
ANSWER_OVERHEAD_CHARS = 100  # the JSON keys, quotes and the decision
CLAIM_POLL_S = 0.5  # how often a run waits on answers another run sharing the cache is writing
# What an output folder holds, replaced by each run (the cache is kept: its answers are keyed by content).
OUTPUT_FILES = ("data.jsonl", "rejected.jsonl", "summary.json", "README.md", "batch_state.json")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text.split("/")[-1].split(":")[-1]).strip("-").lower()


def make_request(
    args: AugmentArguments, kind: str, example: Example, variant: int, meta: dict, shape: Shape = PUBMEDQA
) -> Request:
    """The request for one output of `kind` from `example`, in the prompts and schema of `shape`."""
    temperature, max_tokens = args.temperature, args.max_tokens
    if kind == "verify":  # the verifier should answer, not be creative
        temperature, max_tokens = 0.0, VERIFY_MAX_TOKENS
    params = {"temperature": temperature, "top_p": args.top_p, "max_tokens": max_tokens, "seed": args.seed + variant}
    if args.repetition_penalty != 1.0 and kind != "verify":  # only when set: earlier cache keys stay valid
        params["repetition_penalty"] = args.repetition_penalty
    labels = task_labels(args)
    schema = None
    if args.json_mode != "off":
        schema = output_schema(kind, bounded_schema(args), labels, args.prompt_version, shape)
    messages = build_messages(kind, example, labels, args.prompt_version, shape)
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
        self.elsewhere = 0  # answered by another run sharing the cache while this one waited
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

    def on_answered_elsewhere(self) -> None:
        self.elsewhere += 1
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
        self.claims: Claims | None = None  # made when a request must be sent
        self.backend = None
        self.stats: Counter = Counter()

    async def connect(self):
        """The backend, created (and checked) only when a request must really be sent."""
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
            backend = await self.connect()  # a refused key or an unreachable server stops the run before the bar
            # One bar, on the main process only (RANK is set where a launcher starts several).
            with tqdm(
                total=len(pending), unit="request", desc="augment", disable=os.environ.get("RANK", "0") != "0"
            ) as bar:
                collector.bar = bar
                await self._send(backend, pending, collector)
            self.stats["cache_hits"] += collector.elsewhere
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

    async def _send(self, backend, pending: list[Request], collector: Collector) -> None:
        """Send the pending requests that no other live run sharing the cache is sending (`Claims`), and wait
        for the answers of those it is: a request goes out once, even when two runs need it at the same time.
        A request another run gave up (it failed there, or that run ended) is claimed and sent here."""
        if self.claims is None:
            self.claims = Claims(self.cache.folder)
        waiting, told = list(pending), False
        while waiting:
            mine = self.claims.claim(r.key for r in waiting)
            try:
                answered = [r for r in waiting if r.key in mine and r in self.cache]  # by another run, just now
                for _ in answered:
                    collector.on_answered_elsewhere()
                batch = [r for r in waiting if r.key in mine and r not in answered]
                if batch:
                    await answer_all(self.args, backend, batch, collector)
            finally:
                self.claims.release()
            waiting = [r for r in waiting if r.key not in mine]
            while waiting:
                for request in [r for r in waiting if r in self.cache]:
                    collector.on_answered_elsewhere()
                    waiting.remove(request)
                if not waiting or len(self.claims.held_by_others(r.key for r in waiting)) < len(waiting):
                    break  # all answered, or some given up: claim those in the next round
                if not told:
                    logger.info(
                        "waiting for %d answer(s) that another run sharing the cache %s is writing",
                        len(waiting),
                        self.cache.folder,
                    )
                    told = True
                await asyncio.sleep(CLAIM_POLL_S)

    async def close(self) -> None:
        """Give up the claims and close the backend, adding its counts to the run's (once: a second call is a no-op)."""
        if self.claims is not None:
            self.claims.close()
            self.claims = None
        if self.backend is not None:
            backend, self.backend = self.backend, None
            self.stats.update(backend.stats)
            await backend.close()


def _row(
    args: AugmentArguments,
    source: Example,
    kind: str,
    variant: int,
    output: dict,
    shape: Shape = PUBMEDQA,
    teacher_probs: dict[str, float] | None = None,
) -> dict[str, Any]:
    """An accepted output, under PubMedQA's field names (`write_outputs` writes the data set's own); its
    `teacher_probs` only where the teacher's label distribution is known."""
    row = {"id": f"{source['id']}-{kind}-{slug(args.model)}-{variant}"}
    row.update({field: output[field] for field in shape.text_fields})
    row["final_decision"] = output["final_decision"]
    if teacher_probs is not None:
        row["teacher_probs"] = teacher_probs
    row.update(source_id=source["id"], strategy=kind, model=args.model, prompt_version=args.prompt_version)
    return row


def _original(source: Example, shape: Shape = PUBMEDQA) -> dict[str, Any]:
    row = {k: source[k] for k in ("id", *shape.text_fields, "final_decision")}
    return {**row, "source_id": source["id"], "strategy": "original", "model": None, "prompt_version": None}


def run_identity(args: AugmentArguments, facts: dict) -> dict[str, Any]:
    """What decides the rows a run writes, besides how many sources and variants: a rerun into the same folder
    with other values would replace that data with another kind."""
    return {
        "strategy": args.strategy,
        "backend": args.backend,
        "model": args.model,
        "prompt_version": args.prompt_version,
        "labels": facts["labels"],
        "columns": facts["columns"],
        "sampling": sampling(args),
    }


def sampling(args: AugmentArguments) -> dict[str, Any]:
    return {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "repetition_penalty": args.repetition_penalty,
    }


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def identity_changes(saved: dict, current: dict) -> list[str]:
    """'name: old -> new' for each entry of `current` that a saved summary records otherwise (entries an older
    summary lacks are not compared)."""
    changed = []
    for key, value in current.items():
        if key not in saved:
            continue
        old = saved[key]
        if key == "backend":
            old = str(old).removesuffix(" (batch API)")
        if isinstance(value, dict) and isinstance(old, dict) and key == "sampling":
            changed += [f"{k}: {_short(old[k])} -> {_short(v)}" for k, v in value.items() if k in old and old[k] != v]
        elif old != value:
            changed.append(f"{key}: {_short(old)} -> {_short(value)}")
    return changed


def prepare_output_dir(args: AugmentArguments, facts: dict) -> None:
    """Refuse a folder holding another run's output, unless --overwrite_output_dir (which removes it first, so
    that the folder never mixes the two); call it holding the folder's lock."""
    out = Path(args.output_dir)
    try:
        saved = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        saved = None
    except (OSError, ValueError):
        saved = {"summary": "unreadable"}
    if saved is None:
        changed = ["data.jsonl: no summary.json says which run wrote it"] if (out / "data.jsonl").is_file() else []
    elif not isinstance(saved, dict) or "strategy" not in saved:
        changed = ["summary.json: unreadable"]
    else:
        changed = identity_changes(saved, run_identity(args, facts))
    if not changed:
        return
    if not args.overwrite_output_dir:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise AugmentError(
            f"{out} holds the output of another run ({shown}); this run would replace it: use "
            "--overwrite_output_dir true or another --output_dir"
        )
    logger.warning("--overwrite_output_dir: removing the output of another run in %s (%s)", out, "; ".join(changed))
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)


def warn_short_answers(args: AugmentArguments, shape: Shape) -> None:
    """Say so when --max_tokens leaves no room for the longest answer a bounded schema allows: under a grammar
    the model closes a string only when the schema makes it, and an answer cut off by --max_tokens does not
    parse (about 4 characters a token; PubMedQA's 2,600 characters fit in 700 tokens)."""
    if args.json_mode == "off" or not bounded_schema(args):
        return
    longest = sum(shape.max_chars[f] for f in shape.text_fields) + ANSWER_OVERHEAD_CHARS
    if args.max_tokens * CHARS_PER_TOKEN < longest:
        logger.warning(
            "--max_tokens %d may cut off the longest answer the schema allows (%d characters, about %d tokens); "
            "raise --max_tokens or lower --max_context_chars",
            args.max_tokens,
            longest,
            -(-longest // CHARS_PER_TOKEN),
        )


def data_shape(facts: dict) -> Shape:
    """The Shape that `load_sources` recorded in the facts."""
    shape = facts["shape"]
    return Shape(
        generic=shape["wording"] == "generic",
        long_answer=shape["long_answer"],
        max_chars=shape["max_chars"],
        min_chars=shape["min_chars"],
        question_pattern=shape["question_pattern"],
    )


async def execute(args: AugmentArguments) -> dict[str, Any]:
    """The whole run; returns the summary. Raises AugmentError on bad input before any request; bad input found
    before the output folder is locked (the data, the key, the server) leaves no file behind."""
    started = time.monotonic()
    sources, leak_index, facts = load_sources(args)
    price_table(args)  # a broken price table stops the run before any request
    shape = data_shape(facts)
    warn_short_answers(args, shape)
    requests = [
        make_request(
            args,
            kind,
            source,
            variant,
            {"source": n, "source_id": source["id"], "kind": kind, "variant": variant},
            shape,
        )
        for n, source in enumerate(sources)
        for kind in KINDS_BY_STRATEGY[args.strategy]
        for variant in range(args.num_variants)
    ]
    run = Run(args)
    try:
        if args.backend == "openai" and any(r not in run.cache for r in requests):
            await run.connect()  # a refused key or an unreachable server: stopped before anything is written
        lock_run_folder(args.output_dir, LOCK_HOLDER)  # a second run on this folder is refused, naming this one
        try:
            prepare_output_dir(args, facts)
            answers = await run.answer(requests)
            rows, rejected = await assemble(args, run, sources, requests, answers, leak_index, shape)
            await run.close()  # the backend's counts join the run's
            summary = summarize(
                args, facts, sources, requests, answers, rows, rejected, run, time.monotonic() - started
            )
            write_outputs(args, rows, rejected, summary, shape)
            if args.push_to_hub:
                push_dataset(args.output_dir, args.hub_dataset_id, private=args.hub_private)
        finally:
            release_run_folder(args.output_dir)
    finally:
        await run.close()
    return summary


async def assemble(
    args: AugmentArguments,
    run: Run,
    sources: list[Example],
    requests: list[Request],
    answers: dict[str, Answer | str],
    leak_index: LeakIndex,
    shape: Shape = PUBMEDQA,
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
        args.min_context_ratio,
        shape.long_answer,
    )
    rows: list[dict] = [_original(s, shape) for s in sources] if args.strategy == "combined" else []
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
        if not shape.long_answer:  # the data set has none: one the model wrote anyway is not kept anywhere
            output.pop("long_answer", None)
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
        probs = None
        if args.teacher_probs and answer.decision_logprobs is not None:
            probs = label_distribution(answer.decision_logprobs, labels)
        candidates.append((request, _row(args, source, kind, variant, output, shape, probs)))
    if args.verify:
        candidates = await verify(args, run, sources, candidates, rejected, shape)
    rows.extend(row for _, row in candidates)
    return rows, rejected


async def verify(
    args: AugmentArguments,
    run: Run,
    sources: list[Example],
    candidates: list[tuple[Request, dict]],
    rejected: list,
    shape: Shape = PUBMEDQA,
) -> list[tuple[Request, dict]]:
    """The LLM answers each rewritten question; a rewrite whose answer differs from its source's is dropped."""
    checks = {
        request.key: make_request(
            args, "verify", row, request.meta["variant"], dict(request.meta, kind="verify"), shape
        )
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
        "teacher_probs": teacher_probs_summary(args, rows),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "test_overlap_rejected": reasons.get("test_overlap", 0),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "tokens_in_this_run": run.stats.get("tokens_in_this_run", 0),
        "tokens_out_this_run": run.stats.get("tokens_out_this_run", 0),
        "estimated_cost_usd": estimate_cost(args, tokens_in, tokens_out),
        "wall_time_s": round(wall_time, 3),
        "sampling": sampling(args),
        "num_variants": args.num_variants,
        "verify": args.verify,
        "json_mode": args.json_mode,
        "check_numbers": args.check_numbers,
        "max_repeat_share": args.max_repeat_share,
        "min_context_ratio": args.min_context_ratio,
        "max_context_words": args.max_context_words,
    }


def teacher_probs_summary(args: AugmentArguments, rows: list[dict]) -> dict[str, Any]:
    """How many accepted items carry the teacher's label distribution, by where it came from (one source per
    backend: the cache keys answers by backend too)."""
    items = sum("teacher_probs" in r for r in rows)
    return {
        "requested": args.teacher_probs,
        "accepted": items,
        "by_source": {SOURCES[args.backend]: items} if items else {},
    }


def write_outputs(
    args: AugmentArguments, rows: list[dict], rejected: list[dict], summary: dict, shape: Shape = PUBMEDQA
) -> None:
    """Each file is replaced atomically: a kill leaves the old complete file or the new one, never half.
    data.jsonl names its fields by the data set's own columns (summary["columns"]), so that the recipe's data
    block reads it back."""
    out = Path(args.output_dir)
    columns = summary["columns"]
    atomic_write_jsonl(out / "data.jsonl", ({columns.get(k, k): v for k, v in row.items()} for row in rows))
    atomic_write_jsonl(out / "rejected.jsonl", rejected)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(
        out / "README.md",
        dataset_card(summary, rows, instructions(args.prompt_version, shape), args.prompt_version),
    )
    logger.info(
        "%d accepted, %d rejected -> %s (%s)",
        len(rows),
        len(rejected),
        out / "data.jsonl",
        json.dumps(summary["rejected_by_reason"]),
    )
