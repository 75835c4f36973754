"""TWAP: a parent quantity worked as child orders spread over a time horizon.

``plan_slices`` is the pure schedule: ``n`` slices at the start of equal time slots, each at least
``min_slice_qty`` (fewer, larger slices when the parent is small), sizes even or randomised, in whole
multiples of ``qty_step``, summing exactly to the parent. ``TwapExecutor`` sends each slice through the
router (so every child gets the slippage guard and the exactly-once submit), gives a child its slot to
fill, cancels what is left of it, and re-plans the unfilled remainder over the remaining slots and
time. ``cancel()`` stops it: no new children, the working child is cancelled. Clock, sleep and random
source are injectable so tests run a ten-minute horizon in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from engine.execution.errors import ExecutionError, NotFound, SlippageRejected, Unprocessable
from engine.execution.models import Order, OrderRequest, OrderSide
from engine.execution.router import OrderRouter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TwapSlice:
    """One child: when (seconds after the plan's start) and how much."""

    at_s: float
    qty: Decimal


def plan_slices(
    total_qty: Decimal | float | str,
    horizon_s: float,
    n_slices: int,
    *,
    min_slice_qty: Decimal | float | str = 1,
    qty_step: Decimal | float | str = 1,
    randomize: float = 0.0,
    rng: _random.Random | None = None,
) -> list[TwapSlice]:
    """Split ``total_qty`` into at most ``n_slices`` slices over ``[0, horizon_s)``.

    ``randomize`` in [0, 1) perturbs each slice's share of the quantity above the minimum by up to
    that fraction and moves its time within its own slot, so the schedule is less predictable
    while still summing to the parent and ending inside the horizon.
    """
    total, step, minimum = Decimal(str(total_qty)), Decimal(str(qty_step)), Decimal(str(min_slice_qty))
    if total <= 0 or step <= 0 or minimum <= 0:
        raise ValueError("total_qty, qty_step and min_slice_qty must be positive")
    if total % step:
        raise ValueError(f"total_qty {total} is not a multiple of qty_step {step}")
    if not horizon_s > 0 or n_slices < 1:
        raise ValueError("horizon_s must be positive and n_slices at least 1")
    if not 0.0 <= randomize < 1.0:
        raise ValueError("randomize must be in [0, 1)")
    rng = rng or _random.Random()
    units = int(total / step)
    min_units = max(1, int((minimum / step).to_integral_value(ROUND_FLOOR)) + (1 if minimum % step else 0))
    n = max(1, min(n_slices, units // min_units))
    base = min_units if units >= min_units else units
    spare = units - n * base
    weights = [1.0 + randomize * (2.0 * rng.random() - 1.0) for _ in range(n)]
    total_weight = sum(weights)
    exact = [spare * w / total_weight for w in weights]
    shares = [math.floor(x) for x in exact]
    by_fraction = sorted(range(n), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_fraction[: spare - sum(shares)]:
        shares[i] += 1
    slot = horizon_s / n
    slices = []
    for i, share in enumerate(shares):
        offset = randomize * rng.random() * slot if i > 0 else 0.0  # the first child goes at once
        slices.append(TwapSlice(i * slot + offset, (base + share) * step))
    return slices


@dataclass
class TwapResult:
    """How a TWAP ended."""

    status: Literal["completed", "incomplete", "canceled", "failed"]
    target_qty: Decimal
    filled_qty: Decimal
    filled_notional: Decimal
    children: list[Order] = field(default_factory=list)
    submit_offsets_s: list[float] = field(default_factory=list)  # when each child was sent, after start
    skipped_slices: int = 0  # slices the slippage guard refused
    error: BaseException | None = None

    @property
    def remaining_qty(self) -> Decimal:
        return self.target_qty - self.filled_qty

    @property
    def avg_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None


class TwapExecutor:
    """Works one parent order as a TWAP through an ``OrderRouter``."""

    def __init__(
        self,
        router: OrderRouter,
        symbol: str,
        side: OrderSide,
        qty: Decimal | float | str,
        horizon_s: float,
        *,
        slices: int = 10,
        min_slice_qty: Decimal | float | str = 1,
        qty_step: Decimal | float | str = 1,
        randomize: float = 0.0,
        limit_price: Decimal | float | str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: _random.Random | None = None,
    ) -> None:
        self.router = router
        self.symbol = symbol
        self.side = side
        self.qty = Decimal(str(qty))
        self.horizon_s = horizon_s
        self.n_slices = slices
        self.min_slice_qty = Decimal(str(min_slice_qty))
        self.qty_step = Decimal(str(qty_step))
        self.randomize = randomize
        self.limit_price = None if limit_price is None else Decimal(str(limit_price))
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or _random.Random()
        self._cancelled = asyncio.Event()
        # validate the parameters now, not when the first slice is due
        self.plan = plan_slices(self.qty, horizon_s, slices, min_slice_qty=self.min_slice_qty,
                                qty_step=self.qty_step, randomize=randomize, rng=self._rng)

    def cancel(self) -> None:
        """Stop: no further children; the working child is cancelled."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early on cancel."""
        if seconds <= 0 or self.cancelled:
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        canceller = asyncio.ensure_future(self._cancelled.wait())
        try:
            await asyncio.wait({sleeper, canceller}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, canceller):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(sleeper, canceller, return_exceptions=True)

    async def _settle(self, child: Order) -> Order:
        """The child's final state: cancel it if still working, then read it back."""
        order = await self.router.get_order(child.id)
        if not order.is_terminal:
            with contextlib.suppress(NotFound, Unprocessable):  # it finished in the meantime
                await self.router.cancel(order.id)
            order = await self.router.get_order(child.id)
        return order

    async def run(self) -> TwapResult:
        start = self._clock()
        result = TwapResult("completed", self.qty, Decimal(0), Decimal(0))
        plan = list(self.plan)
        working: Order | None = None
        slot_index = 0
        try:
            while plan and not self.cancelled:
                next_slice = plan.pop(0)
                await self._pause(start + next_slice.at_s - self._clock())
                if working is not None:
                    working = await self._settle_into(working, result)
                if self.cancelled:
                    break
                if slot_index > 0:
                    plan = self._replan(result, start, len(plan) + 1)
                    if not plan:
                        break
                    next_slice = plan.pop(0)
                slot_index += 1
                request = OrderRequest(
                    symbol=self.symbol,
                    side=self.side,
                    qty=next_slice.qty,
                    type="market" if self.limit_price is None else "limit",
                    limit_price=self.limit_price,
                    time_in_force="day",
                )
                try:
                    working = await self.router.submit(request)
                except SlippageRejected as exc:
                    result.skipped_slices += 1
                    log.info("TWAP %s: slice skipped: %s", self.symbol, exc)
                    continue
                result.children.append(working)
                result.submit_offsets_s.append(self._clock() - start)
            if working is not None:
                if not self.cancelled:
                    await self._pause(start + self.horizon_s - self._clock())  # the last child's slot
                working = await self._settle_into(working, result)
        except ExecutionError as exc:
            result.status, result.error = "failed", exc
            if working is not None:
                with contextlib.suppress(Exception):
                    await self._settle_into(working, result)
            return result
        if self.cancelled:
            result.status = "canceled"
        elif result.filled_qty < self.qty:
            result.status = "incomplete"
        return result

    async def _settle_into(self, child: Order, result: TwapResult) -> None:
        final = await self._settle(child)
        result.filled_qty += final.filled_qty
        if final.filled_avg_price is not None:
            result.filled_notional += final.filled_qty * final.filled_avg_price
        for i, known in enumerate(result.children):
            if known.id == final.id:
                result.children[i] = final
        return None

    def _replan(self, result: TwapResult, start: float, slots_left: int) -> list[TwapSlice]:
        """Spread what is still unfilled over the remaining slots and time."""
        remaining = self.qty - result.filled_qty
        if remaining <= 0:
            return []
        now = self._clock() - start
        time_left = max(self.horizon_s - now, 1e-9)
        remaining = (remaining / self.qty_step).to_integral_value(ROUND_FLOOR) * self.qty_step
        if remaining <= 0:
            return []
        fresh = plan_slices(remaining, time_left, slots_left, min_slice_qty=self.min_slice_qty,
                            qty_step=self.qty_step, randomize=self.randomize, rng=self._rng)
        return [TwapSlice(now + s.at_s, s.qty) for s in fresh]
