"""Slippage guard: both sides of the band, for buys and sells, refuse or convert, price increments."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.execution import OrderRequest, SlippageGuard, SlippageRejected

# mid 100.00; a 50 bps band reaches 100.50 / 99.50
BID, ASK = 99.90, 100.10


def market(side: str, symbol: str = "AAPL") -> OrderRequest:
    return OrderRequest(symbol=symbol, side=side, qty=10)  # type: ignore[arg-type]


def limit(side: str, price: str) -> OrderRequest:
    return OrderRequest(symbol="AAPL", side=side, qty=10, type="limit", limit_price=Decimal(price))  # type: ignore[arg-type]


def test_market_orders_inside_the_band_pass() -> None:
    guard = SlippageGuard(50)
    assert guard.check(market("buy"), BID, ASK).outcome == "pass"
    decision = guard.check(market("sell"), BID, ASK)
    assert decision.outcome == "pass" and decision.deviation_bps == pytest.approx(10.0)


def test_market_order_beyond_the_band_is_refused() -> None:
    guard = SlippageGuard(50)
    with pytest.raises(SlippageRejected, match="AAPL: order price is 120.0 bps from the reference mid") as info:
        guard.check(market("buy"), 98.80, 101.20)  # half-spread 120 bps
    assert info.value.code == "SLIPPAGE_BAND" and guard.rejected == 1
    with pytest.raises(SlippageRejected):
        guard.check(market("sell"), 98.80, 101.20)


@pytest.mark.parametrize(("price", "outcome"), [("100.50", "pass"), ("100.51", "reject")])
def test_marketable_buy_limit_on_both_sides_of_the_band(price: str, outcome: str) -> None:
    guard = SlippageGuard(50)
    if outcome == "pass":
        assert guard.check(limit("buy", price), BID, ASK).outcome == "pass"
    else:
        with pytest.raises(SlippageRejected):
            guard.check(limit("buy", price), BID, ASK)


@pytest.mark.parametrize(("price", "outcome"), [("99.50", "pass"), ("99.49", "reject")])
def test_marketable_sell_limit_on_both_sides_of_the_band(price: str, outcome: str) -> None:
    guard = SlippageGuard(50)
    if outcome == "pass":
        assert guard.check(limit("sell", price), BID, ASK).outcome == "pass"
    else:
        with pytest.raises(SlippageRejected):
            guard.check(limit("sell", price), BID, ASK)


def test_passive_limits_and_stops_are_not_slippage() -> None:
    guard = SlippageGuard(50)
    assert guard.check(limit("buy", "80.00"), BID, ASK).outcome == "pass"
    assert guard.check(limit("sell", "120.00"), BID, ASK).outcome == "pass"
    stop = OrderRequest(symbol="AAPL", side="buy", qty=1, type="stop", stop_price=Decimal("150"))
    assert guard.check(stop, BID, ASK).outcome == "pass"


def test_limit_action_converts_to_a_limit_at_the_band_rounded_inside_it() -> None:
    guard = SlippageGuard(50, "limit")
    buy = guard.check(market("buy"), 98.80, 101.20)
    assert buy.outcome == "converted" and buy.request.type == "limit"
    assert buy.request.limit_price == Decimal("100.50")
    sell = guard.check(limit("sell", "90.00"), 98.80, 101.20)
    assert sell.request.limit_price == Decimal("99.50") and sell.request.qty == 10
    odd = guard.check(market("buy"), 33.30, 33.70)  # band edge 33.6675 -> 33.66 (down, inside the band)
    assert odd.request.limit_price == Decimal("33.66")
    odd_sell = guard.check(market("sell"), 33.30, 33.70)  # 33.3325 -> 33.34 (up)
    assert odd_sell.request.limit_price == Decimal("33.34")
    penny = guard.check(market("buy", "PENNY"), 0.4000, 0.6000)  # below $1: four decimals
    assert penny.request.limit_price == Decimal("0.5025")
    assert guard.converted == 5


def test_no_reference_quote_is_counted_not_guessed() -> None:
    guard = SlippageGuard(50)
    for bid, ask in ((None, None), (float("nan"), 100.0), (101.0, 100.0), (0.0, 1.0)):
        assert guard.check(market("buy"), bid, ask).outcome == "unchecked"
    assert guard.unchecked == 4


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SlippageGuard(0)
    with pytest.raises(ValueError):
        SlippageGuard(50, "ignore")  # type: ignore[arg-type]
