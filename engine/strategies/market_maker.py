"""A mid-price market maker: one bid and one ask around the mid, skewed against inventory.

The reservation price is the mid moved against the position (long inventory lowers both quotes so
the ask is likelier to fill); quotes sit ``half_spread_bps`` either side, rounded away from the mid to
the tick, and never cross the opposite touch. A quote is replaced only when its price moved by at
least ``requote_bps`` and ``min_requote_ms`` has passed for that symbol (event time), which keeps the
order rate inside the broker's limit. A side is pulled when a fill there would push the inventory
beyond ``max_inventory``.

``on_book`` prices the changed symbols it quotes in one compiled call (``_wanted_quotes``, the same
arithmetic as ``quotes`` bit for bit) and keeps Python for what needs the order objects: comparing with
the resting quotes and building the intents. One call, not numpy expressions: on a frame's few symbols
each numpy operation costs about a microsecond, far more than its arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.events import SIDE_BUY, SIDE_SELL
from engine.strategies.base import CancelIntent, Intent, OpenOrder, OrderIntent, Strategy, StrategyContext


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
        self._wanted(ctx, np.zeros(0, dtype=np.int64))  # compile now, not on the first frame

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
        """Requote the changed symbols. The ones quoted and outside their throttle are priced in one
        compiled call; Python only compares each with its resting quotes and builds the intents."""
        sids = np.asarray(symbol_ids, dtype=np.int64)
        try:
            quoted = self.quoted[sids]
        except IndexError:
            return self._on_book_up_to_bad_id(ctx, sids)
        now = ctx.now_ns
        sids = sids[quoted & (now - self.last_requote_ns[sids] >= self.min_requote_ns)]
        if not len(sids):
            return []
        bids, asks, thresholds, fallbacks = self._wanted(ctx, sids).tolist()
        n_symbols = len(self.quoted)
        requoted: set[int] = set()  # array slots requoted by this call: a repeat is inside the throttle
        intents: list[Intent] = []
        for sid, bid, ask, threshold, fallback in zip(sids.tolist(), bids, asks, thresholds, fallbacks):
            if sid % n_symbols in requoted:
                continue
            if fallback:
                bid, ask = self.quotes(ctx, sid)  # the rows the kernel leaves to it (see _wanted_quotes)
            live_bids: list[OpenOrder] = []
            live_asks: list[OpenOrder] = []
            for order in ctx.orders_for(sid):
                if not order.cancel_requested:
                    if order.tag == "bid":
                        live_bids.append(order)
                    elif order.tag == "ask":
                        live_asks.append(order)
            changed = _requote_side(intents, sid, SIDE_BUY, "bid", self.qty, bid, live_bids, threshold)
            changed |= _requote_side(intents, sid, SIDE_SELL, "ask", self.qty, ask, live_asks, threshold)
            if changed:
                self.last_requote_ns[sid] = now
                if self.min_requote_ns > 0:
                    requoted.add(sid % n_symbols)
        return intents

    def _on_book_up_to_bad_id(self, ctx: StrategyContext, sids: np.ndarray) -> list[Intent]:
        """An id out of range: requote the symbols before it (their throttle clocks move), then raise
        its ``IndexError``, as a symbol-at-a-time loop would."""
        n_symbols = len(self.quoted)
        first_bad = int(np.flatnonzero((sids < -n_symbols) | (sids >= n_symbols))[0])
        self.on_book(ctx, sids[:first_bad])
        raise IndexError(f"index {int(sids[first_bad])} is out of bounds for axis 0 with size {n_symbols}")

    def _wanted(self, ctx: StrategyContext, sids: np.ndarray) -> np.ndarray:
        """Rows bid, ask, requote threshold and fallback (1.0: ask ``quotes``) for each of ``sids``, in one call."""
        out = np.empty((4, len(sids)))
        _wanted_quotes(
            sids, ctx.best_bid_price, ctx.best_ask_price, ctx.position, ctx.tick_size,
            self.skew_bps * 1e-4, self.max_inventory, self.qty,
            1.0 - self.half_spread_bps * 1e-4, 1.0 + self.half_spread_bps * 1e-4, self.requote_bps * 1e-4, out,
        )
        return out


def _requote_side(
    intents: list[Intent], sid: int, side: int, tag: str, qty: float, price: float, live: list[OpenOrder],
    threshold: float,
) -> bool:
    """Keep the first live order on this side if it is within ``threshold`` of ``price`` (NaN: quote
    nothing), cancel the others, place a new one if none was kept; True if any intent was added."""
    keep = None
    if live and math.isfinite(price) and abs(live[0].limit_price - price) < threshold:
        keep = live[0]
    changed = False
    for order in live:
        if order is not keep:
            intents.append(CancelIntent(order.order_seq))
            changed = True
    if keep is None and math.isfinite(price):
        intents.append(OrderIntent.limit(sid, side, qty, round(price, 10), tag=tag))
        changed = True
    return changed


@njit(cache=True, error_model="numpy")
def _wanted_quotes(  # pragma: no cover - njit
    sids, best_bid, best_ask, position, tick, skew, max_inventory, qty, bid_factor, ask_factor, requote, out,
):
    """``MidPriceMarketMaker.quotes`` for each of ``sids`` with the same float64 operations in the same
    order (numpy's division, no fused multiply-add), plus ``on_book``'s requote threshold.

    ``out`` rows: bid, ask (NaN: no quote), threshold, and a fallback flag, 1.0 where ``quotes`` must
    answer: a finite mid but a non-finite price to round (``math.floor`` raises there) or a tick that is
    not positive (the sign of a zero price could differ from ``math.floor``'s integer).
    """
    for i in range(sids.shape[0]):
        s = sids[i]
        touch_bid = best_bid[s]
        touch_ask = best_ask[s]
        mid = 0.5 * (touch_bid + touch_ask) if touch_bid > 0.0 and touch_ask > 0.0 else np.nan
        threshold = requote * mid
        if 0.5 * tick > threshold:  # Python's max(threshold, half tick)
            threshold = 0.5 * tick
        out[0, i] = np.nan
        out[1, i] = np.nan
        out[2, i] = threshold
        out[3, i] = 0.0
        if not np.isfinite(mid):
            continue
        inventory = position[s]
        reservation = mid * (1.0 - skew * inventory / max_inventory)
        bid_ticks = reservation * bid_factor / tick + 1e-9          # round_down's argument to floor
        ask_ticks = reservation * ask_factor / tick - 1e-9          # round_up's argument to ceil
        below_ask_ticks = (touch_ask - tick) / tick + 1e-9
        above_bid_ticks = (touch_bid + tick) / tick - 1e-9
        if not (tick > 0.0 and np.isfinite(bid_ticks) and np.isfinite(ask_ticks)
                and np.isfinite(below_ask_ticks) and np.isfinite(above_bid_ticks)):
            out[3, i] = 1.0
            continue
        bid = np.floor(bid_ticks) * tick
        ask = np.ceil(ask_ticks) * tick
        below_ask = np.floor(below_ask_ticks) * tick
        if below_ask < bid:  # min(bid, below_ask): never cross the touch
            bid = below_ask
        above_bid = np.ceil(above_bid_ticks) * tick
        if above_bid > ask:
            ask = above_bid
        if inventory + qty > max_inventory:
            bid = np.nan
        if inventory - qty < -max_inventory:
            ask = np.nan
        if not bid > 0:
            bid = np.nan
        out[0, i] = bid
        out[1, i] = ask
