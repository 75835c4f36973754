"""Property tests of the pre-trade checks: HALTED denies everything, REDUCING never lets exposure grow,
bad input is never approved, and no batch of orders breaches a limit collectively."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_risk_kit import NAN, T0, fills, make_engine

from engine.events import ORDER_DTYPE, ORDER_LIMIT, ORDER_MARKET
from engine.risk import codes
from engine.risk._book import F_PENDING_BUY, F_PENDING_SELL, F_QTY

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BAD_INPUT = {codes.DENY_UNKNOWN_SYMBOL, codes.DENY_INVALID_SIDE, codes.DENY_ZERO_QTY, codes.DENY_INVALID_QTY,
             codes.DENY_INVALID_PRICE, codes.DENY_NO_MARK, codes.DENY_INVALID_ORDER_TYPE}

any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, 100.0, NAN, math.inf, -math.inf, -1.0]),
)
# anything at all, including garbage in every field
wild_order = st.tuples(
    st.integers(-3, 6), st.integers(-2, 2), any_float, st.integers(0, 6), any_float, any_float,
)
# well-formed orders on the three marked symbols
sane_order = st.tuples(
    st.integers(0, 2), st.sampled_from([1, -1]), st.integers(1, 400).map(float),
    st.sampled_from([ORDER_MARKET, ORDER_LIMIT]), st.integers(9_000, 11_000).map(lambda c: c / 100),
    st.just(NAN),
)


def as_orders(rows) -> np.ndarray:
    out = np.zeros(len(rows), dtype=ORDER_DTYPE)
    for i, (sid, side, qty, kind, limit, stop) in enumerate(rows):
        out[i] = (T0 + i, i, sid, side, kind, 0, 0, qty, limit, stop, 0.0, 0.0)
    return out


def marked_engine(**limits):
    engine = make_engine(**limits)
    for sym in ("AAA", "BBB", "CCC"):  # DDD stays unmarked
        engine.set_mark(sym, 100.0)
    return engine


def worst_case(engine, sid) -> float:
    row = engine.tracker.st[sid]
    return max(abs(row[F_QTY] + row[F_PENDING_BUY]), abs(row[F_QTY] - row[F_PENDING_SELL]))


starting_fills = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from([1, -1]), st.integers(1, 300).map(float)), max_size=4,
)


@SETTINGS
@given(starting_fills, st.lists(wild_order, min_size=1, max_size=20), st.booleans())
def test_halted_denies_everything(start, rows, batch_mode):
    engine = marked_engine()
    if start:
        engine.apply_fills(fills(*[(s, d, q, 100.0) for s, d, q in start]))
    engine.halt()
    pending_before = engine.tracker.st[:, [F_PENDING_BUY, F_PENDING_SELL]].copy()
    batch = as_orders(rows)
    if batch_mode:
        result = engine.check_orders(batch, now_ns=T0).tolist()
    else:
        result = [engine.check(*(int(o["symbol_id"]), int(o["side"]), o["qty"], o["limit_price"],
                                 int(o["order_type"]), o["stop_price"], T0)) for o in batch]
    assert codes.RISK_APPROVED not in result
    assert set(result) <= BAD_INPUT | {codes.DENY_HALTED}
    assert np.array_equal(engine.tracker.st[:, [F_PENDING_BUY, F_PENDING_SELL]], pending_before)


@SETTINGS
@given(starting_fills, st.lists(st.tuples(sane_order, st.sampled_from(["fill", "cancel", "keep"])), max_size=25))
def test_reducing_never_lets_exposure_grow(start, steps):
    engine = marked_engine(max_order_qty=400, allow_short=True)
    if start:
        engine.apply_fills(fills(*[(s, d, q, 100.0) for s, d, q in start]))
    engine.reduce_only()
    for (sid, side, qty, kind, limit, stop), outcome in steps:
        before = [abs(engine.tracker.qty(s)) for s in range(3)]
        worst_before = [worst_case(engine, s) for s in range(3)]
        code = engine.check(sid, side, qty, limit, kind, stop, T0)
        if code == codes.RISK_APPROVED:
            if outcome == "fill":
                engine.apply_fills(fills((sid, side, qty, 100.0)))
            elif outcome == "cancel":
                assert engine.release(sid, side, qty)
        else:
            assert code in (codes.DENY_REDUCING, codes.DENY_PRICE_BAND)
        for s in range(3):
            assert abs(engine.tracker.qty(s)) <= before[s] + 1e-9
            assert worst_case(engine, s) <= worst_before[s] + 1e-9


@SETTINGS
@given(st.lists(wild_order, min_size=1, max_size=20))
def test_bad_input_is_never_approved_and_never_raises(rows):
    engine = marked_engine()
    batch = as_orders(rows)
    result = engine.check_orders(batch, now_ns=T0)
    for o, code in zip(batch, result.tolist()):
        sid, side, qty, kind = int(o["symbol_id"]), int(o["side"]), float(o["qty"]), int(o["order_type"])
        needs_limit = kind in (1, 3)
        needs_stop = kind in (2, 3)
        malformed = (
            not 0 <= sid <= 3 or side not in (1, -1) or kind > 3 or not (math.isfinite(qty) and qty > 0)
            or (needs_limit and not (math.isfinite(o["limit_price"]) and o["limit_price"] > 0))
            or (needs_stop and not (math.isfinite(o["stop_price"]) and o["stop_price"] > 0))
            or sid == 3  # DDD has no mark
        )
        if malformed:
            assert code in BAD_INPUT


@SETTINGS
@given(st.lists(st.lists(sane_order, min_size=1, max_size=30), min_size=1, max_size=4), starting_fills)
def test_batches_never_breach_limits_collectively(batches, start):
    limits = dict(max_order_qty=250, max_position_qty=600, max_symbol_notional=50_000, max_gross_notional=90_000,
                  max_open_positions=2, max_orders_per_window=25)
    engine = marked_engine(**limits)
    if start:  # a starting book within the limits
        ok = [(s, d, q, 100.0) for s, d, q in start if s < 2]
        if ok:
            engine.apply_fills(fills(*ok))
    approvals = 0
    for rows in batches:
        worst_before = [worst_case(engine, s) for s in range(3)]
        gross_before = engine.gross_exposure
        result = engine.check_orders(as_orders(rows), now_ns=T0)
        approvals += int((result == codes.RISK_APPROVED).sum())
        for s in range(3):
            w = worst_case(engine, s)
            assert w <= max(limits["max_position_qty"], worst_before[s]) + 1e-9
            assert w * 100.0 <= max(limits["max_symbol_notional"], worst_before[s] * 100.0) + 1e-6
        assert engine.gross_exposure <= max(limits["max_gross_notional"], gross_before) + 1e-6
        assert engine.open_positions <= max(limits["max_open_positions"], 2)
        for code, (_, _, qty, *_rest) in zip(result.tolist(), rows):
            if code == codes.RISK_APPROVED:
                assert qty <= limits["max_order_qty"]
    assert approvals <= limits["max_orders_per_window"]  # every order is inside one 1 s window
