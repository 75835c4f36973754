"""The shipped strategies, driven with hand-filled contexts: the orders they want for known markets."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.events import ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, SIDE_SELL
from engine.strategies import (
    BarClose,
    CancelIntent,
    CrossSection,
    Intent,
    MidPriceMarketMaker,
    MovingAverageRsi,
    OpenOrder,
    OrderIntent,
    StrategyContext,
    load_strategy,
)


def _bar_close(closes: dict[int, np.ndarray], fast=5, slow=20, rsi=14, cross_section=None) -> BarClose:
    """The last bar of each series with features computed by TA-Lib (the engine's numerical oracle)."""
    sids = np.array(sorted(closes), dtype=np.int32)
    names = (f"sma_{fast}", f"sma_{slow}", f"rsi_{rsi}")
    rows = []
    for sid in sids:
        c = closes[int(sid)]
        rows.append([talib.SMA(c, fast)[-1], talib.SMA(c, slow)[-1], talib.RSI(c, rsi)[-1]])
    last = np.array([closes[int(s)][-1] for s in sids])
    return BarClose(0, sids, last, last, last, last, np.ones(len(sids)), np.array(rows), names, cross_section)


def test_ma_rsi_goes_long_on_an_uptrend_and_short_on_a_downtrend():
    ctx = StrategyContext(["UP", "DOWN", "NEW"])
    strat = MovingAverageRsi(qty=10, max_position=30)
    strat.on_start(ctx)
    t = np.arange(60, dtype=float)
    rng = np.random.default_rng(0)
    up = 100 + 0.05 * t + rng.normal(0, 0.3, 60)      # gentle trend: RSI stays below 70
    down = 100 - 0.05 * t + rng.normal(0, 0.3, 60)
    young = np.full(10, 100.0)                       # still inside the 20-bar lookback
    bars = _bar_close({0: up, 1: down, 2: young})
    assert 30 < bars.features[0, 2] < 70 and 30 < bars.features[1, 2] < 70
    intents = strat.on_bar(ctx, bars)
    assert intents == [OrderIntent.market(0, SIDE_BUY, 10.0, "signal"), OrderIntent.market(1, SIDE_SELL, 10.0, "signal")]
    # the position moves toward the target by at most qty per bar, counting what is already in flight
    ctx.position[0] = 10.0
    ctx.open_orders[7] = OpenOrder(7, 0, SIDE_BUY, 10.0, ORDER_MARKET, math.nan, "signal")
    ctx.position[1] = -25.0
    intents = strat.on_bar(ctx, bars)
    assert intents == [OrderIntent.market(0, SIDE_BUY, 10.0, "signal"), OrderIntent.market(1, SIDE_SELL, 5.0, "signal")]
    ctx.position[0] = 30.0
    ctx.open_orders.clear()
    ctx.position[1] = -30.0
    assert strat.on_bar(ctx, bars) == []             # at target: nothing to do


def test_ma_rsi_respects_overbought_and_no_short():
    ctx = StrategyContext(["A"])
    strat = MovingAverageRsi(allow_short=False)
    strat.on_start(ctx)
    steep = 100 + 1.0 * np.arange(40, dtype=float)   # straight up: RSI 100, overbought -> no new long
    assert strat.on_bar(ctx, _bar_close({0: steep})) == []
    falling = 100 - 0.05 * np.arange(60, dtype=float) + np.random.default_rng(1).normal(0, 0.3, 60)
    assert strat.on_bar(ctx, _bar_close({0: falling})) == []   # short not allowed, flat target
    ctx.position[0] = 20.0
    assert strat.on_bar(ctx, _bar_close({0: falling})) == [OrderIntent.market(0, SIDE_SELL, 10.0, "signal")]


def test_ma_rsi_beta_filter_flattens_high_beta_symbols():
    ctx = StrategyContext(["A", "B"])
    strat = MovingAverageRsi(max_abs_beta=1.5)
    strat.on_start(ctx)
    up = 100 + 0.05 * np.arange(60, dtype=float) + np.random.default_rng(0).normal(0, 0.3, 60)
    cs = CrossSection(("x",), np.zeros((2, 1)), np.ones((2, 1)), np.array([0.9, 2.0]), np.array([0.5, 0.8]), 0, "cpu")
    ctx.position[1] = 10.0
    intents = strat.on_bar(ctx, _bar_close({0: up, 1: up}, cross_section=cs))
    assert intents == [OrderIntent.market(0, SIDE_BUY, 10.0, "signal"), OrderIntent.market(1, SIDE_SELL, 10.0, "signal")]


def _ma_rsi_one_by_one(strat: MovingAverageRsi, ctx: StrategyContext, bars: BarClose, target: np.ndarray) -> list[Intent]:
    """The signal's definition, symbol by symbol in bar order (what ``on_bar`` computes in arrays)."""
    fast, slow, rsi = (bars.feature(n) for n in (f"sma_{strat.fast}", f"sma_{strat.slow}", f"rsi_{strat.rsi_window}"))
    beta = bars.cross_section.beta if bars.cross_section is not None else None
    out: list[Intent] = []
    for row, sid in enumerate(int(s) for s in bars.symbol_ids):
        f, s, r = fast[row], slow[row], rsi[row]
        if beta is not None and abs(beta[sid]) > strat.max_abs_beta:
            target[sid] = 0.0
        elif not (math.isfinite(f) and math.isfinite(s) and math.isfinite(r)):
            continue
        elif f > s and r < strat.rsi_overbought:
            target[sid] = strat.max_position
        elif f < s and r > strat.rsi_oversold:
            target[sid] = -strat.max_position if strat.allow_short else 0.0
        gap = target[sid] - (ctx.position[sid] + ctx.pending_qty(sid))
        size = min(abs(gap), strat.qty)
        if size >= 1.0:
            out.append(OrderIntent.market(sid, SIDE_BUY if gap > 0 else SIDE_SELL, float(math.floor(size)), "signal"))
    return out


# the thresholds themselves (equal SMAs, RSI at 30 or 70) come up too
_maybe = st.one_of(st.floats(-5, 105, allow_nan=False), st.sampled_from([30.0, 50.0, 70.0]), st.just(math.nan), st.just(math.inf))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_maybe, _maybe, _maybe, st.floats(-60, 60), st.one_of(st.floats(-3, 3), st.just(math.nan)),
                       st.integers(-15, 15), st.booleans()), min_size=1, max_size=12),
    st.booleans(), st.sampled_from([math.inf, 1.0]), st.booleans(), st.integers(0, 2**16),
)
def test_ma_rsi_in_arrays_decides_as_symbol_by_symbol(rows, allow_short, max_abs_beta, with_cs, seed):
    n = len(rows)
    ctx = StrategyContext([f"S{i}" for i in range(n)])
    strat = MovingAverageRsi(qty=7, max_position=20, allow_short=allow_short, max_abs_beta=max_abs_beta)
    strat.on_start(ctx)
    rng = np.random.default_rng(seed)
    strat.target[:] = rng.choice([-20.0, 0.0, 20.0], n)  # targets carried from earlier bars
    reference_target = strat.target.copy()
    for sid, (_, _, _, position, _, pending, canceling) in enumerate(rows):
        ctx.position[sid] = position
        if pending:
            side = SIDE_BUY if pending > 0 else SIDE_SELL
            ctx.open_orders[sid] = OpenOrder(sid, sid, side, float(abs(pending)), ORDER_MARKET, math.nan, "signal", 0.0, canceling)
    order = rng.permutation(n).astype(np.int32)  # bars come in any symbol order
    features = np.array([rows[i][:3] for i in order], dtype=float)
    beta = np.array([r[4] for r in rows])
    cs = CrossSection(("x",), np.zeros((n, 1)), np.ones((n, 1)), beta, beta, 0, "cpu") if with_cs else None
    ones = np.ones(n)
    bars = BarClose(0, order, ones, ones, ones, ones, ones, features, ("sma_5", "sma_20", "rsi_14"), cs)
    expected = _ma_rsi_one_by_one(strat, ctx, bars, reference_target)
    assert strat.on_bar(ctx, bars) == expected
    np.testing.assert_array_equal(strat.target, reference_target)


