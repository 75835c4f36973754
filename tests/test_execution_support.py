"""Shared fixtures for the execution and paper-broker tests: a real broker on loopback and fast clients.

Test modules import what they need from here; this module holds no tests of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.config import ExecutionConfig, RetryConfig, SimConfig
from engine.execution import AlpacaRestClient, OrderRouter
from engine.sim.broker import PaperBroker, StaticBook

#: a broker that never rate-limits unless a test asks it to
SIM = SimConfig(rate_limit_per_min=100_000, starting_cash=1_000_000.0)
FAST_RETRY = RetryConfig(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)

AAPL_BIDS = [(99.99, 100.0), (99.98, 200.0), (99.97, 500.0)]
AAPL_ASKS = [(100.01, 100.0), (100.02, 200.0), (100.03, 500.0)]


def standard_book() -> StaticBook:
    return StaticBook(
        {
            "AAPL": (AAPL_BIDS, AAPL_ASKS),
            "MSFT": ([(399.90, 50.0), (399.80, 50.0)], [(400.10, 50.0), (400.20, 50.0)]),
            "PENNY": ([(0.5000, 10_000.0)], [(0.5010, 10_000.0)]),
            "BTC/USD": ([(40_000.0, 0.5), (39_990.0, 1.0)], [(40_010.0, 0.5), (40_020.0, 1.0)]),
        }
    )


def fast_execution(**overrides: object) -> ExecutionConfig:
    fields: dict[str, object] = {
        "rate_limit_per_min": 100_000,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "write_timeout_s": 1.0,
        "pool_timeout_s": 1.0,
        "retry": FAST_RETRY,
    }
    fields.update(overrides)
    return ExecutionConfig(**fields)  # type: ignore[arg-type]


def make_client(broker: PaperBroker, **overrides: object) -> AlpacaRestClient:
    return AlpacaRestClient(broker.base_url, SIM.key_id, SIM.secret_key, fast_execution(**overrides))


def auth_headers() -> dict[str, str]:
    return {"APCA-API-KEY-ID": SIM.key_id.get_secret_value(), "APCA-API-SECRET-KEY": SIM.secret_key.get_secret_value()}


@pytest.fixture
def book() -> StaticBook:
    return standard_book()


@pytest.fixture
async def broker(book: StaticBook) -> AsyncIterator[PaperBroker]:
    async with PaperBroker(book, SIM) as running:
        yield running


@pytest.fixture(params=["lane", "httpx"])
async def router(broker: PaperBroker, request: pytest.FixtureRequest) -> AsyncIterator[OrderRouter]:
    """A router whose order submits go over the order lane, or (second run) through httpx."""
    async with OrderRouter(make_client(broker, order_lane=request.param == "lane"), session_id="t") as running:
        yield running
