"""The strategy interface: what a strategy sees (context, bars, fills) and what it returns (intents).

A strategy is a plain Python class. The engine calls ``on_start`` once, then ``on_book`` once per
decoded frame with the symbols whose top of book changed, ``on_bar`` once per bar close with every
symbol that closed a bar (their feature rows, and the universe-wide cross-section when it was
computed), and ``on_fill`` for each execution of one of its orders. Each call returns a list of
``OrderIntent`` / ``CancelIntent``; the engine sends them through risk and the router in order.
Nothing here does I/O: a strategy can be tested with a hand-filled ``StrategyContext``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.events import ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, SIDE_SELL, TIF_DAY


class OrderIntent(NamedTuple):
    """A new order the strategy wants. ``limit_price`` is NaN for market orders.

    Immutable like the other records here, but a named tuple: a frozen dataclass took 0.9 us to
    build, a strategy builds one per order, and the engine reads it once."""

    symbol_id: int
    side: int                       # SIDE_BUY / SIDE_SELL
    qty: float
    order_type: int = ORDER_MARKET
    limit_price: float = math.nan
    time_in_force: int = TIF_DAY
    tag: str = ""                   # the strategy's own label, echoed on its open orders and fills

    @classmethod
    def limit(cls, symbol_id: int, side: int, qty: float, price: float, tag: str = "", time_in_force: int = TIF_DAY) -> OrderIntent:
        return cls(symbol_id, side, qty, ORDER_LIMIT, price, time_in_force, tag)

    @classmethod
    def market(cls, symbol_id: int, side: int, qty: float, tag: str = "") -> OrderIntent:
        return cls(symbol_id, side, qty, ORDER_MARKET, math.nan, TIF_DAY, tag)


class CancelIntent(NamedTuple):
    """Cancel one of the strategy's open orders (by the engine's ``order_seq``)."""

    order_seq: int


Intent = OrderIntent | CancelIntent


@dataclass(slots=True)
class OpenOrder:
    """An order of this strategy that is live or whose outcome is not known yet."""

    order_seq: int
    symbol_id: int
    side: int
    qty: float
    order_type: int
    limit_price: float
    tag: str = ""
    filled_qty: float = 0.0
    cancel_requested: bool = False

    @property
    def remaining_qty(self) -> float:
        return max(self.qty - self.filled_qty, 0.0)


class OpenOrders(dict):
    """Open orders by ``order_seq``, also indexed by symbol (a strategy asks per symbol, per tick)."""

    def __init__(self, orders: dict[int, OpenOrder] | None = None) -> None:
        super().__init__()
        self._by_symbol: dict[int, dict[int, OpenOrder]] = {}
        for seq, order in (orders or {}).items():
            self[seq] = order

    def __setitem__(self, seq: int, order: OpenOrder) -> None:
        old = super().get(seq)
        if old is not None:
            self._by_symbol.get(old.symbol_id, {}).pop(seq, None)
        super().__setitem__(seq, order)
        self._by_symbol.setdefault(order.symbol_id, {})[seq] = order

    def __delitem__(self, seq: int) -> None:
        order = super().pop(seq)
        self._by_symbol.get(order.symbol_id, {}).pop(seq, None)

    def pop(self, seq: int, *default: object) -> object:  # type: ignore[override]
        if seq in self:
            order = super().__getitem__(seq)
            del self[seq]
            return order
        if default:
            return default[0]
        raise KeyError(seq)

    def clear(self) -> None:
        super().clear()
        self._by_symbol.clear()

    def update(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        for seq, order in dict(*args, **kwargs).items():  # type: ignore[arg-type]
            self[seq] = order

    def for_symbol(self, symbol_id: int) -> list[OpenOrder]:
        return list(self._by_symbol.get(symbol_id, {}).values())

    def pending_qty(self, symbol_id: int) -> float:
        """Signed quantity still to fill on one symbol's orders not being cancelled."""
        orders = self._by_symbol.get(symbol_id)
        if not orders:
            return 0.0
        return sum(o.side * o.remaining_qty for o in orders.values() if not o.cancel_requested)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one of the strategy's orders."""

    symbol_id: int
    side: int
    qty: float
    price: float
    order_seq: int
    ts_ns: int
    tag: str = ""


