"""TWAP: the slice plan, and the executor working a parent order against the embedded broker on a fake clock."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_execution_support import AAPL_BIDS, book, broker, router  # noqa: F401

from engine.execution import OrderRouter, TwapExecutor, plan_slices
from engine.sim.broker import PaperBroker, StaticBook

# --- the plan ---------------------------------------------------------------------------------------


def test_even_plan() -> None:
    plan = plan_slices(1000, 300.0, 5)
    assert [s.qty for s in plan] == [200] * 5
    assert [s.at_s for s in plan] == [0.0, 60.0, 120.0, 180.0, 240.0]


def test_remainder_is_spread_and_the_minimum_size_merges_slices() -> None:
    assert [s.qty for s in plan_slices(1003, 60.0, 4)] == [251, 251, 251, 250]
    plan = plan_slices(1000, 600.0, 10, min_slice_qty=150)  # ten slices of 100 would be under the minimum
    assert len(plan) == 6 and sum(s.qty for s in plan) == 1000 and min(s.qty for s in plan) >= 150
    assert [s.at_s for s in plan] == [0.0, 100.0, 200.0, 300.0, 400.0, 500.0]
    assert [s.qty for s in plan_slices(40, 60.0, 5, min_slice_qty=100)] == [40]  # smaller than one slice: send it whole


def test_fractional_steps() -> None:
    plan = plan_slices("1.5", 10.0, 4, min_slice_qty="0.2", qty_step="0.1")
    assert sum(s.qty for s in plan) == Decimal("1.5") and all(s.qty % Decimal("0.1") == 0 for s in plan)
    with pytest.raises(ValueError, match="multiple of qty_step"):
        plan_slices("1.55", 10.0, 4, qty_step="0.1")


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(min_value=1, max_value=100_000),
    n=st.integers(min_value=1, max_value=50),
    min_size=st.integers(min_value=1, max_value=500),
    horizon=st.floats(min_value=1.0, max_value=7200.0),
    randomize=st.floats(min_value=0.0, max_value=0.9),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_any_plan_adds_up_respects_minimum_and_horizon(total, n, min_size, horizon, randomize, seed) -> None:
    plan = plan_slices(total, horizon, n, min_slice_qty=min_size, randomize=randomize, rng=random.Random(seed))
    assert sum(s.qty for s in plan) == total
    assert 1 <= len(plan) <= n
    if total >= min_size:
        assert all(s.qty >= min_size for s in plan)
    times = [s.at_s for s in plan]
    assert times[0] == 0.0 and times == sorted(times) and times[-1] < horizon


def test_bad_parameters() -> None:
    for args in ((0, 60.0, 5), (100, 0.0, 5), (100, 60.0, 0)):
        with pytest.raises(ValueError):
            plan_slices(*args)
    with pytest.raises(ValueError):
        plan_slices(100, 60.0, 5, randomize=1.0)


# --- the executor, on a fake clock ---------------------------------------------------------------


class FakeTime:
    """A clock that jumps when slept on; ``on_sleep`` runs before each jump (e.g. to refresh the book)."""

    def __init__(self, on_sleep=None) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep(self.now, seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def deep_book(book: StaticBook, ask_size: float = 10_000.0) -> None:
    book.set_book("AAPL", AAPL_BIDS, [(100.01, ask_size), (100.02, ask_size)])


async def test_twap_slices_add_up_to_the_parent_inside_the_horizon(router: OrderRouter, broker: PaperBroker, book: StaticBook) -> None:
    deep_book(book)
    fake = FakeTime()
    twap = TwapExecutor(router, "AAPL", "buy", 1000, horizon_s=300.0, slices=5, clock=fake.clock, sleep=fake.sleep)
    result = await twap.run()
    assert result.status == "completed" and result.filled_qty == 1000 and result.remaining_qty == 0
    assert [c.qty for c in result.children] == [200] * 5
    assert result.submit_offsets_s == [0.0, 60.0, 120.0, 180.0, 240.0]
    assert fake.now == 300.0  # it took the whole horizon, not longer
    sent = broker.orders()
    assert len(sent) == 5 and sum(Decimal(o["qty"]) for o in sent) == 1000
    assert all(o["side"] == "buy" and o["type"] == "market" for o in sent)
    (position,) = await router.positions()
    assert position.qty == 1000 and result.avg_price == Decimal("100.01")


async def test_partial_fills_are_replanned_over_the_remaining_slots(router: OrderRouter, broker: PaperBroker, book: StaticBook) -> None:
    # Thin liquidity: 150 shares at the ask, refreshed once per slot (the fake sleep refreshes the book).
    book.set_book("AAPL", AAPL_BIDS, [(100.01, 150.0)])
    fake = FakeTime(on_sleep=lambda now, s: book.set_book("AAPL", AAPL_BIDS, [(100.01, 150.0)]))
    twap = TwapExecutor(router, "AAPL", "buy", 1000, horizon_s=100.0, slices=4, clock=fake.clock, sleep=fake.sleep)
    result = await twap.run()
    # child 1 (250) gets 150 at once and 100 of the next refresh; child 2 (750/3 = 250) the other 50 and
    # 150 more before it is cancelled; child 3 gets 550/2 = 275 to work and fills 150; child 4 all 400 left.
    assert [c.qty for c in result.children] == [250, 250, 275, 400]
    assert [c.filled_qty for c in result.children] == [250, 200, 150, 150]
    assert result.status == "incomplete" and result.filled_qty == 750 and result.remaining_qty == 250
    assert [c.status for c in result.children] == ["filled", "canceled", "canceled", "canceled"]
    assert result.submit_offsets_s == [0.0, 25.0, 50.0, 75.0]
    (position,) = await router.positions()
    assert position.qty == 750 and not await router.list_orders()


async def test_randomised_twap_respects_minimum_and_horizon(router: OrderRouter, broker: PaperBroker, book: StaticBook) -> None:
    deep_book(book)
    fake = FakeTime()
    twap = TwapExecutor(router, "AAPL", "sell", 777, horizon_s=60.0, slices=6, min_slice_qty=100, randomize=0.5,
                        clock=fake.clock, sleep=fake.sleep, rng=random.Random(3))
    result = await twap.run()
    assert result.status == "completed" and result.filled_qty == 777
    assert all(c.qty >= 100 for c in result.children) and len(result.children) <= 6
    assert all(0.0 <= t < 60.0 for t in result.submit_offsets_s)
    assert sum(Decimal(o["qty"]) for o in broker.orders()) == 777


async def test_cancel_stops_new_children_and_cancels_the_working_one(router: OrderRouter, broker: PaperBroker, book: StaticBook) -> None:
    book.set_book("AAPL", AAPL_BIDS, [(100.01, 50.0)])  # children only half fill, so one is always working
    twap: TwapExecutor

    def stop_after_two_slots(now: float, seconds: float) -> None:
        if now >= 20.0:
            twap.cancel()

    fake = FakeTime(on_sleep=stop_after_two_slots)
    twap = TwapExecutor(router, "AAPL", "buy", 500, horizon_s=50.0, slices=5, clock=fake.clock, sleep=fake.sleep)
    result = await twap.run()
    assert result.status == "canceled" and len(result.children) == 3
    assert result.filled_qty == 50 and result.remaining_qty == 450
    assert await router.list_orders() == []  # nothing left working at the broker
    assert len(broker.orders()) == 3


async def test_a_failing_child_stops_the_twap_with_the_error(router: OrderRouter, broker: PaperBroker, book: StaticBook) -> None:
    deep_book(book)
    fake = FakeTime()
    twap = TwapExecutor(router, "AAPL", "buy", 18_000, horizon_s=10.0, slices=2, clock=fake.clock, sleep=fake.sleep)
    result = await twap.run()  # 9 000 shares at ~100 use 900k of 1M: the second child exceeds buying power
    assert result.status == "failed" and "insufficient buying power" in str(result.error)
    assert result.filled_qty == 9_000 and len(result.children) == 1
