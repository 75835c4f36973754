"""Retry policy: the backoff schedule, jitter bounds, the cap, and when it stops."""

from __future__ import annotations

import random

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import RetryConfig
from engine.execution import Forbidden, RateLimited, RetryExhausted, RetryPolicy, ServerError, is_retryable

CONFIG = RetryConfig(max_attempts=5, base_delay_s=0.1, multiplier=2.0, jitter_low=0.85, jitter_high=1.15, max_delay_s=30.0)


def test_delays_follow_the_exponential_schedule_at_the_jitter_bounds() -> None:
    low = RetryPolicy(CONFIG, random=lambda: 0.0)
    high = RetryPolicy(CONFIG, random=lambda: 1.0)
    mid = RetryPolicy(CONFIG, random=lambda: 0.5)
    assert [round(mid.delay(n), 12) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert [round(low.delay(n), 12) for n in range(1, 4)] == [0.085, 0.17, 0.34]
    assert [round(high.delay(n), 12) for n in range(1, 4)] == [0.115, 0.23, 0.46]


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32))
def test_every_delay_is_within_jitter_of_nominal_or_at_the_cap(retry_number: int, seed: int) -> None:
    policy = RetryPolicy(CONFIG, random=random.Random(seed).random)
    delay = policy.delay(retry_number)
    nominal = 0.1 * 2.0 ** (retry_number - 1)
    assert delay <= CONFIG.max_delay_s
    if nominal * 1.15 <= CONFIG.max_delay_s:
        assert nominal * 0.85 - 1e-12 <= delay <= nominal * 1.15 + 1e-12
    else:
        assert delay >= min(CONFIG.max_delay_s, nominal * 0.85) - 1e-12


def test_the_cap_holds_past_the_knee_and_for_huge_retry_numbers() -> None:
    policy = RetryPolicy(CONFIG, random=lambda: 1.0)
    assert policy.delay(9) == pytest.approx(0.1 * 256 * 1.15)  # 29.44 s: just under the cap
    assert policy.delay(10) == 30.0  # 58.9 s nominal is capped
    assert policy.delay(5000) == 30.0  # no overflow
    with pytest.raises(ValueError):
        policy.delay(0)


async def test_call_retries_transient_failures_with_the_scheduled_sleeps() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(CONFIG, sleep=sleep, random=lambda: 0.5)
    failures = [ServerError(503, None, "down"), httpx.ReadTimeout("slow"), RateLimited(429, 42910000, "slow down")]

    async def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert await policy.call(flaky) == "ok"
    assert slept == pytest.approx([0.1, 0.2, 0.4])


async def test_call_stops_at_max_attempts_with_a_clear_error() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def always_down() -> None:
        nonlocal calls
        calls += 1
        raise ServerError(503, None, "down")

    with pytest.raises(RetryExhausted, match="gave up after 5 attempts: ServerError: HTTP 503: down") as info:
        await RetryPolicy(CONFIG, sleep=sleep, random=lambda: 0.5).call(always_down)
    assert calls == 5 and len(slept) == 4  # no sleep after the last attempt
    assert isinstance(info.value.__cause__, ServerError)


async def test_call_does_not_retry_a_non_retryable_error() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise Forbidden(403, 40310000, "insufficient buying power")

    async def no_sleep(seconds: float) -> None:
        raise AssertionError("must not sleep")

    with pytest.raises(Forbidden):
        await RetryPolicy(CONFIG, sleep=no_sleep).call(refused)
    assert calls == 1


async def test_custom_predicate_decides() -> None:
    async def sleep(seconds: float) -> None:
        pass

    attempts = 0

    async def value_error() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("transient in this caller's eyes")

    with pytest.raises(RetryExhausted):
        await RetryPolicy(RetryConfig(max_attempts=3), sleep=sleep).call(value_error, retry_if=lambda e: isinstance(e, ValueError))
    assert attempts == 3


def test_default_predicate() -> None:
    assert is_retryable(ServerError(500, None, "x")) and is_retryable(RateLimited(429, None, "x"))
    assert is_retryable(httpx.ConnectError("refused")) and is_retryable(httpx.RemoteProtocolError("dropped"))
    assert not is_retryable(Forbidden(403, None, "x")) and not is_retryable(ValueError("x"))


def test_config_rejects_inverted_jitter() -> None:
    from engine.config import ConfigError, TickforgeConfig

    with pytest.raises(ConfigError, match="jitter_low"):
        TickforgeConfig.load(execution={"retry": {"jitter_low": 1.2, "jitter_high": 1.1}})