@pytest.mark.parametrize(("fast", "slow", "rsi", "side"), [
    (60.0, 50.0, 69.99, SIDE_BUY), (60.0, 50.0, 70.0, None),   # long only below overbought
    (40.0, 50.0, 30.01, SIDE_SELL), (40.0, 50.0, 30.0, None),  # short only above oversold
    (50.0, 50.0, 50.0, None),                                  # equal averages: no signal
])
def test_ma_rsi_thresholds_on_both_sides(fast, slow, rsi, side):
    ctx = StrategyContext(["A"])
    strat = MovingAverageRsi(qty=7, max_position=20)
    strat.on_start(ctx)
    one = np.ones(1)
    bars = BarClose(0, np.array([0], dtype=np.int32), one, one, one, one, one, np.array([[fast, slow, rsi]]), ("sma_5", "sma_20", "rsi_14"))
    assert strat.on_bar(ctx, bars) == ([] if side is None else [OrderIntent.market(0, side, 7.0, "signal")])


def test_ma_rsi_names_missing_features():
    ctx = StrategyContext(["A"])
    strat = MovingAverageRsi(fast=3, slow=9)
    strat.on_start(ctx)
    assert strat.feature_windows == (3, 9, 14)
    with pytest.raises(KeyError, match="sma_3"):
        strat.on_bar(ctx, _bar_close({0: np.arange(30.0) + 1}))


