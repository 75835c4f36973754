"""Numba pre-trade checks: one order or a batch against the limits, the trading state and the book.

Everything is preallocated numpy state: the position book of the P&L tracker (``_book``) plus
``lim`` (float64 limits, ``L_*``) and ``rs`` (int64 risk state, ``R_*``: trading state, per-code
counters and the ring of recent approval times for the rate limit). An approval is booked at once
(in-flight quantity, rate window), so later orders in the same batch, or the next call, see it and a
batch cannot breach a limit collectively.

Exposure is worst-case: a symbol's exposure is the larger of ``|position + pending buys|`` and
``|position - pending sells|``, valued at the current mark (mid). Position, notional, gross and
open-position limits deny only orders that increase exposure past the limit, so an order that
shrinks an oversize position (limits lowered, marks moved) is never blocked by them. A value
exactly at a limit passes; comparisons allow 1e-12 relative slack for float rounding only.
"""

from __future__ import annotations

import numpy as np

from engine._jit import inline_kernel, kernel
from engine.events import ORDER_LIMIT, ORDER_MARKET, ORDER_STOP, ORDER_STOP_LIMIT
from engine.risk._book import (
    A_GROSS,
    C_N_ACTIVE,
    F_MARK,
    F_PENDING_BUY,
    F_PENDING_SELL,
    F_QTY,
    I_ACTIVE_SLOT,
    I_KNOWN,
    QTY_EPS,
    daily_pnl,
    refresh_symbol,
    worst_case_qty,
)
from engine.risk.codes import (
    DENY_DAILY_LOSS,
    DENY_HALTED,
    DENY_INVALID_ORDER_TYPE,
    DENY_INVALID_PRICE,
    DENY_INVALID_QTY,
    DENY_INVALID_SIDE,
    DENY_MAX_GROSS_NOTIONAL,
    DENY_MAX_OPEN_POSITIONS,
    DENY_MAX_ORDER_QTY,
    DENY_MAX_POSITION_QTY,
    DENY_MAX_SYMBOL_NOTIONAL,
    DENY_NO_MARK,
    DENY_PRICE_BAND,
    DENY_RATE_LIMIT,
    DENY_REDUCING,
    DENY_SHORT_NOT_ALLOWED,
    DENY_UNKNOWN_SYMBOL,
    DENY_ZERO_QTY,
    N_CODE_SLOTS,
    RISK_APPROVED,
    STATE_HALTED,
    STATE_REDUCING,
)

# --- limits: lim[L_*] -------------------------------------------------------------------------------
L_MAX_ORDER_QTY = 0
L_MAX_POSITION_QTY = 1
L_MAX_GROSS_NOTIONAL = 2
L_MAX_SYMBOL_NOTIONAL = 3
L_MAX_OPEN_POSITIONS = 4
L_MAX_DAILY_LOSS = 5
L_RATE_WINDOW_NS = 6
L_PRICE_BAND_BPS = 7
L_ALLOW_SHORT = 8       #: 1.0 allowed, 0.0 not
N_LIMITS = 16

# --- risk state: rs[R_*] ----------------------------------------------------------------------------
R_STATE = 0             #: STATE_ACTIVE | STATE_REDUCING | STATE_HALTED
R_HALT_CODE = 1         #: why HALTED: DENY_DAILY_LOSS (automatic) or DENY_HALTED (by hand)
R_RING_HEAD = 2         #: ring index of the oldest approval time
R_RING_COUNT = 3        #: approval times held (at most the capacity)
R_RING_CAP = 4          #: max_orders_per_window
R_COUNTS = 8            #: rs[R_COUNTS + code] counts decisions per code
R_RING = R_COUNTS + N_CODE_SLOTS  #: rs[R_RING : R_RING + cap] approval times (ns)

_REL_SLACK = 1e-12


@inline_kernel
def _exceeds(value, limit):
    return value > limit + abs(limit) * _REL_SLACK


@kernel
def evaluate_daily_loss(agg, lim, rs):
    """Daily P&L now; a loss beyond the limit moves the state to HALTED by itself."""
    pnl = daily_pnl(agg)
    if _exceeds(-pnl, lim[L_MAX_DAILY_LOSS]) and rs[R_STATE] != STATE_HALTED:
        rs[R_STATE] = STATE_HALTED
        rs[R_HALT_CODE] = DENY_DAILY_LOSS
    return pnl


