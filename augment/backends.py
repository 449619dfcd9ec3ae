"""Backends that turn chat requests into answers: any OpenAI-compatible server, or a local model.

Both expose `preflight()` (checks that fail before any generation request) and
`run(requests, on_answer, on_failure)`, which calls `on_answer` as soon as each answer arrives so the
caller can cache it before anything else happens. Each takes a settings object holding only what it
uses (`OpenAISettings`, `TransformersSettings`), built from the run's arguments by `from_arguments`."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from domainqa.redaction import Redactor

from .arguments import AugmentArguments, AugmentError
from .prompts import JSON_OBJECT, response_format, without_max_lengths
from .requests import Answer, Request
from .retry import RateLimiter, RetryPolicy, parse_retry_after, retryable_status
from .teacher_probs import SOURCES, DecisionLogprobs, decision_token_index, from_openai_logprobs, label_prefix

logger = logging.getLogger(__name__)
TOP_LOGPROBS = 20  # the most alternatives per token OpenAI's chat completions give

OnAnswer = Callable[[Request, Answer], None]
OnFailure = Callable[[Request, str], None]


class RequestFailed(Exception):
    """A request that failed for good (after its retries, or with an error that retrying cannot fix)."""


def estimate_tokens(request: Request) -> int:
    # ~4 characters per token for English; only used for the tokens-per-minute limit before the real count.
    return sum(len(m["content"]) for m in request.messages) // 4 + int(request.params.get("max_tokens", 0))


def split_query(base_url: str | None) -> tuple[str | None, dict[str, str] | None]:
    """A base URL without its query, and the query's parameters: the client appends each endpoint's path to
    the base URL, which would land inside a query (`/v1?api_key=K` + `/models`); sent as the client's default
    query instead, a server that takes its key as `?api_key=` gets it on every request."""
    if not base_url:
        return base_url, None
    parts = urllib.parse.urlsplit(base_url)
    if not parts.query:
        return base_url, None
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit(parts._replace(query="", fragment="")), query


@dataclass(frozen=True)
class OpenAISettings:
    """What the openai backend uses: the server, the output format, and how requests are paced and retried."""

    base_url: str | None
    api_key_env: str  # only named in messages: the key itself is passed apart, never stored with settings
    request_timeout: float
    max_concurrency: int
    json_mode: str
    teacher_probs: bool  # ask for the token log-probabilities
    requests_per_minute: float | None
    tokens_per_minute: float | None
    retry: RetryPolicy

    @classmethod
    def from_arguments(cls, args: AugmentArguments) -> OpenAISettings:
        return cls(
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            request_timeout=args.request_timeout,
            max_concurrency=args.max_concurrency,
            json_mode=args.json_mode,
            teacher_probs=args.teacher_probs,
            requests_per_minute=args.requests_per_minute,
            tokens_per_minute=args.tokens_per_minute,
            retry=RetryPolicy(args.max_retries, args.backoff_base, args.backoff_max),
        )


class OpenAIBackend:
    """The official `openai` client against OpenAI or any compatible server, with our own retry loop
    (the client's retries are off) so that Retry-After, jitter and the retry counts are ours."""

    name = "openai"

    def __init__(self, settings: OpenAISettings, api_key: str, redact: Redactor):
        from openai import AsyncOpenAI

        self.settings = settings
        self.redact = redact
        base_url, query = split_query(settings.base_url)
        self.client = AsyncOpenAI(
            api_key=api_key, base_url=base_url, default_query=query, max_retries=0, timeout=settings.request_timeout
        )
        self.limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
        # The strongest output format the server has not refused (see FORMATS).
        self.output_format: str | None = None if settings.json_mode == "off" else FORMATS[0]
        self.logprobs = settings.teacher_probs  # until the server refuses them
        self.stats: Counter = Counter()
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def preflight(self) -> None:
        """One GET /models: a wrong key or an unreachable server stops the run before any generation."""
        import openai

        base_url = self.settings.base_url
        where = self.redact(base_url) if base_url else "the OpenAI API"
        try:
            await self.client.models.list()
        except openai.AuthenticationError as e:
            raise AugmentError(
                f"{where} refused the API key from ${self.settings.api_key_env} (HTTP 401): {self.redact(_message(e))}"
            ) from None
        except openai.PermissionDeniedError as e:
            raise AugmentError(f"{where} denied access (HTTP 403): {self.redact(_message(e))}") from None
        except openai.NotFoundError:
            logger.info("%s has no /models endpoint; skipping the model check", where)
        except openai.APIStatusError as e:
            if e.status_code >= 500:
                logger.warning("%s answered HTTP %s to /models; going on", where, e.status_code)
            else:
                raise AugmentError(f"{where} answered HTTP {e.status_code}: {self.redact(_message(e))}") from None
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise AugmentError(f"cannot reach {where}: {self.redact(e)} (check --base_url)") from None

    def request_body(self, request: Request, logprobs: bool = True) -> dict:
        """The chat completion request's JSON body, in the output format the server has not refused, asking for
        the token log-probabilities when `logprobs` and the run wants them and the server has not refused them.
        They are not part of the request's cache key: they do not change the answer."""
        body = {"model": request.model, "messages": request.messages, **request.params}
        if logprobs and self.logprobs:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        if self.output_format == "json_schema" and request.schema is not None:
            body["response_format"] = response_format(request.schema)
        elif self.output_format == "json_object+schema" and request.schema is not None:
            body["response_format"] = {**JSON_OBJECT, "schema": without_max_lengths(request.schema)}
        elif self.output_format is not None:
            body["response_format"] = JSON_OBJECT
        return body

    def _weaken_format(self, refused: str) -> None:
        """The server refused `refused`: ask for the next weaker format (said once, though several
        requests in flight may meet the refusal)."""
        if self.output_format != refused:
            return
        self.output_format = FORMATS[FORMATS.index(refused) + 1]
        logger.warning("the server refused response_format %s; asking for %s", refused, self.output_format or "text")

    def _drop_logprobs(self) -> None:
        """The server refused logprobs: ask for none for the rest of the run (said once), recording no
        teacher_probs."""
        if not self.logprobs:
            return
        self.logprobs = False
        logger.warning("the server refused logprobs; asking for none: its answers record no teacher_probs")

    async def complete(self, request: Request) -> Answer:
        """One request with retries; raises `RequestFailed` with a redacted reason."""
        import openai

        attempt = 0
        while True:
            estimate = estimate_tokens(request)
            await self.limiter.acquire(estimate)
            self.stats["sent"] += 1
            asked = self.output_format
            try:
                response = await self._create(request)
            except FormatRefused as e:
                if self.settings.json_mode == "auto":
                    self._weaken_format(asked)
                    continue
                raise RequestFailed(f"the server refused response_format {asked}: {self.redact(e)}") from None
            except LogprobsRefused:
                self._drop_logprobs()
                continue
            except openai.BadRequestError as e:
                raise RequestFailed(f"HTTP 400: {self.redact(_message(e))}") from None
            except (openai.APIStatusError, openai.APIConnectionError, NotACompletion) as e:
                # APITimeoutError is an APIConnectionError; 408, 409, 429 and 5xx are retried (retry.py).
                if isinstance(e, openai.APIStatusError) and not retryable_status(e.status_code):
                    raise RequestFailed(f"HTTP {e.status_code}: {self.redact(_message(e))}") from None
                reason = _reason(e)
                if attempt >= self.settings.retry.max_retries:
                    self.stats["failed"] += 1
                    raise RequestFailed(f"{self.redact(reason)} after {attempt + 1} attempts") from None
                retry_after = parse_retry_after(getattr(getattr(e, "response", None), "headers", None))
                delay = self.settings.retry.delay(attempt, retry_after)
                self.stats["retries"] += 1
                self.stats[f"retry_{reason.split(':')[0]}"] += 1
                logger.info("retrying in %.2fs (%s)", delay, self.redact(reason))
                attempt += 1
                await self.sleep(delay)
                continue
            except openai.APIResponseValidationError as e:
                raise RequestFailed(f"invalid response: {self.redact(e)}") from None
            usage = response.usage
            answer = Answer(
                text=(response.choices[0].message.content or "") if response.choices else "",
                tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
                tokens_out=getattr(usage, "completion_tokens", 0) or 0,
                decision_logprobs=_decision_logprobs(response),
            )
            self.limiter.settle(estimate, answer.tokens_in + answer.tokens_out)
            return answer

    async def _create(self, request: Request):
        """The chat completion for one request; a successful answer that holds none raises NotACompletion."""
        import openai

        body = self.request_body(request)
        try:
            response = await self.client.chat.completions.create(**body)
        except json.JSONDecodeError as e:  # a JSON body cut off in transit
            raise NotACompletion(f"not a completion: invalid JSON ({e.msg})") from None
        except openai.APIStatusError as e:
            # Servers refuse an unknown response_format in different ways: OpenAI and vLLM answer 400,
            # llama-cpp-python's request validation 422, older llama.cpp servers 500.
            if "response_format" in body and e.status_code in (400, 422, 500) and "response_format" in _message(e):
                raise FormatRefused(f"HTTP {e.status_code}: {_message(e)}") from None
            # A model without log-probabilities (OpenAI's reasoning models, some servers) answers 400.
            if "logprobs" in body and e.status_code == 400 and "logprobs" in _message(e):
                raise LogprobsRefused(f"HTTP {e.status_code}: {_message(e)}") from None
            raise
        if not hasattr(response, "choices"):  # not JSON at all (a proxy's page): the client returns the text
            raise NotACompletion(f"not a completion: a {type(response).__name__} body")
        return response

    async def run(self, requests: Sequence[Request], on_answer: OnAnswer, on_failure: OnFailure) -> None:
        semaphore = asyncio.Semaphore(self.settings.max_concurrency)

        async def one(request: Request) -> None:
            async with semaphore:
                try:
                    answer = await self.complete(request)
                except RequestFailed as e:
                    on_failure(request, str(e))
                    return
            on_answer(request, answer)

        await asyncio.gather(*(one(r) for r in requests))

    async def close(self) -> None:
        await self.client.close()


def _message(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(error, "message", error))


# Output formats from strongest to weakest: OpenAI's JSON schema; the same schema in the json_object form
# that llama-cpp-python's server takes; any JSON object; plain text (None).
FORMATS = ("json_schema", "json_object+schema", "json_object", None)


class FormatRefused(Exception):
    """The server does not support the response_format asked for."""


class LogprobsRefused(Exception):
    """The server does not give token log-probabilities."""


def _decision_logprobs(response) -> DecisionLogprobs | None:
    """The alternatives where the decision starts, from a completion's logprobs (None when it holds none)."""
    logprobs = getattr(response.choices[0], "logprobs", None) if response.choices else None
    content = getattr(logprobs, "content", None)
    if not content:
        return None
    return from_openai_logprobs([t.model_dump() for t in content])


class NotACompletion(Exception):
    """A successful HTTP answer that holds no chat completion; transient, like a dropped connection."""


def _reason(error: Exception) -> str:
    import openai

    if isinstance(error, NotACompletion):
        return str(error)
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection: dropped or refused"
    return f"http_{error.status_code}: {_message(error)}"


@dataclass(frozen=True)
class TransformersSettings:
    """What the local backend uses: the model, how it is loaded, and how prompts are batched and decoded."""

    model: str
    dtype: str
    batch_size: int
    constrained: bool  # compile the answer schemas' grammars (json_mode not off)
    teacher_probs: bool  # keep the model's scores where the decision starts

    @classmethod
    def from_arguments(cls, args: AugmentArguments) -> TransformersSettings:
        return cls(
            model=args.model,
            dtype=args.dtype,
            batch_size=args.batch_size,
            constrained=args.json_mode != "off",
            teacher_probs=args.teacher_probs,
        )


class TransformersBackend:
    """A local causal LM with batched generation: the whole method runs offline (default: SmolLM2).

    With a request schema (every request unless --json_mode off), decoding is constrained by xgrammar:
    at each step a token bitmask computed from the schema's grammar masks the logits, so every answer
    that ends within max_tokens is a JSON object that satisfies the schema."""

    name = "transformers"

    def __init__(self, settings: TransformersSettings):
        self.settings = settings
        self.model = None
        self.tokenizer = None
        self.grammars = GrammarCache()
        self.stats: Counter = Counter()
        self.token_texts: list[str] | None = None  # each token id's text, made when first needed
        self.candidates: dict[tuple[str, ...], list[int]] = {}  # label set -> the tokens that begin a label

    async def preflight(self) -> None:
        from domainqa.modeling import load_model, load_tokenizer

        name = self.settings.model
        try:
            self.tokenizer = load_tokenizer(name, padding_side="left")
            self.model = load_model(name, dtype=self.settings.dtype).eval()
        except (OSError, ValueError, RuntimeError) as e:
            raise AugmentError(f"cannot load the local model {name!r}: {e}") from None
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise AugmentError(f"the local model {name!r} has no chat template; use an instruct model")
        if self.settings.constrained:
            self.grammars.setup(self.tokenizer, self.model)

    def _generate(self, batch: Sequence[Request]) -> list[Answer]:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in batch
        ]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        params = batch[0].params
        sample = params["temperature"] > 0
        recorder = self._decision_scores(batch[0])
        torch.manual_seed(params["seed"])  # same batch, same seed: same answers
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=params["max_tokens"],
                do_sample=sample,
                temperature=params["temperature"] if sample else None,
                top_p=params["top_p"] if sample else None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                # The recorder first: the grammar masks the scores in place.
                logits_processor=([recorder] if recorder else [])
                + self.grammars.processors(batch)
                + repetition_processors(params, inputs),
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        answers = []
        for row, (mask, tokens) in enumerate(zip(inputs["attention_mask"], new_tokens, strict=True)):
            n_out = int((tokens != self.tokenizer.pad_token_id).sum())
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            decision = recorder.decision(row, tokens.tolist()) if recorder else None
            answers.append(Answer(text=text, tokens_in=int(mask.sum()), tokens_out=n_out, decision_logprobs=decision))
        return answers

    def _decision_scores(self, request: Request) -> DecisionScores | None:
        """A recorder of the scores of the tokens that begin a label of the request's schema; None when the run
        records no teacher_probs or the request has no schema naming the labels (json_mode off)."""
        labels = tuple(((request.schema or {}).get("properties") or {}).get("final_decision", {}).get("enum") or ())
        if not self.settings.teacher_probs or not labels:
            return None
        if self.token_texts is None:
            self.token_texts = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        if labels not in self.candidates:
            self.candidates[labels] = [i for i, text in enumerate(self.token_texts) if label_prefix(text, labels)]
        return DecisionScores(self.candidates[labels], self.token_texts)

    async def run(self, requests: Sequence[Request], on_answer: OnAnswer, on_failure: OnFailure) -> None:
        # A batch decodes until its longest answer ends, and answers grow with their prompts: batching
        # prompts of similar length wastes fewer steps on finished rows. Outputs do not depend on this
        # order (the runner rebuilds them in source order from the cache).
        ordered = sorted(requests, key=_batch_order)
        for batch in batches(ordered, self.settings.batch_size):
            self.stats["sent"] += len(batch)
            try:
                answers = await asyncio.to_thread(self._generate, batch)
            except RuntimeError as e:  # e.g. out of memory: record and go on
                for request in batch:
                    on_failure(request, f"generation failed: {e}")
                continue
            for request, answer in zip(batch, answers, strict=True):
                on_answer(request, answer)

    async def close(self) -> None:
        pass


