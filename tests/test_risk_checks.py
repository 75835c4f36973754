"""Pre-trade checks: every limit on both sides of its boundary, every denial's code and reason,
bad input, trading states, the sliding rate window, and batches that must not breach collectively."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_risk_kit import NAN, SECOND, T0, fill_at, fills, make_engine, orders

from engine.config import RiskConfig
from engine.events import ORDER_LIMIT, ORDER_MARKET, ORDER_STOP, ORDER_STOP_LIMIT, SIDE_BUY, SIDE_SELL
from engine.risk import codes

BUY, SELL = SIDE_BUY, SIDE_SELL
A, B, C = 0, 1, 2


def test_max_order_qty_boundary():
    engine = make_engine(max_order_qty=100)
    engine.set_mark("AAA", 10.0)
    assert engine.check_order("AAA", "buy", 100).approved
    d = engine.check_order("AAA", "buy", 100.5)
    assert d.code == codes.DENY_MAX_ORDER_QTY == 30
    assert d.reason == "max_order_qty 100 exceeded: order qty 100.5"
    assert d.attempted == 100.5


@pytest.mark.parametrize("side", [BUY, SELL])
def test_max_position_qty_boundary_counts_in_flight_orders(side):
    engine = make_engine(max_order_qty=1_000, max_position_qty=300)
    engine.set_mark("AAA", 10.0)
    fill_at(engine, A, side, 250, 10.0)
    assert engine.check(A, side, 50.0, ts_ns=T0) == codes.RISK_APPROVED  # 250 filled + 50 in flight = 300
    code = engine.check(A, side, 0.5, ts_ns=T0 + 1)
    assert code == codes.DENY_MAX_POSITION_QTY
    assert engine.last_attempted == side * 300.5
    assert engine.explain(code, engine.last_attempted) == (
        f"max_position_qty 300 exceeded: position with in-flight orders would be {side * 300.5:g}"
    )


def test_max_symbol_notional_boundary():
    engine = make_engine(max_symbol_notional=20_000)
    engine.set_mark("AAA", 100.0)
    assert engine.check_order("AAA", "buy", 100).approved
    assert engine.check_order("AAA", "buy", 100).approved  # 200 x 100 = 20,000: at the limit
    d = engine.check_order("AAA", "buy", 0.01)
    assert d.code == codes.DENY_MAX_SYMBOL_NOTIONAL
    assert d.reason == "max_symbol_notional 20000 exceeded: symbol notional would be 20001"


def test_max_gross_notional_boundary_across_symbols():
    engine = make_engine(max_order_qty=1_000, max_symbol_notional=1e9, max_gross_notional=50_000)
    engine.set_mark("AAA", 250.0)
    engine.set_mark("BBB", 250.0)
    fill_at(engine, A, BUY, 100, 250.0)  # 25,000 filled
    assert engine.check_order("BBB", "sell", 100).approved  # 25,000 in flight (short side counts too)
    assert engine.gross_exposure == 50_000
    d = engine.check_order("BBB", "sell", 0.004)
    assert d.code == codes.DENY_MAX_GROSS_NOTIONAL
    assert d.reason == "max_gross_notional 50000 exceeded: gross notional would be 50001"


def test_max_open_positions_boundary():
    engine = make_engine(max_open_positions=2)
    for sym in ("AAA", "BBB", "CCC"):
        engine.set_mark(sym, 10.0)
    fill_at(engine, A, BUY, 10, 10.0)
    assert engine.check_order("BBB", "buy", 10).approved  # an order in flight opens a position too
    assert engine.open_positions == 2
    d = engine.check_order("CCC", "buy", 10)
    assert d.code == codes.DENY_MAX_OPEN_POSITIONS
    assert d.reason == "max_open_positions 2 exceeded: open positions would be 3"
    # adding to or closing an open position is not a new one
    assert engine.check_order("AAA", "buy", 1).approved
    assert engine.check_order("AAA", "sell", 11).approved
    # once AAA is flat and nothing is in flight there, CCC fits
    engine.apply_fills(fills((A, BUY, 1, 10.0), (A, SELL, 11, 10.0)))
    assert engine.open_positions == 1  # BBB's order is still in flight
    assert engine.check_order("CCC", "buy", 10).approved


def test_max_open_positions_zero_allows_nothing_new():
    engine = make_engine(max_open_positions=0)
    engine.set_mark("AAA", 10.0)
    d = engine.check_order("AAA", "buy", 1)
    assert d.code == codes.DENY_MAX_OPEN_POSITIONS
    assert d.reason == "max_open_positions 0 exceeded: open positions would be 1"


@pytest.mark.parametrize(
    ("side", "at_limit", "past_limit"),
    [(BUY, 100.5, 100.51), (SELL, 99.5, 99.49)],
)
def test_price_band_boundary(side, at_limit, past_limit):
    engine = make_engine(price_band_bps=50)
    engine.set_mark("AAA", 100.0)
    assert engine.check_order("AAA", side, 1, limit_price=at_limit).approved
    d = engine.check_order("AAA", side, 1, limit_price=past_limit)
    assert d.code == codes.DENY_PRICE_BAND
    assert d.reason == "price_band_bps 50 exceeded: limit price is 51 bps through the mid"


def test_price_band_lets_passive_prices_and_checks_stop_limits():
    engine = make_engine(price_band_bps=50)
    engine.set_mark("AAA", 100.0)
    assert engine.check_order("AAA", "buy", 1, limit_price=90.0).approved
    assert engine.check_order("AAA", "sell", 1, limit_price=110.0).approved
    d = engine.check_order("AAA", "buy", 1, limit_price=101.0, stop_price=100.5)
    assert (d.code, d.attempted) == (codes.DENY_PRICE_BAND, pytest.approx(100.0))
    # a plain stop order has no limit price to check
    assert engine.check_order("AAA", "buy", 1, stop_price=130.0).approved


def test_short_selling_disallowed_boundary():
    engine = make_engine(allow_short=False)
    engine.set_mark("AAA", 10.0)
    fill_at(engine, A, BUY, 10, 10.0)
    assert engine.check_order("AAA", "sell", 10).approved  # down to exactly flat
    d = engine.check_order("AAA", "sell", 0.5)
    assert d.code == codes.DENY_SHORT_NOT_ALLOWED
    assert d.reason == "allow_short is false: the sell would leave the position (with in-flight orders) at -0.5"
    shorting = make_engine(allow_short=True)
    shorting.set_mark("AAA", 10.0)
    assert shorting.check_order("AAA", "sell", 5).approved


def test_daily_loss_breach_halts_by_itself():
    engine = make_engine(max_daily_loss=1_000)
    engine.set_mark("AAA", 100.0)
    fill_at(engine, A, BUY, 100, 100.0)
    engine.set_mark("AAA", 90.0)  # -1,000: exactly at the limit
    assert engine.state == "ACTIVE"
    assert engine.check_order("AAA", "sell", 1).approved
    engine.set_mark("AAA", 89.99)  # -1,001: past it; no order needed to trip the switch
    assert engine.daily_pnl == pytest.approx(-1_001)
    assert engine.state == "HALTED"
    assert engine.halted_by_daily_loss
    d = engine.check_order("AAA", "sell", 1)
    assert d.code == codes.DENY_DAILY_LOSS
    assert d.reason == "max_daily_loss 1000 breached: daily P&L is -1001; trading state is HALTED"
    engine.set_mark("AAA", 100.0)  # the market recovering does not un-halt
    assert engine.state == "HALTED"
    engine.resume("risk officer")
    assert engine.check_order("AAA", "sell", 1).approved


def test_daily_loss_counts_fees_and_realised_losses():
    engine = make_engine(max_daily_loss=1_000)
    engine.set_mark("AAA", 100.0)
    fill_at(engine, A, BUY, 100, 100.0, fee=1.0)
    fill_at(engine, A, SELL, 100, 90.01, fee=0.0)  # realised -999, fees 1: exactly -1,000
    assert engine.state == "ACTIVE"
    fill_at(engine, A, BUY, 1, 100.0, fee=0.5)
    assert engine.state == "HALTED"
    assert engine.check(A, BUY, 1.0, ts_ns=T0) == codes.DENY_DAILY_LOSS


def test_rate_limit_window_slides():
    engine = make_engine(max_orders_per_window=5, rate_window_s=1.0)
    engine.set_mark("AAA", 10.0)
    for k in range(5):
        assert engine.check(A, BUY, 1.0, ts_ns=T0 + k) == codes.RISK_APPROVED
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + SECOND // 2) == codes.DENY_RATE_LIMIT
    assert engine.explain(codes.DENY_RATE_LIMIT, engine.last_attempted) == (
        "max_orders_per_window 5 per 1 s exceeded: this would be order 6 in the window"
    )
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + SECOND - 1) == codes.DENY_RATE_LIMIT
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + SECOND) == codes.RISK_APPROVED  # T0 left the window
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + SECOND) == codes.DENY_RATE_LIMIT  # T0+1 has not
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + SECOND + 1) == codes.RISK_APPROVED


def test_denied_orders_do_not_use_the_rate_window():
    engine = make_engine(max_orders_per_window=2, max_order_qty=10)
    engine.set_mark("AAA", 10.0)
    for k in range(5):
        assert engine.check(A, BUY, 11.0, ts_ns=T0 + k) == codes.DENY_MAX_ORDER_QTY
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + 5) == codes.RISK_APPROVED
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + 6) == codes.RISK_APPROVED
    assert engine.check(A, BUY, 1.0, ts_ns=T0 + 7) == codes.DENY_RATE_LIMIT


def test_halted_denies_every_order_even_reducing_ones():
    engine = make_engine()
    engine.set_mark("AAA", 10.0)
    fill_at(engine, A, BUY, 10, 10.0)
    engine.halt("kill switch test")
    assert engine.state == "HALTED"
    for side, qty in ((SELL, 10), (SELL, 1), (BUY, 1)):
        d = engine.check_order("AAA", side, qty)
        assert d.code == codes.DENY_HALTED
        assert d.reason == "trading state is HALTED: every new order is denied"
    engine.resume()
    assert engine.check_order("AAA", "sell", 10).approved


def test_reducing_only_lets_orders_that_shrink_the_position():
    engine = make_engine()
    engine.set_mark("AAA", 10.0)
    engine.set_mark("BBB", 10.0)
    fill_at(engine, A, BUY, 100, 10.0)
    fill_at(engine, B, SELL, 50, 10.0)
    engine.reduce_only()
    d = engine.check_order("AAA", "buy", 1)
    assert d.code == codes.DENY_REDUCING
    assert d.reason == (
        "trading state is REDUCING: only orders that shrink the position pass; "
        "this one would take the position (with in-flight orders) to 101"
    )
    assert engine.check_order("AAA", "sell", 60).approved
    assert engine.check_order("AAA", "sell", 40).approved  # with the 60 in flight: exactly flat
    assert engine.check_order("AAA", "sell", 1).code == codes.DENY_REDUCING  # would go short
    assert engine.check_order("BBB", "buy", 50).approved  # covering the short
    assert engine.check_order("BBB", "sell", 1).code == codes.DENY_REDUCING
    assert engine.check_order("CCC", "buy", 1).code in (codes.DENY_NO_MARK, codes.DENY_REDUCING)
    engine.set_mark("CCC", 10.0)
    assert engine.check_order("CCC", "buy", 1).code == codes.DENY_REDUCING  # flat: nothing to reduce


def test_initial_state_comes_from_config():
    assert make_engine(initial_state="HALTED").state == "HALTED"
    engine = make_engine(initial_state="REDUCING")
    engine.set_mark("AAA", 10.0)
    assert engine.state == "REDUCING"
    assert engine.check_order("AAA", "buy", 1).code == codes.DENY_REDUCING


def test_reductions_pass_when_a_position_is_already_over_the_limits():
    engine = make_engine(max_order_qty=1_000, max_position_qty=300)
    engine.set_mark("AAA", 10.0)
    fill_at(engine, A, BUY, 300, 10.0)
    engine.reconfigure(RiskConfig(max_order_qty=1_000, max_position_qty=100))
    assert engine.check_order("AAA", "sell", 50).approved  # 250: still over 100, but smaller
    d = engine.check_order("AAA", "buy", 1)
    assert (d.code, d.attempted) == (codes.DENY_MAX_POSITION_QTY, 301)


@pytest.mark.parametrize(
    ("kwargs", "code", "reason"),
    [
        ({"qty": NAN}, codes.DENY_INVALID_QTY, "invalid order qty nan: must be a finite number above 0"),
        ({"qty": math.inf}, codes.DENY_INVALID_QTY, "invalid order qty inf: must be a finite number above 0"),
        ({"qty": -5.0}, codes.DENY_INVALID_QTY, "invalid order qty -5: must be a finite number above 0"),
        ({"qty": "ten"}, codes.DENY_INVALID_QTY, "invalid order qty nan: must be a finite number above 0"),
        ({"qty": 0.0}, codes.DENY_ZERO_QTY, "order qty is 0: there is nothing to trade"),
        ({"limit_price": NAN}, codes.DENY_INVALID_PRICE,
         "invalid order price nan: a limit or stop price must be a finite number above 0"),
        ({"limit_price": math.inf}, codes.DENY_INVALID_PRICE,
         "invalid order price inf: a limit or stop price must be a finite number above 0"),
        ({"limit_price": -10.0}, codes.DENY_INVALID_PRICE,
         "invalid order price -10: a limit or stop price must be a finite number above 0"),
        ({"limit_price": 0.0}, codes.DENY_INVALID_PRICE,
         "invalid order price 0: a limit or stop price must be a finite number above 0"),
        ({"stop_price": -1.0}, codes.DENY_INVALID_PRICE,
         "invalid order price -1: a limit or stop price must be a finite number above 0"),
        ({"side": 0}, codes.DENY_INVALID_SIDE, "invalid side 0: must be 1 (buy) or -1 (sell)"),
        ({"side": "hold"}, codes.DENY_INVALID_SIDE, "invalid side 0: must be 1 (buy) or -1 (sell)"),
        ({"order_type": 9}, codes.DENY_INVALID_ORDER_TYPE,
         "invalid order type 9: must be 0 (market), 1 (limit), 2 (stop) or 3 (stop limit)"),
        ({"symbol": "ZZZ"}, codes.DENY_UNKNOWN_SYMBOL, "unknown symbol 'ZZZ': not registered with the risk engine"),
        ({"symbol": 99}, codes.DENY_UNKNOWN_SYMBOL,
         "unknown symbol: symbol id 99 is not registered with the risk engine"),
        ({"symbol": -1}, codes.DENY_UNKNOWN_SYMBOL,
         "unknown symbol: symbol id -1 is not registered with the risk engine"),
        ({"symbol": "BBB"}, codes.DENY_NO_MARK,
         "no mid price for the symbol yet: notional and price band cannot be checked"),
    ],
)
def test_bad_input_is_a_denial_with_its_own_code(kwargs, code, reason):
    engine = make_engine()
    engine.set_mark("AAA", 10.0)
    order = {"symbol": "AAA", "side": "buy", "qty": 1.0, **kwargs}
    if "limit_price" in kwargs:
        order["order_type"] = ORDER_LIMIT
    if "stop_price" in kwargs:
        order["order_type"] = ORDER_STOP
    d = engine.check_order(order.pop("symbol"), order.pop("side"), order.pop("qty"), **order)
    assert (d.code, d.reason) == (code, reason)
    assert engine.tracker.position("AAA").pending_buy_qty == 0.0


def test_bad_records_in_a_batch_are_denied_and_the_rest_still_checked():
    engine = make_engine()
    engine.set_mark("AAA", 10.0)
    batch = orders(
        (A, BUY, NAN), (A, BUY, -1.0), (A, BUY, 0.0), (A, BUY, math.inf), (A, BUY, 1.0, NAN),
        (A, BUY, 1.0, -3.0), (7, BUY, 1.0), (-2, BUY, 1.0), (A, 0, 1.0), (B, BUY, 1.0), (A, BUY, 2.0),
    )
    batch[4]["order_type"] = ORDER_LIMIT
    codes_out = engine.check_orders(batch, now_ns=T0)
    assert codes_out.tolist() == [
        codes.DENY_INVALID_QTY, codes.DENY_INVALID_QTY, codes.DENY_ZERO_QTY, codes.DENY_INVALID_QTY,
        codes.DENY_INVALID_PRICE, codes.DENY_INVALID_PRICE, codes.DENY_UNKNOWN_SYMBOL,
        codes.DENY_UNKNOWN_SYMBOL, codes.DENY_INVALID_SIDE, codes.DENY_NO_MARK, codes.RISK_APPROVED,
    ]
    assert engine.tracker.position("AAA").pending_buy_qty == 2.0


def test_batch_cannot_breach_a_limit_collectively():
    engine = make_engine(max_order_qty=100, max_position_qty=300)
    engine.set_mark("AAA", 10.0)
    batch = orders(*[(A, BUY, 100.0)] * 5)
    attempted = np.zeros(5)
    codes_out = engine.check_orders(batch, now_ns=T0, attempted=attempted)
    assert codes_out.tolist() == [0, 0, 0, codes.DENY_MAX_POSITION_QTY, codes.DENY_MAX_POSITION_QTY]
    assert attempted.tolist() == [100, 100, 100, 400, 400]
    reasons = [d.reason for d in engine.decisions(codes_out, attempted)]
    assert reasons[3] == "max_position_qty 300 exceeded: position with in-flight orders would be 400"
    # the next call sees the batch's approvals as in flight
    assert engine.check(A, BUY, 1.0, ts_ns=T0) == codes.DENY_MAX_POSITION_QTY


def test_batch_gross_and_rate_limits_accumulate_within_the_batch():
    engine = make_engine(max_order_qty=1_000, max_symbol_notional=1e9, max_gross_notional=30_000,
                         max_orders_per_window=4)
    for sym in ("AAA", "BBB", "CCC"):
        engine.set_mark(sym, 100.0)
    batch = orders((A, BUY, 100.0), (B, SELL, 100.0), (C, BUY, 100.0), (C, BUY, 1.0), (A, SELL, 50.0), (B, BUY, 1.0))
    codes_out = engine.check_orders(batch, now_ns=T0)
    # 3 x 10k = 30k is at the limit, so +100 more is denied; selling A (long 100 in flight) does not
    # grow its worst case and passes; that is the 4th approval, so the rate window is then full
    assert codes_out.tolist() == [0, 0, 0, codes.DENY_MAX_GROSS_NOTIONAL, 0, codes.DENY_RATE_LIMIT]


def test_fills_and_cancels_release_in_flight_quantity():
    engine = make_engine(max_order_qty=1_000, max_position_qty=100)
    engine.set_mark("AAA", 10.0)
    assert engine.check_order("AAA", "buy", 100).approved
    assert engine.check_order("AAA", "buy", 1).code == codes.DENY_MAX_POSITION_QTY
    fill_at(engine, A, BUY, 40, 10.0)  # partial fill: 40 filled + 60 in flight
    p = engine.tracker.position("AAA")
    assert (p.qty, p.pending_buy_qty) == (40, 60)
    assert engine.check_order("AAA", "buy", 1).code == codes.DENY_MAX_POSITION_QTY
    canceled = orders((A, BUY, 100.0))
    canceled[0]["filled_qty"] = 40.0
    assert engine.release_orders(canceled) == 0  # the other 60 will never fill
    assert engine.tracker.position("AAA").pending_buy_qty == 0
    assert engine.check_order("AAA", "buy", 60).approved
    assert engine.release("AAA", "buy", 1_000)  # over-release clamps at zero
    assert engine.tracker.position("AAA").pending_buy_qty == 0
    assert not engine.release("ZZZ", "buy", 1)
    assert not engine.release("AAA", "buy", NAN)


def test_single_and_batch_paths_agree():
    def run(batch_mode):
        engine = make_engine(max_order_qty=50, max_position_qty=120, max_open_positions=2, max_orders_per_window=6)
        for sym in ("AAA", "BBB", "CCC"):
            engine.set_mark(sym, 20.0)
        rows = [(A, BUY, 50.0), (A, BUY, 50.0), (A, BUY, 30.0), (B, SELL, 10.0, 19.0), (C, BUY, 1.0),
                (A, SELL, 60.0), (B, SELL, 51.0), (B, SELL, 5.0, 21.0), (A, BUY, 1.0)]
        batch = orders(*rows)
        if batch_mode:
            return engine.check_orders(batch, now_ns=T0).tolist()
        return [engine.check(o["symbol_id"], o["side"], o["qty"], o["limit_price"], o["order_type"],
                             o["stop_price"], T0) for o in batch]

    assert run(True) == run(False)


def test_decision_counts_and_order_type_inference():
    engine = make_engine()
    engine.set_mark("AAA", 10.0)
    engine.check_order("AAA", "buy", 1)
    engine.check_order("AAA", "buy", 0)
    engine.check_order("AAA", "buy", 1, limit_price=10.0, order_type="limit")
    engine.check_order("AAA", "buy", 1, limit_price=10.0, stop_price=10.0, order_type=ORDER_STOP_LIMIT)
    engine.check_order("AAA", "buy", 1, order_type="iceberg")
    counts = engine.decision_counts()
    assert counts["APPROVED"] == 3
    assert counts["ZERO_QTY"] == 1
    assert counts["INVALID_ORDER_TYPE"] == 1
    assert engine.check(A, BUY, 1.0, NAN, ORDER_MARKET, NAN, T0) == codes.RISK_APPROVED


def test_symbols_added_to_a_shared_map_later_are_checked_by_id():
    from engine.marketdata.symbols import SymbolMap
    from engine.risk import PnlTracker, RiskEngine

    shared = SymbolMap(["AAA"])
    engine = RiskEngine(RiskConfig(), PnlTracker(shared, clock=lambda: T0))
    late = [shared.add(f"L{k:02d}") for k in range(40)]  # past the initial capacity: arrays grow
    engine.tracker.update_marks(np.array(late), np.full(len(late), 10.0))
    assert engine.check(late[-1], BUY, 5.0, ts_ns=T0) == codes.RISK_APPROVED
    extra = shared.add("LATEST")
    assert engine.tracker.set_mark(extra, 10.0)  # marking registers the new id
    assert engine.check(extra, BUY, 1.0, ts_ns=T0) == codes.RISK_APPROVED
    newest = shared.add("NEWEST")  # nothing synced it: the check does, on its way to the denial
    assert engine.check(newest, BUY, 1.0, ts_ns=T0) == codes.DENY_NO_MARK
    assert engine.tracker.position(late[-1]).pending_buy_qty == 5.0


def test_exposure_and_daily_pnl_totals_match_a_recount():
    rng = np.random.default_rng(3)
    engine = make_engine(max_order_qty=1e6, max_position_qty=1e9, max_symbol_notional=1e12,
                         max_gross_notional=1e12, max_daily_loss=1e12, max_orders_per_window=100_000)
    t = engine.tracker
    for step in range(3_000):  # crosses the periodic exact re-sum
        sid = int(rng.integers(0, 4))
        action = rng.integers(0, 4)
        if action == 0:
            t.set_mark(sid, float(rng.integers(50, 150)))
        elif action == 1:
            engine.check(sid, int(rng.choice([1, -1])), float(rng.integers(1, 50)), ts_ns=T0 + step)
        elif action == 2:
            engine.apply_fills(fills((sid, int(rng.choice([1, -1])), float(rng.integers(1, 50)),
                                      float(rng.integers(50, 150)))))
        else:
            engine.release(sid, int(rng.choice([1, -1])), float(rng.integers(1, 50)))
        if step % 500 == 0 or step == 2_999:
            gross = 0.0
            for p in (t.position(s) for s in range(4)):
                if p.qty or p.pending_buy_qty or p.pending_sell_qty:
                    gross += max(abs(p.qty + p.pending_buy_qty), abs(p.qty - p.pending_sell_qty)) * p.mark
            assert engine.gross_exposure == pytest.approx(gross, rel=1e-9, abs=1e-6)
            assert t.daily_pnl == pytest.approx(sum(t.position(s).daily_pnl for s in range(4)), rel=1e-9, abs=1e-6)
            assert t.daily_pnl == pytest.approx(t.net_pnl, rel=1e-9, abs=1e-6)


def test_output_buffers_are_validated_before_any_kernel_runs():
    engine = make_engine()
    engine.set_mark("AAA", 10.0)
    batch = orders((A, BUY, 1.0), (A, BUY, 1.0))
    with pytest.raises(ValueError, match="codes must be a 1-d int32 array of at least 2"):
        engine.check_orders(batch, codes=np.zeros(1, dtype=np.int32))
    with pytest.raises(ValueError, match="attempted must be a 1-d float64 array"):
        engine.check_orders(batch, attempted=np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="realized_out must be a 1-d float64 array"):
        engine.apply_fills(fills((A, BUY, 1.0, 10.0)), realized_out=np.zeros(0))
    with pytest.raises(TypeError, match="ORDER_DTYPE"):
        engine.check_orders(fills((A, BUY, 1.0, 10.0)))
    assert engine.tracker.position("AAA").pending_buy_qty == 0.0


def test_public_api_is_what_the_docs_list():
    import engine.risk as risk

    assert sorted(risk.__all__) == sorted([
        "DENIAL_NAMES", "FILL_STATUS_NAMES", "RISK_APPROVED", "STATE_ACTIVE", "STATE_HALTED", "STATE_REDUCING",
        "AssetInfo", "Decision", "FillResult", "PnlTracker", "Position", "RiskEngine", "SessionClock",
        "SymbolLookup", "codes", "denial_name", "exec_id_of", "warm_up",
    ])
    assert all(hasattr(risk, name) for name in risk.__all__)
