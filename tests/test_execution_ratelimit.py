"""Rate limiter: the token bucket on a fake clock, and the server's rate-limit signals."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from engine.execution import RateLimiter


class FakeClock:
    """Monotonic and wall clocks that move only when the limiter sleeps."""

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self.now = 0.0
        self.wall_offset = wall
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_offset + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(clock: FakeClock, rate_per_min: float, burst: float | None = None) -> RateLimiter:
    return RateLimiter(rate_per_min, burst=burst, clock=clock.monotonic, wall_clock=clock.wall, sleep=clock.sleep)


async def test_burst_then_paced_at_the_refill_rate() -> None:
    clock = FakeClock()
    bucket = limiter(clock, rate_per_min=60, burst=5)  # one request a second after a burst of five
    for _ in range(5):
        await bucket.acquire()
    assert clock.now == 0.0  # the burst went through without waiting
    for _ in range(3):
        await bucket.acquire()
    assert clock.now == pytest.approx(3.0)
    assert bucket.waited_s == pytest.approx(3.0)


def test_a_token_given_back_is_there_for_the_next_request_but_never_beyond_the_burst() -> None:
    clock = FakeClock()
    bucket = limiter(clock, rate_per_min=60, burst=2)
    assert bucket.try_acquire() and bucket.try_acquire() and not bucket.try_acquire()
    bucket.give_back()  # taken for a request that was not sent after all
    assert bucket.try_acquire() and not bucket.try_acquire()
    bucket.give_back()
    bucket.give_back()
    bucket.give_back()
    assert bucket.tokens == 2.0


async def test_default_burst_is_one_minute_of_requests() -> None:
    clock = FakeClock()
    bucket = limiter(clock, rate_per_min=200)
    for _ in range(200):
        await bucket.acquire()
    assert clock.now == 0.0
    await bucket.acquire()
    assert clock.now == pytest.approx(60 / 200)


async def test_remaining_header_lowers_the_bucket_and_zero_holds_until_reset() -> None:
    clock = FakeClock()
    bucket = limiter(clock, rate_per_min=200)
    bucket.observe(200, {"x-ratelimit-remaining": "2", "x-ratelimit-reset": str(int(clock.wall()) + 60)})
    assert bucket.tokens == pytest.approx(2.0)
    bucket.observe(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(clock.wall() + 7)})
    await bucket.acquire()
    assert clock.now == pytest.approx(7.0)


async def test_429_retry_after_holds_everyone_seconds_or_http_date() -> None:
    clock = FakeClock()
    bucket = limiter(clock, rate_per_min=200)
    bucket.observe(429, {"retry-after": "3"})
    await bucket.acquire()
    assert clock.now == pytest.approx(3.0)
    date = email.utils.formatdate(clock.wall() + 10, usegmt=True)
    bucket.observe(429, {"retry-after": date})
    await bucket.acquire()
    assert clock.now == pytest.approx(3.0 + 10.0, abs=1.0)  # HTTP dates have one-second resolution
    before = clock.now
    bucket.observe(429, {})  # no Retry-After: a default pause, not a hammering retry
    await bucket.acquire()
    assert clock.now - before == pytest.approx(1.0)


async def test_a_skewed_reset_never_holds_longer_than_a_minute_and_a_past_one_not_at_all() -> None:
    clock = FakeClock()
    bucket = limiter(clock, rate_per_min=6000)
    bucket.observe(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(clock.wall() + 3600)})
    await bucket.acquire()
    assert clock.now == pytest.approx(60.0)
    before = clock.now
    bucket.observe(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(clock.wall() - 5)})
    await bucket.acquire()
    assert clock.now - before == pytest.approx(0.01)  # only the bucket's own refill of one token


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeClock()
    bucket = limiter(clock, rate_per_min=60, burst=1)
    await bucket.acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert clock.now == pytest.approx(5.0)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(60, burst=0.5)
    bucket = RateLimiter(60)
    bucket.observe(200, {"x-ratelimit-remaining": "lots"})  # junk headers are ignored, not fatal
    assert bucket.tokens == pytest.approx(60.0)
