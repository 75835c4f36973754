"""Property tests of the P&L tracker on random fill sequences: the accounting identity, independence
from how fills were split, idempotence under replayed fills, and the session roll."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_risk_kit import T0, fills

from engine.risk import PnlTracker, codes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SYMBOLS = ["AAA", "BBB", "CCC"]

# (symbol id, side, qty, price, fee): quantities with up to 2 decimals, prices in cents
fill_rows = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from([1, -1]),
        st.integers(1, 50_000).map(lambda c: c / 100),
        st.integers(100, 100_000).map(lambda c: c / 100),
        st.integers(-50, 500).map(lambda c: c / 100),
    ),
    min_size=1,
    max_size=40,
)
marks = st.lists(st.integers(100, 100_000).map(lambda c: c / 100), min_size=3, max_size=3)


def booked(rows, mark_prices=None) -> PnlTracker:
    t = PnlTracker(SYMBOLS, clock=lambda: T0)
    t.apply_fills(fills(*rows))
    if mark_prices is not None:
        t.update_marks(np.arange(3), np.array(mark_prices))
    return t


def scale(rows) -> float:
    return 1.0 + sum(q * p for _, _, q, p, _ in rows)


@SETTINGS
@given(fill_rows, marks)
def test_realised_plus_unrealised_is_the_marked_cash_flow(rows, mark_prices):
    t = booked(rows, mark_prices)
    cash = sum(-side * qty * price for _, side, qty, price, _ in rows)
    position = np.zeros(3)
    for sid, side, qty, _, _ in rows:
        position[sid] += side * qty
    marked = float(np.dot(position, mark_prices))
    fees = sum(fee for *_, fee in rows)
    tol = 1e-9 * scale(rows)
    assert abs(t.realized_pnl + t.unrealized_pnl - (cash + marked)) <= tol
    assert abs(t.net_pnl - (cash + marked - fees)) <= tol
    assert abs(t.daily_pnl - t.net_pnl) <= tol  # no session roll yet: today is everything
    for sid in range(3):
        assert abs(t.qty(sid) - position[sid]) <= 1e-9 * scale(rows)


@SETTINGS
@given(fill_rows, marks, st.data())
def test_pnl_does_not_depend_on_how_fills_were_split(rows, mark_prices, data):
    split_rows = []
    for sid, side, qty, price, fee in rows:
        cents = round(qty * 100)
        parts = data.draw(st.integers(1, min(4, cents)))
        cuts = sorted(data.draw(st.lists(st.integers(1, cents - 1), min_size=parts - 1, max_size=parts - 1,
                                         unique=True))) if parts > 1 else []
        bounds = [0, *cuts, cents]
        for k in range(len(bounds) - 1):
            split_rows.append((sid, side, (bounds[k + 1] - bounds[k]) / 100, price, fee if k == 0 else 0.0))
    whole = booked(rows, mark_prices)
    split = booked(split_rows, mark_prices)
    tol = 1e-9 * scale(rows)
    for sid in range(3):
        a, b = whole.position(sid), split.position(sid)
        assert abs(a.qty - b.qty) <= tol
        assert abs(a.realized_pnl - b.realized_pnl) <= tol
        assert abs(a.unrealized_pnl - b.unrealized_pnl) <= tol
        assert abs(a.fees - b.fees) <= tol
        if abs(a.qty) > 1e-6:
            assert abs(a.avg_entry_price - b.avg_entry_price) <= 1e-9 * max(1.0, a.avg_entry_price)


@SETTINGS
@given(fill_rows, marks, st.data())
def test_replayed_fills_change_nothing(rows, mark_prices, data):
    t = PnlTracker(SYMBOLS, clock=lambda: T0)
    batch = fills(*rows)
    t.apply_fills(batch)
    t.update_marks(np.arange(3), np.array(mark_prices))
    st_before, ix_before, agg_before = t.st.copy(), t.ix.copy(), t.agg.copy()
    replay = batch[data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=2 * len(rows)))]
    assert (t.apply_fills(replay) == codes.FILL_DUPLICATE).all()
    for k in data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=5)):
        f = batch[k]
        assert t.apply_fill(int(f["symbol_id"]), int(f["side"]), f["qty"], f["price"], f["fee"],
                            int(f["exec_id"])).status == codes.FILL_DUPLICATE
    assert np.array_equal(t.st, st_before, equal_nan=True)
    assert np.array_equal(t.ix, ix_before)
    assert np.array_equal(t.agg, agg_before)


@SETTINGS
@given(fill_rows, fill_rows, marks, marks)
def test_daily_pnl_after_a_roll_is_the_change_in_net_pnl(yesterday, today, close_marks, now_marks):
    t = PnlTracker(SYMBOLS, clock=lambda: T0, start_ns=T0)
    t.apply_fills(fills(*yesterday))
    t.update_marks(np.arange(3), np.array(close_marks))
    net_at_close = t.net_pnl
    positions = [t.qty(s) for s in range(3)]
    t.reset_day(T0 + 1)
    assert [t.qty(s) for s in range(3)] == positions
    t.apply_fills(fills(*today))
    t.update_marks(np.arange(3), np.array(now_marks))
    tol = 1e-9 * (scale(yesterday) + scale(today))
    assert abs(t.daily_pnl - (t.net_pnl - net_at_close)) <= tol
    assert abs(t.fees_day - sum(f for *_, f in today)) <= tol