def _mm_ctx(bid=99.98, ask=100.02) -> StrategyContext:
    ctx = StrategyContext(["AAA", "BBB"])
    ctx.best_bid_price[:] = bid
    ctx.best_ask_price[:] = ask
    ctx.now_ns = 10**12
    return ctx


def test_market_maker_quotes_around_the_mid_and_skews_with_inventory():
    mm = MidPriceMarketMaker(half_spread_bps=10, qty=5, max_inventory=20, skew_bps=10, symbols="AAA")
    ctx = _mm_ctx()
    mm.on_start(ctx)
    intents = mm.on_book(ctx, np.array([0, 1]))       # BBB is not quoted
    assert intents == [OrderIntent.limit(0, SIDE_BUY, 5.0, 99.9, "bid"), OrderIntent.limit(0, SIDE_SELL, 5.0, 100.1, "ask")]
    ctx.position[0] = 10.0                              # long: reservation 5 bps lower
    bid, ask = mm.quotes(ctx, 0)
    assert bid == pytest.approx(99.85) and ask == pytest.approx(100.05)
    ctx.position[0] = -10.0
    bid, ask = mm.quotes(ctx, 0)
    assert bid == pytest.approx(99.94) and ask == pytest.approx(100.16)  # rounded away from the mid


def test_market_maker_inventory_limits_pull_a_side_at_the_boundary():
    mm = MidPriceMarketMaker(qty=5, max_inventory=20)
    ctx = _mm_ctx()
    mm.on_start(ctx)
    ctx.position[0] = 15.0                              # one more bid fill reaches the limit exactly: allowed
    assert math.isfinite(mm.quotes(ctx, 0)[0])
    ctx.position[0] = 16.0                              # would exceed it: no bid
    bid, ask = mm.quotes(ctx, 0)
    assert math.isnan(bid) and math.isfinite(ask)
    ctx.position[0] = -16.0
    bid, ask = mm.quotes(ctx, 0)
    assert math.isfinite(bid) and math.isnan(ask)


def test_market_maker_never_crosses_a_tight_book():
    mm = MidPriceMarketMaker(half_spread_bps=0.1, skew_bps=50, qty=5, max_inventory=10)
    ctx = _mm_ctx(100.00, 100.01)
    mm.on_start(ctx)
    ctx.position[0] = -5.0                              # skew pushes the bid up toward the ask
    bid, ask = mm.quotes(ctx, 0)
    assert bid <= 100.00 + 1e-9 and ask >= 100.01 - 1e-9


