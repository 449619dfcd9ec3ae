"""The retry policy of requests to a server: which failures are retried (`retryable_status`), how long to wait
before each retry (`RetryPolicy`: exponential backoff with jitter, the server's Retry-After first), and how fast
requests go out (`RateLimiter`: requests and tokens per minute)."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass

RETRY_AFTER_CAP = 300.0  # never sleep longer than this on a server's say-so
# HTTP statuses worth another try, as the openai client's own retries have them: request timeout, conflict
# (e.g. a resource another request holds), rate limit; and every server error (5xx).
RETRY_STATUSES = (408, 409, 429)


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


class RateLimiter:
    """Paces requests evenly to `rpm` and keeps estimated tokens within `tpm`.

    Requests are spaced 60/rpm seconds apart (no burst at the start of a minute), which uses the whole
    allowance without ever exceeding it in any window. Tokens use a bucket holding 10 seconds' worth;
    the estimate taken before a request is corrected with the real usage after it."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, clock=time.monotonic):
        self.interval = 60.0 / rpm if rpm else 0.0
        self.tpm = tpm
        self.clock = clock
        self._next = 0.0
        self._capacity = tpm / 6.0 if tpm else 0.0
        self._tokens = self._capacity
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.tpm / 60.0)
        self._stamp = now

    async def acquire(self, tokens: int = 0) -> None:
        async with self._lock:  # waiters queue in order: pacing is first come, first served
            if self.interval:
                now = self.clock()
                wait = self._next - now
                self._next = max(now, self._next) + self.interval
                if wait > 0:
                    await asyncio.sleep(wait)
            if self.tpm:
                need = min(tokens, self._capacity)  # a request larger than the bucket waits for a full bucket
                self._refill()
                while self._tokens < need:
                    await asyncio.sleep((need - self._tokens) * 60.0 / self.tpm)
                    self._refill()
                self._tokens -= need

    def settle(self, estimated: int, actual: int) -> None:
        """Charge the difference between a request's real and estimated tokens."""
        if self.tpm:
            self._tokens -= actual - estimated


@dataclass
class RetryPolicy:
    """How often a failed request is tried again, and how long to wait before each try."""

    max_retries: int = 6
    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None, rng=random.random) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
        backoff = min(self.cap, self.base * 2**attempt)
        return backoff * (0.5 + rng() * 0.5)  # "equal jitter": spreads clients apart, keeps a floor


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