@inline_kernel
def _decide(st, ix, active, agg, cnt, lim, rs, sid, side, qty, order_type, limit_price, stop_price, ts_ns, pnl):
    """Code and attempted value for one order. An approval is booked here: in-flight quantity,
    the account totals, the active list and the rate window."""
    # --- the order itself --------------------------------------------------------------------------
    if sid < 0 or sid >= st.shape[0] or ix[sid, I_KNOWN] == 0:
        return DENY_UNKNOWN_SYMBOL, float(sid)
    if side != 1 and side != -1:
        return DENY_INVALID_SIDE, float(side)
    if not (order_type == ORDER_MARKET or order_type == ORDER_LIMIT
            or order_type == ORDER_STOP or order_type == ORDER_STOP_LIMIT):
        return DENY_INVALID_ORDER_TYPE, float(order_type)
    if qty == 0.0:
        return DENY_ZERO_QTY, 0.0
    if not (np.isfinite(qty) and qty > 0.0):
        return DENY_INVALID_QTY, qty
    if order_type == ORDER_LIMIT or order_type == ORDER_STOP_LIMIT:
        if not (np.isfinite(limit_price) and limit_price > 0.0):
            return DENY_INVALID_PRICE, limit_price
    if order_type == ORDER_STOP or order_type == ORDER_STOP_LIMIT:
        if not (np.isfinite(stop_price) and stop_price > 0.0):
            return DENY_INVALID_PRICE, stop_price
    mark = st[sid, F_MARK]
    if not (np.isfinite(mark) and mark > 0.0):
        return DENY_NO_MARK, mark

    # --- trading state -----------------------------------------------------------------------------
    state = rs[R_STATE]
    if state == STATE_HALTED:
        if rs[R_HALT_CODE] == DENY_DAILY_LOSS:
            return DENY_DAILY_LOSS, pnl
        return DENY_HALTED, pnl

    position = st[sid, F_QTY]
    pending_buy = st[sid, F_PENDING_BUY]
    pending_sell = st[sid, F_PENDING_SELL]
    if side > 0:
        long_case = position + pending_buy + qty
        short_case = position - pending_sell
        moved_case = long_case
    else:
        long_case = position + pending_buy
        short_case = position - pending_sell - qty
        moved_case = short_case
    if state == STATE_REDUCING:
        # the side that moves must stay on the position's side of zero (no growth, no flip)
        if side > 0:
            shrinks = position < 0.0 and long_case <= QTY_EPS
        else:
            shrinks = position > 0.0 and short_case >= -QTY_EPS
        if not shrinks:
            return DENY_REDUCING, moved_case

    # --- limits ------------------------------------------------------------------------------------
    if _exceeds(qty, lim[L_MAX_ORDER_QTY]):
        return DENY_MAX_ORDER_QTY, qty
    if side < 0 and lim[L_ALLOW_SHORT] == 0.0 and short_case < -QTY_EPS:
        return DENY_SHORT_NOT_ALLOWED, short_case

    old_worst = worst_case_qty(st, sid)
    new_worst = long_case if abs(long_case) >= abs(short_case) else short_case
    old_exposure = abs(old_worst)
    new_exposure = abs(new_worst)
    grows = new_exposure > old_exposure + QTY_EPS
    if grows and _exceeds(new_exposure, lim[L_MAX_POSITION_QTY]):
        return DENY_MAX_POSITION_QTY, new_worst
    symbol_notional = new_exposure * mark
    if grows and _exceeds(symbol_notional, lim[L_MAX_SYMBOL_NOTIONAL]):
        return DENY_MAX_SYMBOL_NOTIONAL, symbol_notional
    gross = agg[A_GROSS] + (new_exposure - old_exposure) * mark
    if grows and _exceeds(gross, lim[L_MAX_GROSS_NOTIONAL]):
        return DENY_MAX_GROSS_NOTIONAL, gross
    opens = ix[sid, I_ACTIVE_SLOT] < 0
    if opens and cnt[C_N_ACTIVE] + 1 > lim[L_MAX_OPEN_POSITIONS]:
        return DENY_MAX_OPEN_POSITIONS, float(cnt[C_N_ACTIVE] + 1)
    if order_type == ORDER_LIMIT or order_type == ORDER_STOP_LIMIT:
        # slippage guard: how far the limit reaches through the mid, in bps (passive prices pass)
        through_bps = (limit_price - mark) / mark * 1e4 * side
        if _exceeds(through_bps, lim[L_PRICE_BAND_BPS]):
            return DENY_PRICE_BAND, through_bps

    cap = rs[R_RING_CAP]
    count = rs[R_RING_COUNT]
    head = rs[R_RING_HEAD]
    if count >= cap and ts_ns - rs[R_RING + head] < lim[L_RATE_WINDOW_NS]:
        return DENY_RATE_LIMIT, float(cap + 1)

    # --- approved: book it -------------------------------------------------------------------------
    # wrap by comparison, not %: an integer division costs more than the rest of a check
    if count >= cap:
        rs[R_RING + head] = ts_ns
        head += 1
        rs[R_RING_HEAD] = 0 if head == cap else head
    else:
        slot = head + count
        rs[R_RING + (slot - cap if slot >= cap else slot)] = ts_ns
        rs[R_RING_COUNT] = count + 1
    if side > 0:
        st[sid, F_PENDING_BUY] = pending_buy + qty
    else:
        st[sid, F_PENDING_SELL] = pending_sell + qty
    refresh_symbol(st, ix, active, agg, cnt, sid)
    return RISK_APPROVED, qty


