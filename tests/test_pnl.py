"""P&L tracker: positions, average entry, realised/unrealised P&L, fees, flips, duplicates, bad fills,
session rolls and the Alpaca position JSON, fill by fill against hand-computed figures."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from alpaca.trading.models import Position as AlpacaPosition
from test_risk_kit import NAN, T0, fills, make_engine

from engine.events import QUOTE_DTYPE, SIDE_BUY, SIDE_SELL
from engine.marketdata.symbols import SymbolMap
from engine.risk import PnlTracker, SessionClock, codes, exec_id_of

BUY, SELL = SIDE_BUY, SIDE_SELL
DAY = 86_400 * 1_000_000_000
A, B = 0, 1


def tracker(symbols=("AAA", "BBB"), **kwargs) -> PnlTracker:
    return PnlTracker(list(symbols), clock=lambda: T0, **kwargs)


def test_long_open_add_reduce_close():
    t = tracker()
    realized = np.zeros(4)
    status = t.apply_fills(fills((A, BUY, 100, 10.0), (A, BUY, 100, 12.0), (A, SELL, 50, 13.0), (A, SELL, 150, 9.0)),
                           realized_out=realized)
    assert status.tolist() == [codes.FILL_APPLIED] * 4
    assert realized.tolist() == [0.0, 0.0, 100.0, -300.0]
    p = t.position("AAA")
    assert (p.qty, p.avg_entry_price, p.realized_pnl, p.trade_count) == (0.0, 0.0, -200.0, 4)
    assert t.positions() == []


def test_long_average_entry_and_unrealised_at_the_mark():
    t = tracker()
    t.apply_fills(fills((A, BUY, 100, 10.0), (A, BUY, 100, 12.0), (A, SELL, 50, 13.0)))
    t.set_mark("AAA", 14.0)
    p = t.position("AAA")
    assert (p.qty, p.avg_entry_price, p.realized_pnl) == (150.0, 11.0, 100.0)
    assert p.unrealized_pnl == 450.0
    assert (p.side, p.market_value, p.cost_basis) == ("long", 2100.0, 1650.0)
    assert t.unrealized_pnl == 450.0


def test_short_open_add_cover():
    t = tracker()
    realized = np.zeros(3)
    t.apply_fills(fills((A, SELL, 100, 20.0), (A, SELL, 100, 22.0), (A, BUY, 50, 19.0)), realized_out=realized)
    t.set_mark("AAA", 18.0)
    p = t.position("AAA")
    assert (p.qty, p.avg_entry_price, p.side) == (-150.0, 21.0, "short")
    assert realized.tolist() == [0.0, 0.0, 100.0]
    assert p.unrealized_pnl == 450.0  # short 150 from 21, marked at 18
    assert (p.market_value, p.cost_basis) == (-2700.0, -3150.0)
    t.apply_fills(fills((A, BUY, 150, 23.0)))
    assert t.position("AAA").realized_pnl == 100.0 - 300.0
    assert t.position("AAA").qty == 0.0


def test_flip_through_zero_is_a_close_plus_an_open():
    t = tracker()
    realized = np.zeros(3)
    t.apply_fills(fills((A, BUY, 100, 10.0), (A, SELL, 150, 12.0), (A, BUY, 80, 11.0)), realized_out=realized)
    assert realized.tolist() == [0.0, 200.0, 50.0]  # close 100 long at +2; cover 50 short at +1
    p = t.position("AAA")
    assert (p.qty, p.avg_entry_price) == (30.0, 11.0)  # the remainder opened at the flip fill's price
    split = tracker()
    split.apply_fills(fills((A, BUY, 100, 10.0), (A, SELL, 100, 12.0), (A, SELL, 50, 12.0), (A, BUY, 50, 11.0),
                            (A, BUY, 30, 11.0)))
    q = split.position("AAA")
    assert (q.qty, q.avg_entry_price, q.realized_pnl) == (p.qty, p.avg_entry_price, p.realized_pnl)


def test_fees_are_kept_apart_and_net_pnl_subtracts_them():
    t = tracker()
    t.apply_fills(fills((A, BUY, 10, 100.0, 1.25), (A, SELL, 4, 105.0, 0.75), (B, SELL, 5, 50.0, -0.1)))
    t.set_mark("AAA", 103.0)
    t.set_mark("BBB", 49.0)
    assert t.fees == pytest.approx(1.9)
    assert t.position("BBB").fees == pytest.approx(-0.1)  # a rebate
    assert t.realized_pnl == 20.0
    assert t.unrealized_pnl == 6 * 3.0 + 5 * 1.0
    assert t.net_pnl == pytest.approx(20.0 + 23.0 - 1.9)
    assert t.daily_pnl == pytest.approx(t.net_pnl)
    assert t.position("AAA").trade_count == 2
    assert t.trade_count == 3


def test_duplicate_fills_are_applied_once():
    t = tracker()
    batch = fills((A, BUY, 10, 10.0, 0.1, 111), (A, BUY, 10, 10.0, 0.1, 111), (A, SELL, 5, 11.0, 0.1, 222))
    assert t.apply_fills(batch).tolist() == [codes.FILL_APPLIED, codes.FILL_DUPLICATE, codes.FILL_APPLIED]
    before = (t.st.copy(), t.ix.copy(), t.agg.copy())
    replay = t.apply_fills(batch[::-1].copy())  # a reconnect replays the stream
    assert replay.tolist() == [codes.FILL_DUPLICATE] * 3
    assert np.array_equal(before[0], t.st, equal_nan=True)
    assert np.array_equal(before[1], t.ix) and np.array_equal(before[2], t.agg)
    assert t.apply_fill("AAA", "buy", 10, 10.0, exec_id=111).status == codes.FILL_DUPLICATE
    assert t.apply_fill("AAA", "buy", 1, 10.0, exec_id="venue-exec-1").applied
    assert t.apply_fill("AAA", "buy", 1, 10.0, exec_id="venue-exec-1").status_name == "DUPLICATE"
    assert t.position("AAA").qty == 6.0
    assert t.fill_status_counts()["DUPLICATE"] == 6


def test_duplicate_set_grows_without_losing_ids():
    t = tracker()
    n = 3000  # beyond the initial table: forces rehashing
    many = fills(*[(A, BUY if k % 2 else SELL, 1, 10.0, 0.0, k + 1) for k in range(n)])
    assert (t.apply_fills(many) == codes.FILL_APPLIED).all()
    assert (t.apply_fills(many) == codes.FILL_DUPLICATE).all()
    assert t.position("AAA").trade_count == n


@pytest.mark.parametrize(
    ("row", "status"),
    [
        ((A, BUY, NAN, 10.0), codes.FILL_INVALID_QTY),
        ((A, BUY, -5.0, 10.0), codes.FILL_INVALID_QTY),
        ((A, BUY, 0.0, 10.0), codes.FILL_INVALID_QTY),
        ((A, BUY, math.inf, 10.0), codes.FILL_INVALID_QTY),
        ((A, BUY, 5.0, NAN), codes.FILL_INVALID_PRICE),
        ((A, BUY, 5.0, -1.0), codes.FILL_INVALID_PRICE),
        ((A, BUY, 5.0, 0.0), codes.FILL_INVALID_PRICE),
        ((A, BUY, 5.0, math.inf), codes.FILL_INVALID_PRICE),
        ((A, BUY, 5.0, 10.0, NAN), codes.FILL_INVALID_FEE),
        ((A, 0, 5.0, 10.0), codes.FILL_INVALID_SIDE),
        ((A, 2, 5.0, 10.0), codes.FILL_INVALID_SIDE),
        ((9, BUY, 5.0, 10.0), codes.FILL_UNKNOWN_SYMBOL),
        ((-1, BUY, 5.0, 10.0), codes.FILL_UNKNOWN_SYMBOL),
        ((A, BUY, 5.0, 10.0, 0.0, 0), codes.FILL_INVALID_EXEC_ID),
    ],
)
def test_bad_fills_are_counted_drops_that_change_nothing(row, status, caplog):
    t = tracker()
    got = t.apply_fills(fills((A, BUY, 1.0, 10.0, 0.0, 1), row, (A, BUY, 1.0, 10.0, 0.0, 2)))
    assert got.tolist() == [codes.FILL_APPLIED, status, codes.FILL_APPLIED]  # the fill after it still counts
    reference = tracker()
    reference.apply_fills(fills((A, BUY, 1.0, 10.0, 0.0, 1), (A, BUY, 1.0, 10.0, 0.0, 2)))
    assert np.array_equal(t.st, reference.st, equal_nan=True)
    assert np.array_equal(t.agg, reference.agg)
    assert t.fill_status_counts()[codes.FILL_STATUS_NAMES[status]] == 1
    assert "dropped 1 bad fill(s)" in caplog.text


def test_bad_single_fills_return_a_status_not_an_exception():
    t = tracker()
    assert t.apply_fill("ZZZ", "buy", 1, 10.0).status == codes.FILL_UNKNOWN_SYMBOL
    assert t.apply_fill("AAA", "hold", 1, 10.0).status == codes.FILL_INVALID_SIDE
    assert t.apply_fill("AAA", "buy", "lots", 10.0).status == codes.FILL_INVALID_QTY
    assert t.apply_fill("AAA", "buy", 1, None).status == codes.FILL_INVALID_PRICE
    assert t.position("AAA").qty == 0.0
    assert t.positions() == []


def test_marks_from_quotes_use_the_mid_and_drop_bad_quotes():
    t = tracker()
    q = np.zeros(5, dtype=QUOTE_DTYPE)
    q["symbol_id"] = [A, B, B, B, 7]
    q["bid_price"] = [10.0, 50.3, 0.0, NAN, 1.0]
    q["ask_price"] = [10.2, 50.2, 50.0, 50.0, 2.0]  # crossed, one-sided, NaN, unknown symbol
    assert t.update_marks_from_quotes(q) == 4
    assert t.mark("AAA") == pytest.approx(10.1)
    assert math.isnan(t.mark("BBB"))
    assert t.marks_dropped == 4
    assert t.update_marks(np.array([A, B, 5]), np.array([11.0, -1.0, 3.0])) == 2
    assert t.mark("AAA") == 11.0
    assert not t.set_mark("BBB", math.inf)


def test_first_fill_marks_an_unmarked_symbol():
    t = tracker()
    t.apply_fills(fills((A, BUY, 10, 25.0)))
    assert t.mark("AAA") == 25.0
    assert t.unrealized_pnl == 0.0


def test_session_roll_resets_day_figures_and_keeps_positions():
    t = tracker(session_reset_time="09:30", start_ns=T0)
    t.apply_fills(fills((A, BUY, 100, 10.0, 1.0), ts_ns=T0))
    t.set_mark("AAA", 11.0)
    assert t.daily_pnl == 99.0
    next_day = T0 + DAY  # 10:00 the next day, past the 09:30 boundary
    t.apply_fills(fills((A, SELL, 50, 12.0), ts_ns=next_day))
    p = t.position("AAA")
    assert (p.qty, p.avg_entry_price) == (50.0, 10.0)  # position and entry carried over
    assert (p.realized_pnl, p.realized_pnl_day) == (100.0, 100.0)
    assert (p.fees, p.fees_day) == (1.0, 0.0)
    assert (p.trade_count, p.trade_count_day) == (2, 1)
    assert p.lastday_price == 11.0
    # today's P&L is marked from yesterday's close (11), not from the entry price (10)
    assert t.daily_pnl == 50.0
    assert t.realized_pnl_day == 100.0
    assert t.session_start_ns == T0 + DAY - 30 * 60 * 1_000_000_000


def test_boundary_inside_a_batch_rolls_between_the_fills():
    t = tracker(session_reset_time="09:30", start_ns=T0)
    t.set_mark("AAA", 10.0)
    status = t.apply_fills(np.concatenate([
        fills((A, BUY, 10, 10.0, 0.5), ts_ns=T0),
        fills((A, BUY, 10, 10.0, 0.25), ts_ns=T0 + DAY),
        fills((A, BUY, 10, 10.0, 0.25), ts_ns=T0 + DAY + 1),
    ]))
    assert status.tolist() == [codes.FILL_APPLIED] * 3
    assert (t.fees, t.fees_day) == (1.0, 0.5)
    assert t.position("AAA").trade_count_day == 2


def test_roll_session_by_clock_without_fills():
    t = tracker(session_reset_time="09:30", start_ns=T0)
    t.apply_fills(fills((A, BUY, 10, 10.0)))
    t.set_mark("AAA", 9.0)
    assert t.daily_pnl == -10.0
    assert not t.roll_session(T0 + DAY - 31 * 60 * 1_000_000_000)  # 09:29: still yesterday
    assert t.roll_session(T0 + DAY - 30 * 60 * 1_000_000_000)      # 09:30 sharp: new session
    assert t.daily_pnl == 0.0
    assert t.net_pnl == -10.0  # lifetime figures stay


def test_session_clock_follows_daylight_saving():
    clock = SessionClock("00:00", "America/New_York")
    utc = dt.timezone.utc
    ns = lambda *a: int(dt.datetime(*a, tzinfo=utc).timestamp()) * 1_000_000_000  # noqa: E731
    assert clock.next_boundary_ns(ns(2024, 3, 9, 17)) == ns(2024, 3, 10, 5)  # EST midnight
    assert clock.next_boundary_ns(ns(2024, 3, 10, 17)) == ns(2024, 3, 11, 4)  # EDT midnight
    assert clock.session_start_ns(ns(2024, 3, 11, 3, 59)) == ns(2024, 3, 10, 5)
    assert clock.session_start_ns(ns(2024, 3, 11, 4)) == ns(2024, 3, 11, 4)


def test_bad_session_settings_are_clear_errors():
    with pytest.raises(ValueError, match="HH:MM"):
        SessionClock("9:30")
    with pytest.raises(ValueError, match="unknown time zone"):
        SessionClock("09:30", "Mars/Olympus")


def test_alpaca_position_json_long():
    t = tracker()
    t.apply_fills(fills((A, BUY, 5, 100.0), ts_ns=T0))
    t.set_lastday_price("AAA", 119.0)
    t.set_mark("AAA", 120.0)
    [pos] = t.alpaca_positions()
    assert {k: pos[k] for k in ("symbol", "qty", "qty_available", "side", "avg_entry_price", "market_value",
                                "cost_basis", "unrealized_pl", "unrealized_plpc", "current_price",
                                "lastday_price", "asset_class")} == {
        "symbol": "AAA", "qty": "5", "qty_available": "5", "side": "long", "avg_entry_price": "100",
        "market_value": "600", "cost_basis": "500", "unrealized_pl": "100", "unrealized_plpc": "0.2",
        "current_price": "120", "lastday_price": "119", "asset_class": "us_equity",
    }
    assert float(pos["change_today"]) == pytest.approx(1 / 119)
    assert all(isinstance(v, str) for k, v in pos.items() if k != "asset_marginable")
    parsed = AlpacaPosition.model_validate(pos)  # the official SDK reads it
    assert parsed.side.value == "long" and parsed.qty == "5"


def test_alpaca_position_json_short_with_orders_holding_part_of_it():
    engine = make_engine(["BTC/USD", "AAA"])
    engine.set_mark("BTC/USD", 100.0)
    engine.apply_fills(fills((A, SELL, 10, 100.0)))
    assert engine.check_order("BTC/USD", "buy", 4).approved  # holds 4 of the 10 for a closing order
    engine.set_mark("BTC/USD", 120.0)
    pos = engine.tracker.alpaca_position("BTC/USD")
    assert pos is not None
    assert (pos["qty"], pos["qty_available"], pos["side"]) == ("-10", "-6", "short")
    assert (pos["market_value"], pos["cost_basis"], pos["unrealized_pl"]) == ("-1200", "-1000", "-200")
    assert pos["unrealized_plpc"] == "-0.2"
    assert (pos["asset_class"], pos["exchange"]) == ("crypto", "CRYPTO")
    assert AlpacaPosition.model_validate(pos).side.value == "short"
    assert engine.tracker.alpaca_position("AAA") is None  # flat: Alpaca lists no position
    engine.tracker.set_asset_info("BTC/USD", asset_id="64bbff51-59d6-4b3c-9351-13ad85e3c752")
    assert engine.tracker.alpaca_positions()[0]["asset_id"] == "64bbff51-59d6-4b3c-9351-13ad85e3c752"


def test_shared_symbol_map_grows_and_ids_stay():
    shared = SymbolMap(["AAA"])
    t = PnlTracker(shared, clock=lambda: T0)
    t.apply_fills(fills((A, BUY, 1, 10.0)))
    for k in range(40):  # beyond the initial capacity
        shared.add(f"S{k:02d}")
    late = shared.get("S39")
    assert t.apply_fills(fills((late, SELL, 2, 5.0))).tolist() == [codes.FILL_APPLIED]
    assert t.qty("S39") == -2.0 and t.qty("AAA") == 1.0
    assert t.capacity >= 41
    assert t.apply_fill("S00", "buy", 3, 4.0).applied


def test_exec_id_hash_is_stable_and_never_zero():
    assert exec_id_of("a1b2") == exec_id_of("a1b2")
    assert exec_id_of("a1b2") != exec_id_of("a1b3")
    assert exec_id_of("") != 0
    assert -(2**63) <= exec_id_of("x") < 2**63


def test_unknown_symbol_lookups_by_name_raise_key_error():
    t = tracker()
    with pytest.raises(KeyError, match="ZZZ"):
        t.position("ZZZ")
    assert t.symbol_id("ZZZ") == -1