def test_market_maker_requotes_only_after_a_move_and_the_throttle():
    mm = MidPriceMarketMaker(half_spread_bps=10, qty=5, requote_bps=2, min_requote_ms=500, symbols="AAA")
    ctx = _mm_ctx()
    mm.on_start(ctx)
    first = mm.on_book(ctx, np.array([0]))
    for seq, intent in enumerate(first):
        ctx.open_orders[seq] = OpenOrder(seq, 0, intent.side, intent.qty, ORDER_LIMIT, intent.limit_price, intent.tag)
    ctx.best_bid_price[0] += 0.50                       # big move, but inside the throttle window
    ctx.best_ask_price[0] += 0.50
    ctx.now_ns += 499_999_999
    assert mm.on_book(ctx, np.array([0])) == []
    ctx.now_ns += 1
    moved = mm.on_book(ctx, np.array([0]))
    assert moved[0] == CancelIntent(0) and moved[2] == CancelIntent(1)
    assert moved[1].limit_price == pytest.approx(100.39) and moved[3].limit_price == pytest.approx(100.61)
    # a move below requote_bps keeps the resting quotes
    ctx.open_orders = {10: OpenOrder(10, 0, SIDE_BUY, 5, ORDER_LIMIT, 100.39, "bid"), 11: OpenOrder(11, 0, SIDE_SELL, 5, ORDER_LIMIT, 100.61, "ask")}
    ctx.best_bid_price[0] += 0.01
    ctx.best_ask_price[0] += 0.01
    ctx.now_ns += 10**9
    assert mm.on_book(ctx, np.array([0])) == []


def test_market_maker_waits_for_a_two_sided_book():
    mm = MidPriceMarketMaker()
    ctx = _mm_ctx()
    ctx.best_ask_price[0] = np.nan
    mm.on_start(ctx)
    assert mm.on_book(ctx, np.array([0])) == []


def test_load_strategy_by_path_alias_and_errors():
    assert isinstance(load_strategy("engine.strategies.MovingAverageRsi", {"fast": 3}), MovingAverageRsi)
    assert isinstance(load_strategy("mm"), MidPriceMarketMaker)
    with pytest.raises(InputError, match="dotted path"):
        load_strategy("NoDots")
    with pytest.raises(InputError, match="cannot import"):
        load_strategy("engine.no_such_module.Thing")
    with pytest.raises(InputError, match="no strategy class"):
        load_strategy("engine.strategies.Nope")
    with pytest.raises(InputError, match="not a strategy"):
        load_strategy("engine.errors.InputError")
    with pytest.raises(InputError, match="bad parameters"):
        load_strategy("ma_rsi", {"fast": 30, "slow": 20})
    with pytest.raises(InputError, match="bad parameters"):
        load_strategy("ma_rsi", {"nonsense": 1})


def test_open_orders_index_follows_every_change():
    ctx = StrategyContext(["A", "B"])
    a1 = OpenOrder(1, 0, SIDE_BUY, 5, ORDER_LIMIT, 10.0, "bid")
    b2 = OpenOrder(2, 1, SIDE_SELL, 5, ORDER_LIMIT, 11.0, "ask")
    ctx.open_orders[1] = a1
    ctx.open_orders[2] = b2
    assert ctx.orders_for(0) == [a1] and ctx.orders_for(1) == [b2]
    moved = OpenOrder(1, 1, SIDE_BUY, 3, ORDER_LIMIT, 10.5, "bid")  # same seq, other symbol: re-indexed
    ctx.open_orders[1] = moved
    assert ctx.orders_for(0) == [] and ctx.orders_for(1) == [b2, moved]
    assert ctx.pending_qty(1) == -5 + 3
    assert ctx.open_orders.pop(2) is b2 and ctx.open_orders.pop(2, None) is None
    del ctx.open_orders[1]
    assert ctx.orders_for(1) == [] and not ctx.open_orders
    ctx.open_orders = {7: a1}                       # replacing the whole map keeps the index
    assert ctx.orders_for(0) == [a1]
    ctx.open_orders.clear()
    assert ctx.orders_for(0) == []


class _SymbolAtATimeMaker(MidPriceMarketMaker):
    """The market maker's ``on_book`` as it was before it was batched, verbatim, over the unchanged
    per-symbol ``quotes``: the reference the batched version must match intent for intent, bit for bit."""

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