@kernel
def check_order(st, ix, active, agg, cnt, lim, rs, out, sid, side, qty, order_type, limit_price, stop_price, ts_ns):
    """One order; returns its code and writes the attempted value to ``out[0]``. The arrays come
    first so a caller can bind them once and pass only the order's scalars per call."""
    pnl = evaluate_daily_loss(agg, lim, rs)
    code, attempted = _decide(
        st, ix, active, agg, cnt, lim, rs, sid, side, qty, order_type, limit_price, stop_price, ts_ns, pnl
    )
    rs[R_COUNTS + code] += 1
    out[0] = attempted
    return code


@kernel
def check_orders(orders, st, ix, active, agg, cnt, lim, rs, now_ns, codes, attempted):
    """An ORDER_DTYPE batch in order (``ts_ns`` 0 means ``now_ns``); returns how many were approved."""
    pnl = evaluate_daily_loss(agg, lim, rs)
    approved = 0
    for i in range(orders.size):
        o = orders[i]
        ts = o.ts_ns if o.ts_ns > 0 else now_ns
        code, value = _decide(
            st, ix, active, agg, cnt, lim, rs, o.symbol_id, o.side, o.qty, o.order_type,
            o.limit_price, o.stop_price, ts, pnl,
        )
        codes[i] = code
        attempted[i] = value
        rs[R_COUNTS + code] += 1
        if code == RISK_APPROVED:
            approved += 1
    return approved


@inline_kernel
def release(st, ix, active, agg, cnt, sid, side, qty):
    """Give back in-flight quantity of an order that ended without filling it (canceled, rejected,
    expired). Never goes below zero. Returns False for an unknown symbol, side or bad quantity."""
    if sid < 0 or sid >= st.shape[0] or ix[sid, I_KNOWN] == 0 or (side != 1 and side != -1):
        return False
    if not (np.isfinite(qty) and qty >= 0.0):
        return False
    field = F_PENDING_BUY if side > 0 else F_PENDING_SELL
    left = st[sid, field] - qty
    st[sid, field] = left if left > QTY_EPS else 0.0
    refresh_symbol(st, ix, active, agg, cnt, sid)
    return True


@kernel
def release_orders(orders, st, ix, active, agg, cnt):
    """Release the unfilled rest (``qty - filled_qty``) of finished ORDER_DTYPE orders; returns how
    many records were refused as malformed."""
    refused = 0
    for i in range(orders.size):
        o = orders[i]
        rest = o.qty - o.filled_qty
        if rest < 0.0:
            rest = 0.0
        if not release(st, ix, active, agg, cnt, o.symbol_id, o.side, rest):
            refused += 1
    return refused
