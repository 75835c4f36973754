"""The shipped strategies, driven with hand-filled contexts: the orders they want for known markets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from engine.errors import InputError
from engine.events import ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, SIDE_SELL
from engine.strategies import (
    BarClose,
    CancelIntent,
    CrossSection,
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
