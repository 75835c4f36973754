"""Slippage guard: keeps a marketable order within a band (in bps) around the reference mid.

A buy's price is its limit, or for a market order the best ask it would lift (a sell: limit, or the
best bid). When that price is more than ``band_bps`` from the mid, the guard either refuses the order
(``SlippageRejected``) or turns it into a limit order at the band edge, rounded to the venue's price
increment towards the mid so the new limit stays inside the band. Orders that do not cross the mid
(passive limits) and stop orders (priced when they trigger) pass unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from engine.execution.errors import SlippageRejected
from engine.execution.models import OrderRequest

_INF = math.inf
_CENT = Decimal("0.01")
_SUB_PENNY = Decimal("0.0001")
_CRYPTO_STEP = Decimal("0.000000001")


def price_increment(symbol: str, price: float) -> Decimal:
    """Alpaca's limit-price increment: crypto pairs fine-grained; stocks a cent, sub-penny below $1."""
    if "/" in symbol:
        return _CRYPTO_STEP
    return _CENT if price >= 1.0 else _SUB_PENNY


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """What the guard did: ``"pass"``, ``"converted"`` (to a limit at the band) or ``"unchecked"``."""

    outcome: Literal["pass", "converted", "unchecked"]
    request: OrderRequest
    deviation_bps: float = 0.0


class SlippageGuard:
    """Checks one order against a reference quote; pure and synchronous (it runs on the hot path)."""

    def __init__(self, band_bps: float, action: Literal["reject", "limit"] = "reject") -> None:
        if not band_bps > 0:
            raise ValueError("band_bps must be positive")
        if action not in ("reject", "limit"):
            raise ValueError("action must be 'reject' or 'limit'")
        self.band_bps = float(band_bps)
        self.action = action
        self.checked = 0
        self.rejected = 0
        self.converted = 0
        self.unchecked = 0  # marketable orders sent with no usable reference quote

    def check(self, request: OrderRequest, bid: float | None, ask: float | None) -> GuardDecision:
        """Pass, convert or refuse ``request`` given the current best bid and ask."""
        return GuardDecision(*self._decide(request, bid, ask))

    def screen(self, request: OrderRequest, bid: float | None, ask: float | None) -> OrderRequest:
        """``check`` for the order path: the request to send (the same counters and refusals), no decision object.

        A frozen dataclass costs about a microsecond to build, most of the guard's time on every order.
        """
        return self._decide(request, bid, ask)[1]

    def screen_values(
        self, symbol: str, side: str, type: str, limit_price: Decimal | None, bid: float | None, ask: float | None
    ) -> tuple[str, Decimal | None]:
        """``screen`` for an order given as values (no request model): the type and limit price to send."""
        limit = float(limit_price) if limit_price is not None else None
        outcome, edge, _ = self._judge(symbol, side == "buy", type, limit, bid, ask)
        return ("limit", edge) if outcome == "converted" else (type, limit_price)

    def _decide(
        self, request: OrderRequest, bid: float | None, ask: float | None
    ) -> tuple[Literal["pass", "converted", "unchecked"], OrderRequest, float]:
        limit = float(request.limit_price) if request.limit_price is not None else None
        outcome, edge, deviation_bps = self._judge(request.symbol, request.side == "buy", request.type, limit, bid, ask)
        if outcome == "converted":
            request = request.model_copy(update={"type": "limit", "limit_price": edge})
        return outcome, request, deviation_bps

    def _judge(
        self, symbol: str, buy: bool, type: str, limit: float | None, bid: float | None, ask: float | None
    ) -> tuple[Literal["pass", "converted", "unchecked"], Decimal | None, float]:
        """The outcome, the band-edge limit when converted, and the deviation in bps."""
        if type in ("stop", "stop_limit"):
            return "pass", None, 0.0
        # both positive and finite, not crossed (NaN fails every comparison)
        if bid is None or ask is None or not (0.0 < bid <= ask < _INF):
            self.unchecked += 1
            return "unchecked", None, 0.0
        self.checked += 1
        mid = 0.5 * (bid + ask)  # type: ignore[operator]
        if type == "limit":
            price = limit
            if (buy and price <= mid) or (not buy and price >= mid):  # type: ignore[operator]
                return "pass", None, 0.0  # passive: no slippage to guard
        else:
            price = ask if buy else bid
        deviation_bps = ((price - mid) if buy else (mid - price)) / mid * 1e4  # type: ignore[operator]
        if deviation_bps <= self.band_bps:
            return "pass", None, deviation_bps
        if self.action == "reject":
            self.rejected += 1
            raise SlippageRejected(symbol, deviation_bps, self.band_bps)
        self.converted += 1
        # exact decimal arithmetic: a float band edge like 100.49999999 must not round a cent away
        mid_d = (Decimal(repr(bid)) + Decimal(repr(ask))) / 2
        band = Decimal(repr(self.band_bps)) / 10_000
        edge = mid_d * (1 + band) if buy else mid_d * (1 - band)
        step = price_increment(symbol, float(edge))
        return "converted", (edge / step).to_integral_value(ROUND_FLOOR if buy else ROUND_CEILING) * step, deviation_bps