class DecisionScores:
    """A logits processor that changes nothing: at every step it keeps the log-probabilities the model itself
    gives the tokens that begin a label (over the whole vocabulary, before the grammar, the repetition penalty
    and the sampling settings touch the scores), so that the step which wrote the decision's first token can
    be read after generation."""

    def __init__(self, candidate_ids: list[int], token_texts: list[str]):
        self.ids = candidate_ids
        self.texts = token_texts
        self.steps: list = []  # one (batch, candidates) tensor per generation step

    def __call__(self, input_ids, scores):
        self.steps.append(scores.float().log_softmax(-1)[:, self.ids].cpu())
        return scores

    def decision(self, row: int, tokens: Sequence[int]) -> DecisionLogprobs | None:
        """The alternatives where the decision value of batch row `row` starts (its generated `tokens`)."""
        texts = [self.texts[t] if t < len(self.texts) else "" for t in tokens]  # padding rows of the output layer
        index = decision_token_index(texts)
        if index is None or index >= len(self.steps) or not self.ids:
            return None
        values = self.steps[index][row].tolist()
        # A token the model's own settings rule out (-inf) has no probability: leaving it out changes nothing.
        alternatives = [[self.texts[i], v] for i, v in zip(self.ids, values, strict=True) if math.isfinite(v)]
        return DecisionLogprobs(source=SOURCES["transformers"], token=texts[index], alternatives=alternatives)


