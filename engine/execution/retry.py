"""Retry policy: exponential backoff with bounded jitter and a delay cap, for any async call.

Delay before retry ``n`` (n = 1 after the first failure) is
``min(max_delay_s, base_delay_s * multiplier ** (n - 1) * U(jitter_low, jitter_high))``.
The cap applies after the jitter, so no delay ever exceeds ``max_delay_s``. Clock, sleep and random
source are injectable so tests can check the schedule without waiting for it.
Whether a failure is worth retrying is the caller's call (``retry_if``): only it knows whether the
operation is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from engine.config import RetryConfig
from engine.execution.errors import RateLimited, RetryExhausted, ServerError

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """Transient failures: timeouts, dropped connections, 429 and 5xx. Any other 4xx is final."""
    return isinstance(exc, (RateLimited, ServerError, httpx.TimeoutException, httpx.TransportError))


class RetryPolicy:
    """Backoff schedule plus a ``call`` helper that retries an async function by it."""

    def __init__(
        self,
        config: RetryConfig | None = None,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.config = config or RetryConfig()
        self._sleep = sleep
        self._random = random

    @property
    def max_attempts(self) -> int:
        return self.config.max_attempts

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        cfg = self.config
        try:
            raw = cfg.base_delay_s * cfg.multiplier ** (retry_number - 1)
        except OverflowError:  # huge retry numbers: the cap decides anyway
            raw = float("inf")
        jitter = cfg.jitter_low + (cfg.jitter_high - cfg.jitter_low) * self._random()
        return min(cfg.max_delay_s, raw * jitter)

    async def wait(self, retry_number: int) -> float:
        """Sleep for ``delay(retry_number)`` and return the delay slept."""
        seconds = self.delay(retry_number)
        await self._sleep(seconds)
        return seconds

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retry_if: Callable[[BaseException], bool] = is_retryable,
        what: str = "call",
    ) -> T:
        """Await ``fn()`` until it succeeds, a failure is not retryable, or attempts run out.

        A non-retryable failure is re-raised as is; running out of attempts raises ``RetryExhausted``
        with the last failure as its cause.
        """
        attempts = self.config.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await fn()
            except Exception as exc:
                if not retry_if(exc):
                    raise
                if attempt == attempts:
                    raise RetryExhausted(attempt, exc) from exc
                delay = await self.wait(attempt)
                log.debug("%s failed (%s); retry %d in %.3fs", what, type(exc).__name__, attempt, delay)
        raise AssertionError("unreachable")  # pragma: no cover
