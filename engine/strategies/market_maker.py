"""A mid-price market maker: one bid and one ask around the mid, skewed against inventory.

The reservation price is the mid moved against the position (long inventory lowers both quotes so
the ask is likelier to fill); quotes sit ``half_spread_bps`` either side, rounded away from the mid to
the tick, and never cross the opposite touch. A quote is replaced only when its price moved by at
least ``requote_bps`` and ``min_requote_ms`` has passed for that symbol (event time), which keeps the
order rate inside the broker's limit. A side is pulled when a fill there would push the inventory
beyond ``max_inventory``.
"""

from __future__ import annotations

import math

import numpy as np

from engine.events import SIDE_BUY, SIDE_SELL
from engine.strategies.base import CancelIntent, Intent, OrderIntent, Strategy, StrategyContext


class MidPriceMarketMaker(Strategy):
    name = "market_maker"

    def __init__(
        self,
        half_spread_bps: float = 10.0,
        qty: float = 5.0,
        max_inventory: float = 20.0,
        skew_bps: float = 10.0,
        requote_bps: float = 2.0,
        min_requote_ms: float = 500.0,
        symbols: str = "",
        max_symbols: int = 4,
    ) -> None:
        if half_spread_bps <= 0 or qty <= 0 or max_inventory < qty:
            raise ValueError("need half_spread_bps > 0, qty > 0 and max_inventory >= qty")
        if skew_bps < 0 or requote_bps < 0 or min_requote_ms < 0 or max_symbols < 1:
            raise ValueError("skew_bps, requote_bps and min_requote_ms must be >= 0, max_symbols >= 1")
        self.half_spread_bps = float(half_spread_bps)
        self.qty = float(qty)
        self.max_inventory = float(max_inventory)
        self.skew_bps = float(skew_bps)
        self.requote_bps = float(requote_bps)
        self.min_requote_ns = int(min_requote_ms * 1e6)
        self.symbol_names = tuple(s.strip() for s in symbols.split(",") if s.strip())
        self.max_symbols = int(max_symbols)
        self.quoted = np.zeros(0, dtype=np.bool_)
        self.last_requote_ns = np.zeros(0, dtype=np.int64)

    def on_start(self, ctx: StrategyContext) -> None:
        self.quoted = np.zeros(ctx.n_symbols, dtype=np.bool_)
        names = self.symbol_names or ctx.symbols[: self.max_symbols]
        for name in names:
            self.quoted[ctx.symbol_id(name)] = True  # KeyError names an unknown symbol at start
        self.last_requote_ns = np.full(ctx.n_symbols, -(1 << 62), dtype=np.int64)

    def quotes(self, ctx: StrategyContext, symbol_id: int) -> tuple[float, float]:
        """The bid and ask this maker wants for a symbol now (NaN for a side it will not quote)."""
        mid = ctx.mid(symbol_id)
        if not math.isfinite(mid):
            return math.nan, math.nan
        inventory = ctx.position[symbol_id]
        reservation = mid * (1.0 - self.skew_bps * 1e-4 * inventory / self.max_inventory)
        bid = ctx.round_down(reservation * (1.0 - self.half_spread_bps * 1e-4))
        ask = ctx.round_up(reservation * (1.0 + self.half_spread_bps * 1e-4))
        # never cross the touch: a crossing quote would trade as a taker at the other side's price
        bid = min(bid, ctx.round_down(ctx.best_ask_price[symbol_id] - ctx.tick_size))
        ask = max(ask, ctx.round_up(ctx.best_bid_price[symbol_id] + ctx.tick_size))
        if inventory + self.qty > self.max_inventory:
            bid = math.nan
        if inventory - self.qty < -self.max_inventory:
            ask = math.nan
        if not bid > 0:
            bid = math.nan
        return bid, ask

    def on_book(self, ctx: StrategyContext, symbol_ids: np.ndarray) -> list[Intent]:
        intents: list[Intent] = []
        for sid in symbol_ids:
            sid = int(sid)
            if not self.quoted[sid] or ctx.now_ns - self.last_requote_ns[sid] < self.min_requote_ns:
                continue
            bid, ask = self.quotes(ctx, sid)
            mid = ctx.mid(sid)
            changed = False
            resting = ctx.orders_for(sid)
            for side, tag, price in ((SIDE_BUY, "bid", bid), (SIDE_SELL, "ask", ask)):
                live = [o for o in resting if o.tag == tag and not o.cancel_requested]
                keep = None
                if live and math.isfinite(price):
                    current = live[0].limit_price
                    if abs(current - price) < max(self.requote_bps * 1e-4 * mid, 0.5 * ctx.tick_size):
                        keep = live[0]
                for order in live:
                    if order is not keep:
                        intents.append(CancelIntent(order.order_seq))
                        changed = True
                if keep is None and math.isfinite(price):
                    intents.append(OrderIntent.limit(sid, side, self.qty, round(price, 10), tag=tag))
                    changed = True
            if changed:
                self.last_requote_ns[sid] = ctx.now_ns
        return intents
