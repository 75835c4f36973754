"""Stable integer codes of the risk layer: order denials, fill statuses and trading states.

These numbers are part of the public contract (logs, metrics and callers match on them), so a code is
never renumbered or reused; new ones are appended. They are plain ints so njit code can return them.

Denial codes come in three groups: 1x bad input (the order itself is malformed), 2x trading state
(kill switch, reduce-only, daily loss) and 3x limits. ``RISK_APPROVED`` (0) is the only approval.
"""

from __future__ import annotations

# --- trading state (kill switch) -----------------------------------------------------------------
STATE_ACTIVE = 0     #: every check applies; orders that pass are approved
STATE_REDUCING = 1   #: only orders that shrink the symbol's position are approved
STATE_HALTED = 2     #: every new order is denied

STATE_NAMES = {STATE_ACTIVE: "ACTIVE", STATE_REDUCING: "REDUCING", STATE_HALTED: "HALTED"}
STATE_BY_NAME = {name: value for value, name in STATE_NAMES.items()}

# --- pre-trade decision codes ----------------------------------------------------------------------
RISK_APPROVED = 0

DENY_UNKNOWN_SYMBOL = 10       #: symbol id not registered with the P&L tracker
DENY_INVALID_SIDE = 11         #: side is neither SIDE_BUY (1) nor SIDE_SELL (-1)
DENY_ZERO_QTY = 12             #: order quantity is exactly zero
DENY_INVALID_QTY = 13          #: quantity NaN, infinite or negative
DENY_INVALID_PRICE = 14        #: limit/stop price missing, NaN, infinite, zero or negative
DENY_NO_MARK = 15              #: no current mid for the symbol: notional and band cannot be checked
DENY_INVALID_ORDER_TYPE = 16   #: order_type is not one of ORDER_MARKET..ORDER_STOP_LIMIT

DENY_HALTED = 20               #: trading state is HALTED (set by hand)
DENY_REDUCING = 21             #: trading state is REDUCING and the order would not shrink the position
DENY_DAILY_LOSS = 22           #: daily loss limit breached; trading was HALTED automatically

DENY_MAX_ORDER_QTY = 30        #: order quantity above max_order_qty
DENY_MAX_POSITION_QTY = 31     #: resulting worst-case position above max_position_qty
DENY_MAX_SYMBOL_NOTIONAL = 32  #: resulting worst-case symbol notional above max_symbol_notional
DENY_MAX_GROSS_NOTIONAL = 33   #: resulting gross notional across symbols above max_gross_notional
DENY_MAX_OPEN_POSITIONS = 34   #: order would open one position more than max_open_positions
DENY_SHORT_NOT_ALLOWED = 35    #: sell would leave a short position while allow_short is false
DENY_PRICE_BAND = 36           #: limit price further through the mid than price_band_bps
DENY_RATE_LIMIT = 37           #: more than max_orders_per_window approvals within rate_window_s

N_CODE_SLOTS = 64              #: size of the per-code counter block (codes stay below this)

DENIAL_NAMES = {
    RISK_APPROVED: "APPROVED",
    DENY_UNKNOWN_SYMBOL: "UNKNOWN_SYMBOL",
    DENY_INVALID_SIDE: "INVALID_SIDE",
    DENY_ZERO_QTY: "ZERO_QTY",
    DENY_INVALID_QTY: "INVALID_QTY",
    DENY_INVALID_PRICE: "INVALID_PRICE",
    DENY_NO_MARK: "NO_MARK",
    DENY_INVALID_ORDER_TYPE: "INVALID_ORDER_TYPE",
    DENY_HALTED: "HALTED",
    DENY_REDUCING: "REDUCING",
    DENY_DAILY_LOSS: "DAILY_LOSS",
    DENY_MAX_ORDER_QTY: "MAX_ORDER_QTY",
    DENY_MAX_POSITION_QTY: "MAX_POSITION_QTY",
    DENY_MAX_SYMBOL_NOTIONAL: "MAX_SYMBOL_NOTIONAL",
    DENY_MAX_GROSS_NOTIONAL: "MAX_GROSS_NOTIONAL",
    DENY_MAX_OPEN_POSITIONS: "MAX_OPEN_POSITIONS",
    DENY_SHORT_NOT_ALLOWED: "SHORT_NOT_ALLOWED",
    DENY_PRICE_BAND: "PRICE_BAND",
    DENY_RATE_LIMIT: "RATE_LIMIT",
}

# --- fill statuses (P&L tracker) -------------------------------------------------------------------
FILL_APPLIED = 0
FILL_DUPLICATE = 1          #: execution id seen before (stream replay after reconnect): applied once only
FILL_UNKNOWN_SYMBOL = 2
FILL_INVALID_SIDE = 3
FILL_INVALID_QTY = 4        #: NaN, infinite, zero or negative quantity
FILL_INVALID_PRICE = 5      #: NaN, infinite, zero or negative price
FILL_INVALID_FEE = 6        #: NaN or infinite fee (a negative fee is a rebate and is accepted)
FILL_INVALID_EXEC_ID = 7    #: execution id 0: the fill cannot be de-duplicated
FILL_NOT_PROCESSED = 8      #: left for the next call (a session boundary fell inside the batch)

N_FILL_STATUSES = 9

FILL_STATUS_NAMES = {
    FILL_APPLIED: "APPLIED",
    FILL_DUPLICATE: "DUPLICATE",
    FILL_UNKNOWN_SYMBOL: "UNKNOWN_SYMBOL",
    FILL_INVALID_SIDE: "INVALID_SIDE",
    FILL_INVALID_QTY: "INVALID_QTY",
    FILL_INVALID_PRICE: "INVALID_PRICE",
    FILL_INVALID_FEE: "INVALID_FEE",
    FILL_INVALID_EXEC_ID: "INVALID_EXEC_ID",
    FILL_NOT_PROCESSED: "NOT_PROCESSED",
}


def denial_name(code: int) -> str:
    """The constant's name without its prefix (``"MAX_ORDER_QTY"``); ``"CODE_<n>"`` for an unknown code."""
    return DENIAL_NAMES.get(int(code), f"CODE_{int(code)}")


def state_name(state: int) -> str:
    return STATE_NAMES.get(int(state), f"STATE_{int(state)}")


__all__ = [name for name in dir() if name.isupper()] + ["denial_name", "state_name"]