def _outcome(call, *args) -> tuple[str, object]:
    """What a call returned, as a repr (float bits and types show) with the value, or what it raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's overflow/invalid warnings on the absurd books
            value = call(*args)
    except Exception as exc:  # noqa: BLE001 - both versions must fail the same way
        return f"raised {type(exc).__name__}: {exc}", None
    return repr(value), value


def _same_frame(batched: MidPriceMarketMaker, reference: MidPriceMarketMaker, ctx: StrategyContext, sids) -> list:
    """One ``on_book`` call through both makers: the same intents (or error) and throttle clocks after."""
    got, _ = _outcome(batched.on_book, ctx, sids)
    want, intents = _outcome(reference.on_book, ctx, sids)
    assert got == want
    assert np.array_equal(batched.last_requote_ns, reference.last_requote_ns)
    for sid in range(ctx.n_symbols):
        assert _outcome(batched.quotes, ctx, sid)[0] == _outcome(reference.quotes, ctx, sid)[0]
    return intents or []


def _settle(ctx: StrategyContext, intents: list, next_seq: int) -> int:
    """New orders rest unfilled; cancels stay open with ``cancel_requested`` until the venue answers."""
    for intent in intents:
        if isinstance(intent, CancelIntent):
            ctx.open_orders[intent.order_seq].cancel_requested = True
        else:
            ctx.open_orders[next_seq] = OpenOrder(next_seq, intent.symbol_id, intent.side, intent.qty, ORDER_LIMIT,
                                                  intent.limit_price, intent.tag)
            next_seq += 1
    return next_seq


_BOOKS = ("normal", "normal", "tight", "locked", "crossed", "quote_on_edge", "touch_on_edge", "under_a_tick",
          "sub_dollar", "bid_only", "ask_only", "empty", "zero_bid", "absurd")
_EDGES = (-2e-9, -1e-9, -5e-10, 0.0, 5e-10, 1e-9, 2e-9)   # in ticks from a whole tick: the 1e-9 nudges decide


def _draw_book(draw, tick: float, half_spread_bps: float) -> tuple[float, float]:
    """A top of book (bid, ask) of one of the kinds in ``_BOOKS``."""
    kind = draw(st.sampled_from(_BOOKS))
    if kind == "absurd":
        return draw(st.sampled_from([(math.inf, 100.0), (100.0, math.inf), (1e308, 1.7e308), (-5.0, 10.0),
                                     (5e-324, 1e-300), (1e300, 1e300)]))
    step = tick if tick > 0 and math.isfinite(tick) else 0.01
    whole = draw(st.one_of(st.integers(1, 50), st.integers(1, 100_000)))
    if kind == "quote_on_edge":                         # a flat maker's bid or ask lands next to a whole tick
        factor = draw(st.sampled_from([1.0 - half_spread_bps * 1e-4, 1.0 + half_spread_bps * 1e-4]))
        mid = (whole + draw(st.sampled_from(_EDGES))) * step / factor
        half = draw(st.integers(1, 10)) / 2 * step
        return mid - half, mid + half
    if kind == "touch_on_edge":                         # the touch one tick in lands next to a whole tick
        edge = (whole + draw(st.sampled_from(_EDGES))) * step
        inside = draw(st.sampled_from([0.0, 0.5, 1.0])) * step
        if draw(st.booleans()):
            return edge + step - inside, edge + step     # clamps the bid
        return edge - step, edge - step + inside         # clamps the ask
    if kind == "under_a_tick":
        mid = draw(st.floats(0.05, 3.0)) * step
    elif kind == "sub_dollar":
        mid = draw(st.floats(1e-4, 1.0))
    else:
        mid = draw(st.floats(0.5, 5_000.0))
    if draw(st.booleans()):
        mid = round(mid / step) * step                  # on the tick grid, as exchange books are
    half = {"tight": 0.5, "locked": 0.0, "crossed": -1.0}.get(kind, draw(st.integers(1, 10)) / 2) * step
    bid, ask = mid - half, mid + half
    if kind == "bid_only":
        ask = math.nan
    elif kind == "ask_only":
        bid = math.nan
    elif kind == "empty":
        bid = ask = math.nan
    elif kind == "zero_bid":
        bid = 0.0
    return bid, ask


def _draw_position(draw, qty: float, max_inventory: float) -> float:
    """Mostly at or just past the point where one more fill on a side breaks ``max_inventory``."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([math.nan, math.inf, -math.inf]))  # quotes() raises: so must on_book
    edge = max_inventory - qty                          # one more fill on a side reaches the limit exactly
    return draw(st.one_of(
        st.sampled_from([0.0, edge, -edge, max_inventory, -max_inventory, math.nextafter(edge, math.inf),
                         -math.nextafter(edge, math.inf)]),
        st.floats(-1.2 * max_inventory, 1.2 * max_inventory),
    ))


