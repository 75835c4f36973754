"""Request rate limiter: an asyncio token bucket that also obeys the server's rate-limit signals.

The bucket holds at most ``burst`` tokens (default: one minute's worth) and refills at
``rate_per_min / 60`` per second; every request takes one. The server knows better than we do
(other clients share the account's limit), so after each response ``observe`` lowers the bucket to
``X-Ratelimit-Remaining`` and, when that reaches zero, holds every request until ``X-Ratelimit-Reset``;
a 429 holds them for its ``Retry-After``. Waiters are served first come, first served. Clocks and
sleep are injectable for deterministic tests.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping

#: never hold requests longer than this on the strength of a header (guards against clock skew)
MAX_SERVER_HOLD_S = 60.0
#: hold after a 429 that carries no usable Retry-After
DEFAULT_RETRY_AFTER_S = 1.0
#: a token counts as whole this close to 1.0 (refill arithmetic leaves float dust)
_WHOLE = 1.0 - 1e-9


class RateLimiter:
    """Token bucket sized to the account's request limit."""

    def __init__(
        self,
        rate_per_min: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate_per_min <= 0:
            raise ValueError("rate_per_min must be positive")
        self.rate_per_s = rate_per_min / 60.0
        self.capacity = float(burst if burst is not None else rate_per_min)
        if self.capacity < 1:
            raise ValueError("burst must allow at least one request")
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._hold_until = float("-inf")
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # total time requests spent waiting here (for metrics)
        self.server_holds = 0  # how often the server's headers made us pause

    @property
    def tokens(self) -> float:
        self._refill(self._clock())
        return self._tokens

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s)
            self._stamp = now

    def try_acquire(self) -> bool:
        """Take a token without waiting, if one is free and nobody is queued."""
        if self._lock.locked():
            return False
        now = self._clock()
        if now < self._hold_until:
            return False
        self._refill(now)
        if self._tokens >= _WHOLE:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def give_back(self) -> None:
        """Return a token taken by ``try_acquire`` for a request that was not sent after all."""
        self._tokens = min(self.capacity, self._tokens + 1.0)

    async def acquire(self) -> None:
        """Wait for a token (no await at all on the fast path)."""
        if self.try_acquire():
            return
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._hold_until:
                    wait = self._hold_until - now
                else:
                    self._refill(now)
                    if self._tokens >= _WHOLE:
                        self._tokens = max(0.0, self._tokens - 1.0)
                        return
                    wait = max((1.0 - self._tokens) / self.rate_per_s, 1e-6)
                self.waited_s += wait
                await self._sleep(wait)

    def hold_for(self, seconds: float) -> None:
        """Hold every request for ``seconds`` from now (never shortens an existing hold)."""
        seconds = min(max(seconds, 0.0), MAX_SERVER_HOLD_S)
        now = self._clock()
        self._hold_until = max(self._hold_until, now + seconds)
        self._refill(now)
        self._tokens = 0.0
        self.server_holds += 1

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Fold one response's rate-limit signals into the bucket."""
        remaining = _number(headers.get("x-ratelimit-remaining"))
        if remaining is not None:
            now = self._clock()
            self._refill(now)
            self._tokens = min(self._tokens, max(remaining, 0.0))
            if remaining <= 0:
                reset = _number(headers.get("x-ratelimit-reset"))
                if reset is not None:
                    self.hold_for(reset - self._wall_clock())
        if status == 429:
            retry_after = _retry_after_s(headers.get("retry-after"), self._wall_clock)
            self.hold_for(DEFAULT_RETRY_AFTER_S if retry_after is None else retry_after)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number else None  # NaN is no signal


def _retry_after_s(value: str | None, wall_clock: Callable[[], float]) -> float | None:
    """``Retry-After`` as seconds: either delay-seconds or an HTTP date."""
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - wall_clock()