@dataclass(frozen=True, slots=True)
class CrossSection:
    """The universe-wide step computed at a bar close, indexed by symbol id (rows) and feature (columns)."""

    feature_names: tuple[str, ...]
    zscore: np.ndarray         # (symbols, features)
    rank: np.ndarray           # (symbols, features), 1-based average-tie rank; NaN where the feature is NaN
    beta: np.ndarray           # (symbols,) rolling beta of bar returns to the benchmark; NaN until warm
    corr: np.ndarray           # (symbols,) rolling correlation to the benchmark
    benchmark_id: int
    backend: str               # "gpu" or "cpu": which kernels produced it


@dataclass(frozen=True, slots=True)
class BarClose:
    """The bars that closed at one boundary, with each symbol's streaming feature row."""

    ts_ns: int                  # bar open time of the closed bars
    symbol_ids: np.ndarray      # int32 (n,)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    features: np.ndarray        # (n, features) in ``feature_names`` order; NaN inside the lookback
    feature_names: tuple[str, ...]
    cross_section: CrossSection | None = None  # the live engine computes it when first read (see DeferredCrossSection)

    def column(self, name: str) -> int:
        """Where one feature is in ``features`` (``KeyError`` naming the known columns)."""
        try:
            return self.feature_names.index(name)
        except ValueError:
            raise KeyError(f"feature {name!r} not computed; have {', '.join(self.feature_names)}") from None

    def feature(self, name: str) -> np.ndarray:
        """One feature column for the closed symbols (``KeyError`` naming the known columns)."""
        return self.features[:, self.column(name)]


class StrategyContext:
    """What a strategy may read: symbols, top of book, positions and its own open orders.

    The engine owns and updates it; strategies treat it as read-only. Prices are floats at this edge.
    """

    def __init__(self, symbols: Sequence[str], tick_size: float = 0.01) -> None:
        n = len(symbols)
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.tick_size = float(tick_size)
        self.now_ns = 0
        self.best_bid_price = np.full(n, np.nan)
        self.best_ask_price = np.full(n, np.nan)
        self.best_bid_size = np.zeros(n)
        self.best_ask_size = np.zeros(n)
        self.position = np.zeros(n)            # filled, signed
        self._open_orders = OpenOrders()
        self._ids = {name: i for i, name in enumerate(self.symbols)}

    @property
    def open_orders(self) -> OpenOrders:
        """This strategy's orders that are live or not yet answered, by ``order_seq``."""
        return self._open_orders

    @open_orders.setter
    def open_orders(self, orders: dict[int, OpenOrder]) -> None:
        self._open_orders = OpenOrders(orders)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    def symbol_id(self, name: str) -> int:
        return self._ids[name]

    def mid(self, symbol_id: int) -> float:
        """Mid price, NaN when either side of the book is empty."""
        bid, ask = self.best_bid_price[symbol_id], self.best_ask_price[symbol_id]
        if not (bid > 0 and ask > 0):
            return math.nan
        return 0.5 * (bid + ask)

    def orders_for(self, symbol_id: int) -> list[OpenOrder]:
        return self._open_orders.for_symbol(symbol_id)

    def pending_qty(self, symbol_id: int) -> float:
        """Signed quantity still to fill on open orders (what the position becomes if all fill)."""
        return self._open_orders.pending_qty(symbol_id)

    def round_down(self, price: float) -> float:
        return math.floor(price / self.tick_size + 1e-9) * self.tick_size

    def round_up(self, price: float) -> float:
        return math.ceil(price / self.tick_size - 1e-9) * self.tick_size


class Strategy:
    """Base class with do-nothing handlers; subclass and override what you need.

    ``feature_windows`` tells the engine which indicator windows to compute for ``on_bar``;
    ``params`` are the keyword arguments from ``LiveConfig.strategy_params``.
    """

    name = "strategy"
    feature_windows: tuple[int, ...] = ()

    def on_start(self, ctx: StrategyContext) -> None:
        """Called once before the first event."""

    def on_book(self, ctx: StrategyContext, symbol_ids: np.ndarray) -> list[Intent]:
        return []

    def on_bar(self, ctx: StrategyContext, bars: BarClose) -> list[Intent]:
        return []

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> list[Intent]:
        return []

    def on_stop(self, ctx: StrategyContext) -> None:
        """Called once after the last event, before open orders are cancelled."""


__all__ = [
    "BarClose",
    "CancelIntent",
    "CrossSection",
    "Fill",
    "Intent",
    "OpenOrder",
    "OpenOrders",
    "OrderIntent",
    "SIDE_BUY",
    "SIDE_SELL",
    "Strategy",
    "StrategyContext",
]
