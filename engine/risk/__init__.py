"""Pre-trade risk and P&L: numba limit checks, the trading-state kill switch, the position book.

``RiskEngine`` gates orders (``check`` by id on the hot path, ``check_orders`` for an ORDER_DTYPE
batch, ``check_order`` by symbol name with a reason); ``PnlTracker`` books fills and marks and is the
one record of positions the risk checks read. Codes are stable integers in ``engine.risk.codes``.
"""

from engine.risk import codes
from engine.risk.codes import (
    DENIAL_NAMES,
    FILL_STATUS_NAMES,
    RISK_APPROVED,
    STATE_ACTIVE,
    STATE_HALTED,
    STATE_REDUCING,
    denial_name,
)
from engine.risk.engine import Decision, RiskEngine, warm_up
from engine.risk.pnl import AssetInfo, FillResult, PnlTracker, Position, exec_id_of
from engine.risk.session import SessionClock
from engine.risk.symbols import SymbolLookup

__all__ = [
    "DENIAL_NAMES",
    "FILL_STATUS_NAMES",
    "RISK_APPROVED",
    "STATE_ACTIVE",
    "STATE_HALTED",
    "STATE_REDUCING",
    "AssetInfo",
    "Decision",
    "FillResult",
    "PnlTracker",
    "Position",
    "RiskEngine",
    "SessionClock",
    "SymbolLookup",
    "codes",
    "denial_name",
    "exec_id_of",
    "warm_up",
]