def repetition_processors(params: dict, inputs) -> list:
    """transformers' repetition penalty on the answer's own tokens: prompts are left-padded to one length, so
    ignoring that many leading tokens leaves the source text free to quote."""
    penalty = params.get("repetition_penalty", 1.0)
    if penalty == 1.0:
        return []
    from transformers import RepetitionPenaltyLogitsProcessor

    return [RepetitionPenaltyLogitsProcessor(float(penalty), prompt_ignore_length=inputs["input_ids"].shape[1])]


def batches(requests: Sequence[Request], size: int) -> list[list[Request]]:
    """Batches of at most `size` requests, in order, each with one schema and one set of sampling
    parameters (one generate call samples them all alike)."""
    out: list[list[Request]] = []
    for request in requests:
        if out and len(out[-1]) < size and _same_call(out[-1][0], request):
            out[-1].append(request)
        else:
            out.append([request])
    return out


def _batch_order(request: Request) -> tuple[str, int]:
    """Requests that can share a generate call together, then by prompt length."""
    call = json.dumps([request.schema, request.params], sort_keys=True)
    return call, sum(len(m["content"]) for m in request.messages)


def _same_call(a: Request, b: Request) -> bool:
    return a.schema == b.schema and a.params == b.params


class GrammarCache:
    """xgrammar grammars compiled once per schema for one tokenizer, and their logits processors."""

    def __init__(self) -> None:
        self.compiler = None
        self.compiled: dict[str, object] = {}

    def setup(self, tokenizer, model) -> None:
        import xgrammar

        # The model's output layer may be wider than the tokenizer (padding rows); the bitmask must cover it.
        vocab_size = max(model.config.vocab_size, len(tokenizer))
        eos = model.generation_config.eos_token_id
        stop = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop)
        self.compiler = xgrammar.GrammarCompiler(info)

    def grammar(self, schema: dict):
        # Not sorted: the grammar writes the properties in the schema's order (question first, decision last).
        key = json.dumps(schema)
        if key not in self.compiled:
            # Compact separators: fewer tokens per answer, and the same JSON for the parser.
            self.compiled[key] = self.compiler.compile_json_schema(key, any_whitespace=False)
        return self.compiled[key]

    def processors(self, batch: Sequence[Request]) -> list:
        """A fresh logits processor for one generate call (xgrammar's keeps per-call state), or none."""
        if self.compiler is None or batch[0].schema is None:
            return []
        from xgrammar.contrib.hf import LogitsProcessor

        return [LogitsProcessor([self.grammar(r.schema) for r in batch])]