def _draw_resting(draw, ctx: StrategyContext, maker: MidPriceMarketMaker, sid: int, next_seq: int) -> int:
    """0-3 of the maker's orders on a symbol: at, just inside, just outside or far from the wanted prices."""
    _, wanted = _outcome(maker.quotes, ctx, sid)
    wanted = dict(zip(("bid", "ask"), wanted or (math.nan, math.nan)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mid = ctx.mid(sid)
        threshold = max(maker.requote_bps * 1e-4 * mid, 0.5 * ctx.tick_size) if math.isfinite(mid) else 0.01
    for _ in range(draw(st.integers(0, 3))):
        tag = draw(st.sampled_from(["bid", "ask", "bid", "ask", "hedge"]))
        want = wanted.get(tag, math.nan)
        if not math.isfinite(want):
            want = mid if math.isfinite(mid) else 100.0
        offset = draw(st.sampled_from([0.0, 0.0, 1.0, -1.0, 1.0, -1.0, 0.5, 0.999, -0.999, 1.001, 3.0, -40.0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            near = want + offset * threshold            # at offset +-1 the requote threshold decides
            near_rounded = round(near, 10)
        price = draw(st.sampled_from([near, near, near_rounded, math.nan]) | st.floats(0.0001, 10_000.0))
        side = SIDE_SELL if tag == "ask" else SIDE_BUY
        cancelling = draw(st.integers(0, 3)) == 0
        ctx.open_orders[next_seq] = OpenOrder(next_seq, sid, side, maker.qty, ORDER_LIMIT, price, tag, cancel_requested=cancelling)
        next_seq += 1
    return next_seq


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_market_maker_batched_on_book_matches_the_symbol_at_a_time_reference(data):
    """Random makers, books (empty, one-sided, crossed, tight, sub-dollar, next to a tick), positions at
    the inventory limits, resting quotes at and around the wanted prices (some being cancelled), quoted
    subsets, throttle on and off, repeated and bad ids, over a few frames: the same as one at a time."""
    draw = data.draw
    n = draw(st.integers(1, 6))
    tick = draw(st.sampled_from([0.01, 0.05, 0.0001, 0.005, 0.25, 1.0, 1e-11]))  # 1e-11: round(price, 10) bites
    if draw(st.integers(0, 9)) == 0:
        tick = draw(st.sampled_from([0.0, -0.01, math.nan, 1e-300]))  # quotes() raises or goes its own way
    qty = draw(st.sampled_from([1.0, 5.0, 0.5, 100.0]))
    params = {
        "half_spread_bps": draw(st.sampled_from([0.1, 1.0, 5.0, 10.0, 50.0, 999.0])),
        "qty": qty,
        "max_inventory": qty * draw(st.sampled_from([1.0, 2.0, 4.0, 1e6])),
        "skew_bps": draw(st.sampled_from([0.0, 10.0, 50.0, 500.0])),
        "requote_bps": draw(st.sampled_from([0.0, 1.0, 2.0, 50.0])),
        "min_requote_ms": draw(st.sampled_from([0.0, 0.0, 0.001, 500.0])),
    }
    names = [f"S{i}" for i in range(n)]
    quoted = draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=n))
    ctx = StrategyContext(names, tick_size=tick)
    ctx.now_ns = draw(st.sampled_from([0, 10**12, 1_700_000_000_000_000_000]))
    batched = MidPriceMarketMaker(**params, symbols=",".join(quoted))
    reference = _SymbolAtATimeMaker(**params, symbols=",".join(quoted))
    batched.on_start(ctx)
    reference.on_start(ctx)
    next_seq = 1
    for frame in range(draw(st.integers(1, 4))):
        for sid in range(n):
            if frame == 0 or draw(st.booleans()):
                ctx.best_bid_price[sid], ctx.best_ask_price[sid] = _draw_book(draw, tick, params["half_spread_bps"])
                ctx.position[sid] = _draw_position(draw, params["qty"], params["max_inventory"])
                next_seq = _draw_resting(draw, ctx, reference, sid, next_seq)
        sids = draw(st.one_of(
            st.lists(st.integers(0, n - 1), unique=True, min_size=1).map(sorted),  # what the engine hands over
            st.lists(st.integers(-n, n - 1), max_size=2 * n),                # repeats, negative ids
            st.lists(st.integers(-n - 1, n), max_size=2 * n),                # an id out of range
        ))
        as_array = draw(st.booleans())
        intents = _same_frame(batched, reference, ctx, np.array(sids, dtype=np.int64) if as_array else sids)
        next_seq = _settle(ctx, intents, next_seq)
        ctx.now_ns += draw(st.sampled_from([0, 1, 999_999, 1_000_000, 499_999_999, 500_000_000, 10**10, -1]))


def test_market_maker_batched_on_book_matches_the_reference_at_the_requote_threshold():
    """Resting quotes one requote threshold from the wanted price, and one ulp of it either way."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        tick = float(rng.choice([0.01, 0.0001, 0.05, 1.0]))
        requote_bps = float(rng.choice([0.0, 0.5, 1.0, 2.0, 50.0]))
        params = {"half_spread_bps": 5.0, "qty": 1.0, "max_inventory": 100.0, "requote_bps": requote_bps,
                  "min_requote_ms": 0.0, "symbols": "A"}
        ctx = StrategyContext(["A"], tick_size=tick)
        ctx.best_bid_price[0] = round(rng.uniform(1.0, 5_000.0) / tick) * tick
        ctx.best_ask_price[0] = ctx.best_bid_price[0] + int(rng.integers(1, 5)) * tick
        ctx.position[0] = float(rng.integers(-50, 51))
        batched, reference = MidPriceMarketMaker(**params), _SymbolAtATimeMaker(**params)
        batched.on_start(ctx)
        reference.on_start(ctx)
        bid, ask = reference.quotes(ctx, 0)
        threshold = max(requote_bps * 1e-4 * ctx.mid(0), 0.5 * tick)
        for away in (math.nextafter(threshold, 0.0), threshold, math.nextafter(threshold, math.inf)):
            for sign in (1.0, -1.0):
                ctx.open_orders = {1: OpenOrder(1, 0, SIDE_BUY, 1.0, ORDER_LIMIT, bid + sign * away, "bid"),
                                   2: OpenOrder(2, 0, SIDE_SELL, 1.0, ORDER_LIMIT, ask - sign * away, "ask")}
                _same_frame(batched, reference, ctx, np.array([0]))


def test_market_maker_batched_on_book_matches_the_reference_over_a_bench_sized_session():
    """The live benchmark's setting (20 symbols all quoted, requote on every move) over random walks."""
    params = {"half_spread_bps": 5.0, "qty": 1.0, "max_inventory": 1_000_000.0, "requote_bps": 1.0, "min_requote_ms": 0.0,
              "max_symbols": 20}
    rng = np.random.default_rng(11)
    names = [f"S{i:02d}" for i in range(25)]
    ctx = StrategyContext(names)
    batched, reference = MidPriceMarketMaker(**params), _SymbolAtATimeMaker(**params)
    batched.on_start(ctx)
    reference.on_start(ctx)
    mids = rng.uniform(0.5, 800.0, len(names))
    next_seq = 1
    for _ in range(300):
        ctx.now_ns += int(rng.integers(1, 5_000_000))
        sids = np.unique(rng.integers(0, len(names), int(rng.integers(1, 26))))
        mids[sids] = np.maximum(mids[sids] * np.exp(rng.normal(0, 3e-4, len(sids))), 0.02)
        spread = rng.integers(1, 4, len(sids)) * 0.01
        ctx.best_bid_price[sids] = np.round(mids[sids] - spread / 2, 2)
        ctx.best_ask_price[sids] = np.round(ctx.best_bid_price[sids] + spread, 2)
        ctx.position[sids] += rng.integers(-3, 4, len(sids))
        intents = _same_frame(batched, reference, ctx, sids)
        for intent in intents:                           # the venue confirms cancels at once
            if isinstance(intent, CancelIntent):
                del ctx.open_orders[intent.order_seq]
        next_seq = _settle(ctx, [i for i in intents if not isinstance(i, CancelIntent)], next_seq)
        if ctx.open_orders and rng.random() < 0.2:       # a fill took a quote
            del ctx.open_orders[int(rng.choice(list(ctx.open_orders)))]
    assert next_seq > 1_000                              # it did requote, many times
