"""Helpers shared by the risk and P&L tests (no tests here): engines with small limits, fills and
orders at fixed times."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np

from engine.config import RiskConfig
from engine.events import FILL_DTYPE, ORDER_DTYPE, ORDER_LIMIT, ORDER_MARKET
from engine.risk import PnlTracker, RiskEngine

NY = dt.timezone(dt.timedelta(hours=-5))  # EST, fixed offset: the dates used below are in winter
# 2024-03-05 10:00 New York: inside the session that starts at midnight New York
T0 = int(dt.datetime(2024, 3, 5, 10, 0, tzinfo=NY).timestamp()) * 1_000_000_000
SECOND = 1_000_000_000
NAN = float("nan")
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]

_exec_ids = itertools.count(1)


def make_engine(symbols=SYMBOLS, now_ns: int = T0, **limits) -> RiskEngine:
    """A RiskEngine over a fresh tracker whose clock stands still at ``now_ns``; ``limits``
    override RiskConfig fields."""
    config = RiskConfig(**limits)
    tracker = PnlTracker.from_config(config, symbols, clock=lambda: now_ns)
    return RiskEngine(config, tracker)


def fills(*rows, ts_ns: int = T0) -> np.ndarray:
    """FILL_DTYPE array from ``(symbol_id, side, qty, price[, fee[, exec_id]])`` rows; exec ids
    are unique unless given."""
    out = np.zeros(len(rows), dtype=FILL_DTYPE)
    for i, row in enumerate(rows):
        sid, side, qty, price = row[:4]
        fee = row[4] if len(row) > 4 else 0.0
        exec_id = row[5] if len(row) > 5 else next(_exec_ids)
        out[i] = (ts_ns, 0, exec_id, sid, side, qty, price, fee)
    return out


def orders(*rows, ts_ns: int = T0) -> np.ndarray:
    """ORDER_DTYPE array from ``(symbol_id, side, qty[, limit_price])`` rows (market without a price)."""
    out = np.zeros(len(rows), dtype=ORDER_DTYPE)
    for i, row in enumerate(rows):
        sid, side, qty = row[:3]
        limit = row[3] if len(row) > 3 else NAN
        kind = ORDER_MARKET if np.isnan(limit) else ORDER_LIMIT
        out[i] = (ts_ns, i, sid, side, kind, 0, 0, qty, limit, NAN, 0.0, 0.0)
    return out


def fill_at(engine: RiskEngine, sid: int, side: int, qty: float, price: float, fee: float = 0.0) -> None:
    """Book one fill (unique execution id) and assert it was applied."""
    status = engine.apply_fills(fills((sid, side, qty, price, fee)))
    assert status.tolist() == [0]
