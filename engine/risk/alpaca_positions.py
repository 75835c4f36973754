"""A tracker position as the JSON object of Alpaca's ``GET /v2/positions`` (every decimal a string).

Signs follow Alpaca: a short position has a negative ``qty``, ``market_value`` and ``cost_basis``
and ``side: "short"``. Percentages are fractions ("by a factor of 1"). ``qty_available`` is the
position less the quantity held by in-flight orders that would close it. Without a known
``lastday_price`` (before the first session roll or ``set_lastday_price``) the current price stands in
and ``change_today`` is 0. The ``asset_id`` is a stable UUID derived from the symbol unless the
caller sets Alpaca's own through ``PnlTracker.set_asset_info``.
"""

from __future__ import annotations

import math
import uuid
from decimal import Decimal

from engine.risk.pnl import AssetInfo, Position

_ASSET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://tickforge/asset")


def default_asset_info(symbol: str) -> AssetInfo:
    """Crypto pairs (``BTC/USD``) are ``crypto`` on ``CRYPTO``; anything else a US equity whose
    exchange is unknown (Alpaca's empty exchange value)."""
    crypto = "/" in symbol
    return AssetInfo(
        asset_id=str(uuid.uuid5(_ASSET_NAMESPACE, symbol)),
        exchange="CRYPTO" if crypto else "",
        asset_class="crypto" if crypto else "us_equity",
    )


def decimal_text(value: float, places: int = 10) -> str:
    """A float as a plain decimal string (no exponent, no trailing zeros); non-finite as ``"0"``."""
    if not math.isfinite(value):
        return "0"
    text = format(Decimal(repr(round(value, places))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def to_alpaca_position(p: Position, asset: AssetInfo) -> dict[str, object]:
    """The Alpaca position object for one open position."""
    mark = p.mark if math.isfinite(p.mark) else p.avg_entry_price
    lastday = p.lastday_price if math.isfinite(p.lastday_price) and p.lastday_price > 0 else mark
    market_value = p.qty * mark
    cost_basis = p.qty * p.avg_entry_price
    unrealized = market_value - cost_basis
    intraday_basis = p.qty * p.intraday_basis_price
    unrealized_intraday = market_value - intraday_basis
    # orders that would close the position hold part of it (Alpaca: "minus open orders")
    if p.qty > 0:
        available = max(p.qty - p.pending_sell_qty, 0.0)
    else:
        available = min(p.qty + p.pending_buy_qty, 0.0)
    return {
        "asset_id": asset.asset_id,
        "symbol": p.symbol,
        "exchange": asset.exchange,
        "asset_class": asset.asset_class,
        "asset_marginable": asset.asset_class == "us_equity",
        "avg_entry_price": decimal_text(p.avg_entry_price),
        "qty": decimal_text(p.qty, 9),
        "qty_available": decimal_text(available, 9),
        "side": p.side,
        "market_value": decimal_text(market_value, 6),
        "cost_basis": decimal_text(cost_basis, 6),
        "unrealized_pl": decimal_text(unrealized, 6),
        "unrealized_plpc": decimal_text(_ratio(unrealized, abs(cost_basis)), 16),
        "unrealized_intraday_pl": decimal_text(unrealized_intraday, 6),
        "unrealized_intraday_plpc": decimal_text(_ratio(unrealized_intraday, abs(intraday_basis)), 16),
        "current_price": decimal_text(mark),
        "lastday_price": decimal_text(lastday),
        "change_today": decimal_text(_ratio(mark - lastday, lastday), 16),
    }
