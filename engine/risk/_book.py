"""Numba kernels of the position book: fills in, marks in, daily P&L out (no Python objects).

The book is a few preallocated numpy arrays that ``PnlTracker`` owns and the risk checks read:

* ``st``  float64 ``(capacity, N_FLOAT_FIELDS)``: one row per symbol id (``F_*`` columns), so the
  fields of one symbol share cache lines when a fill or a check touches them.
* ``ix``  int64 ``(capacity, N_INT_FIELDS)``: registration flag, trade counts, slot in ``active``.
* ``active`` int64 ``(capacity,)``: compact list of the symbols with a position or in-flight orders;
  its first ``cnt[C_N_ACTIVE]`` entries are valid (the open-position count is its length).
* ``agg`` float64: running account totals (``A_*``). The two mark-dependent ones, the marked value
  of the positions and the worst-case gross notional, are kept up to date symbol by symbol: each
  symbol's share sits in its row and the total moves by the change of that share, so a check reads
  them in O(1) however many positions are open. Running sums drift, so they are re-summed from the
  exact per-symbol shares every ``RESEED_EVERY`` updates and whenever the book goes flat.
* ``cnt`` int64: counters (``C_*``), including one per fill status.
* ``seen`` int64: open-addressing set of applied execution ids (0 = empty slot), sized by Python
  so it is never more than half full and never grows inside a kernel.

Average-cost accounting: adding to a position averages the entry price in; reducing realises
``closed_qty * (price - avg_entry) * sign(position)`` and keeps the average; a fill through zero is
a close of the old position plus an open of the rest at the fill price. Realised P&L is gross of
fees; fees are kept apart, so ``realised + unrealised - fees`` is the net P&L.
"""

from __future__ import annotations

import numpy as np

from engine._jit import inline_kernel, kernel  # no NRT: the kernels never allocate (why in engine._jit)
from engine.risk.codes import (
    FILL_APPLIED,
    FILL_DUPLICATE,
    FILL_INVALID_EXEC_ID,
    FILL_INVALID_FEE,
    FILL_INVALID_PRICE,
    FILL_INVALID_QTY,
    FILL_INVALID_SIDE,
    FILL_UNKNOWN_SYMBOL,
)

# --- per-symbol float fields: st[symbol_id, F_*] ----------------------------------------------------
F_QTY = 0               #: signed position (long > 0, short < 0)
F_AVG_PRICE = 1         #: average entry price of the open position (0 when flat)
F_MARK = 2              #: current mark (mid); NaN until the first mark or fill
F_REALIZED = 3          #: realised P&L since the tracker started (gross of fees)
F_REALIZED_DAY = 4      #: realised P&L this session
F_FEES = 5              #: fees since start (negative = rebates)
F_FEES_DAY = 6          #: fees this session
F_DAY_CASH = 7          #: this session's cash flow: -qty*price for buys, +qty*price for sells
F_DAY_START_VALUE = 8   #: position value at the session start (qty * mark then)
F_LASTDAY_PRICE = 9     #: mark at the session start (Alpaca's lastday_price); NaN before the first roll
F_DAY_AVG_PRICE = 10    #: intraday basis: lastday price for carried positions, averaged with today's adds
F_PENDING_BUY = 11      #: quantity of approved buy orders not yet filled or released
F_PENDING_SELL = 12     #: quantity of approved sell orders not yet filled or released
F_MARKED_VALUE = 13     #: this symbol's share of A_MARKED_VALUE: qty * mark
F_WORST_NOTIONAL = 14   #: this symbol's share of A_GROSS: worst-case |qty| (with pending) * mark
N_FLOAT_FIELDS = 16     #: padded to 128 bytes per symbol

# --- per-symbol int fields: ix[symbol_id, I_*] -------------------------------------------------------
I_KNOWN = 0             #: 1 when the id is registered
I_ACTIVE_SLOT = 1       #: index into ``active``, -1 when the symbol is not active
I_TRADES = 2            #: fills applied since start
I_TRADES_DAY = 3        #: fills applied this session
N_INT_FIELDS = 4

# --- account totals: agg[A_*] ------------------------------------------------------------------------
A_REALIZED = 0
A_REALIZED_DAY = 1
A_FEES = 2
A_FEES_DAY = 3
A_DAY_CASH = 4
A_DAY_START_VALUE = 5
A_CASH = 6              #: cash flow since start (without fees)
A_MARKED_VALUE = 7      #: sum of qty * mark over open positions
A_GROSS = 8             #: sum of worst-case notional over active symbols (in-flight orders included)
N_AGG = 12

# --- counters: cnt[C_*] ------------------------------------------------------------------------------
C_N_ACTIVE = 0          #: valid entries in ``active``
C_N_SEEN = 1            #: execution ids stored in ``seen``
C_MARKS_DROPPED = 2     #: mark updates refused (bad price, unknown symbol, crossed quote)
C_SINCE_RESEED = 3      #: incremental aggregate updates since the last exact re-sum
C_FILL_STATUS = 8       #: cnt[C_FILL_STATUS + status] counts fills by status
N_CNT = 24

QTY_EPS = 1e-9          #: a position or pending quantity this close to zero is zero (float dust)
RESEED_EVERY = 4096     #: incremental updates between exact re-sums of the running aggregates
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@inline_kernel
def sync_active(st, ix, active, cnt, sid):
    """Add ``sid`` to / remove it from the active list after its position or pending changed."""
    live = st[sid, F_QTY] != 0.0 or st[sid, F_PENDING_BUY] > 0.0 or st[sid, F_PENDING_SELL] > 0.0
    slot = ix[sid, I_ACTIVE_SLOT]
    if live and slot < 0:
        n = cnt[C_N_ACTIVE]
        active[n] = sid
        ix[sid, I_ACTIVE_SLOT] = n
        cnt[C_N_ACTIVE] = n + 1
    elif not live and slot >= 0:
        last = cnt[C_N_ACTIVE] - 1
        moved = active[last]
        active[slot] = moved
        ix[moved, I_ACTIVE_SLOT] = slot
        ix[sid, I_ACTIVE_SLOT] = -1
        cnt[C_N_ACTIVE] = last


@inline_kernel
def worst_case_qty(st, sid):
    """Signed position if every in-flight order of the riskier side fills."""
    qty = st[sid, F_QTY]
    long_case = qty + st[sid, F_PENDING_BUY]
    short_case = qty - st[sid, F_PENDING_SELL]
    return long_case if abs(long_case) >= abs(short_case) else short_case


@kernel
def reseed_aggregates(st, active, agg, cnt):
    """Re-sum the mark-dependent totals from the exact per-symbol shares."""
    marked = 0.0
    gross = 0.0
    for k in range(cnt[C_N_ACTIVE]):
        sid = active[k]
        marked += st[sid, F_MARKED_VALUE]
        gross += st[sid, F_WORST_NOTIONAL]
    agg[A_MARKED_VALUE] = marked
    agg[A_GROSS] = gross
    cnt[C_SINCE_RESEED] = 0


@inline_kernel
def refresh_symbol(st, ix, active, agg, cnt, sid):
    """After ``sid``'s position, in-flight quantity or mark changed: move its shares of the account
    totals and its membership of the active list."""
    qty = st[sid, F_QTY]
    mark = st[sid, F_MARK]
    marked = 0.0
    worst = 0.0
    if np.isfinite(mark):
        if qty != 0.0:
            marked = qty * mark
        worst = abs(worst_case_qty(st, sid)) * mark
    agg[A_MARKED_VALUE] += marked - st[sid, F_MARKED_VALUE]
    agg[A_GROSS] += worst - st[sid, F_WORST_NOTIONAL]
    st[sid, F_MARKED_VALUE] = marked
    st[sid, F_WORST_NOTIONAL] = worst
    sync_active(st, ix, active, cnt, sid)
    cnt[C_SINCE_RESEED] += 1
    if cnt[C_SINCE_RESEED] >= RESEED_EVERY or cnt[C_N_ACTIVE] == 0:
        reseed_aggregates(st, active, agg, cnt)


@inline_kernel
def _seen_slot(seen, exec_id):
    """Slot of ``exec_id`` in the set, or of the empty slot where it would go."""
    mask = seen.size - 1
    h = (np.uint64(exec_id) * _GOLDEN) >> np.uint64(17)
    i = np.int64(h & np.uint64(mask))
    while seen[i] != 0 and seen[i] != exec_id:
        i = (i + 1) & mask
    return i


@kernel
def rehash_seen(old, new):
    """Move every id of ``old`` into the larger empty table ``new``."""
    for k in range(old.size):
        if old[k] != 0:
            new[_seen_slot(new, old[k])] = old[k]


@inline_kernel
def apply_fill(st, ix, active, agg, cnt, seen, sid, side, qty, price, fee, exec_id):
    """Validate, de-duplicate and book one fill. Returns ``(status, realised_pnl_of_this_fill)``."""
    if sid < 0 or sid >= st.shape[0] or ix[sid, I_KNOWN] == 0:
        status = FILL_UNKNOWN_SYMBOL
    elif side != 1 and side != -1:
        status = FILL_INVALID_SIDE
    elif not (np.isfinite(qty) and qty > 0.0):
        status = FILL_INVALID_QTY
    elif not (np.isfinite(price) and price > 0.0):
        status = FILL_INVALID_PRICE
    elif not np.isfinite(fee):
        status = FILL_INVALID_FEE
    elif exec_id == 0:
        status = FILL_INVALID_EXEC_ID
    else:
        slot = _seen_slot(seen, exec_id)
        if seen[slot] == exec_id:
            status = FILL_DUPLICATE
        else:
            seen[slot] = exec_id
            cnt[C_N_SEEN] += 1
            status = FILL_APPLIED
    cnt[C_FILL_STATUS + status] += 1
    if status != FILL_APPLIED:
        return status, 0.0

    pos = st[sid, F_QTY]
    avg = st[sid, F_AVG_PRICE]
    day_avg = st[sid, F_DAY_AVG_PRICE]
    signed_qty = side * qty
    new_pos = pos + signed_qty
    realized = 0.0
    if pos == 0.0 or (pos > 0.0) == (side > 0):
        # opening or adding: the entry price averages in (both the lifetime and the intraday basis)
        total = abs(new_pos)
        avg = (abs(pos) * avg + qty * price) / total
        day_avg = (abs(pos) * day_avg + qty * price) / total
    else:
        closed = min(qty, abs(pos))
        realized = closed * (price - avg) * (1.0 if pos > 0.0 else -1.0)
        if abs(new_pos) <= QTY_EPS:
            new_pos = 0.0
            avg = 0.0
            day_avg = 0.0
        elif (new_pos > 0.0) != (pos > 0.0):
            # through zero: the remainder is a new position opened at this fill's price
            avg = price
            day_avg = price
    if abs(new_pos) <= QTY_EPS:
        new_pos = 0.0
    cash = -signed_qty * price

    st[sid, F_QTY] = new_pos
    st[sid, F_AVG_PRICE] = avg
    st[sid, F_DAY_AVG_PRICE] = day_avg
    st[sid, F_REALIZED] += realized
    st[sid, F_REALIZED_DAY] += realized
    st[sid, F_FEES] += fee
    st[sid, F_FEES_DAY] += fee
    st[sid, F_DAY_CASH] += cash
    if not np.isfinite(st[sid, F_MARK]):
        st[sid, F_MARK] = price  # a fill is a print: until a quote arrives it is the best mark there is
    ix[sid, I_TRADES] += 1
    ix[sid, I_TRADES_DAY] += 1
    agg[A_REALIZED] += realized
    agg[A_REALIZED_DAY] += realized
    agg[A_FEES] += fee
    agg[A_FEES_DAY] += fee
    agg[A_DAY_CASH] += cash
    agg[A_CASH] += cash

    # the fill consumes in-flight quantity of its side (never below zero: fills of orders that did
    # not pass through the risk engine must not create negative pending)
    pend_field = F_PENDING_BUY if side > 0 else F_PENDING_SELL
    pend = st[sid, pend_field] - qty
    st[sid, pend_field] = pend if pend > QTY_EPS else 0.0
    refresh_symbol(st, ix, active, agg, cnt, sid)
    return status, realized


@kernel
def apply_fills(fills, st, ix, active, agg, cnt, seen, next_reset_ns, realized_out, status_out):
    """Book a FILL_DTYPE batch in order. Stops before the first fill at or after ``next_reset_ns``
    (when > 0) and returns its index, so the caller can roll the session; else returns ``len(fills)``."""
    for i in range(fills.size):
        f = fills[i]
        if next_reset_ns > 0 and f.ts_ns >= next_reset_ns:
            return i
        status, realized = apply_fill(
            st, ix, active, agg, cnt, seen, f.symbol_id, f.side, f.qty, f.price, f.fee, f.exec_id
        )
        status_out[i] = status
        realized_out[i] = realized
    return fills.size


@kernel
def update_marks(symbol_ids, prices, st, ix, active, agg, cnt):
    """Set marks; a bad price or unknown id is counted and skipped. Returns how many were skipped."""
    dropped = 0
    for k in range(symbol_ids.size):
        sid = symbol_ids[k]
        px = prices[k]
        if sid < 0 or sid >= st.shape[0] or ix[sid, I_KNOWN] == 0 or not (np.isfinite(px) and px > 0.0):
            dropped += 1
            continue
        st[sid, F_MARK] = px
        if ix[sid, I_ACTIVE_SLOT] >= 0:
            refresh_symbol(st, ix, active, agg, cnt, sid)
    cnt[C_MARKS_DROPPED] += dropped
    return dropped


@kernel
def update_marks_from_quotes(quotes, st, ix, active, agg, cnt):
    """Mark each symbol at the mid of its latest QUOTE_DTYPE quote; one-sided, crossed or bad
    quotes are counted and skipped. Returns how many were skipped."""
    dropped = 0
    for k in range(quotes.size):
        q = quotes[k]
        sid = q.symbol_id
        bid = q.bid_price
        ask = q.ask_price
        ok = sid >= 0 and sid < st.shape[0]
        ok = ok and np.isfinite(bid) and np.isfinite(ask) and bid > 0.0 and ask >= bid
        if not ok or ix[sid, I_KNOWN] == 0:
            dropped += 1
            continue
        st[sid, F_MARK] = 0.5 * (bid + ask)
        if ix[sid, I_ACTIVE_SLOT] >= 0:
            refresh_symbol(st, ix, active, agg, cnt, sid)
    cnt[C_MARKS_DROPPED] += dropped
    return dropped


@kernel
def unrealized_pnl(st, active, cnt):
    """Unrealised P&L of every open position at current marks."""
    total = 0.0
    for k in range(cnt[C_N_ACTIVE]):
        sid = active[k]
        qty = st[sid, F_QTY]
        if qty != 0.0:
            total += qty * (st[sid, F_MARK] - st[sid, F_AVG_PRICE])
    return total


@kernel
def daily_pnl(agg):
    """This session's net P&L, marked to market: what the account gained since the session start,
    realised and unrealised, after fees. O(1): the marked value is a running total."""
    return agg[A_DAY_CASH] - agg[A_FEES_DAY] - agg[A_DAY_START_VALUE] + agg[A_MARKED_VALUE]


@kernel
def gross_exposure(agg):
    """Worst-case notional over every symbol with a position or in-flight orders, at marks."""
    return agg[A_GROSS]


@kernel
def roll_session(st, ix, agg):
    """Start a new session: day counters to zero, carried positions re-based at current marks."""
    start_value = 0.0
    for sid in range(st.shape[0]):
        qty = st[sid, F_QTY]
        mark = st[sid, F_MARK]
        st[sid, F_REALIZED_DAY] = 0.0
        st[sid, F_FEES_DAY] = 0.0
        st[sid, F_DAY_CASH] = 0.0
        st[sid, F_LASTDAY_PRICE] = mark
        if qty != 0.0:
            value = qty * mark
            st[sid, F_DAY_START_VALUE] = value
            st[sid, F_DAY_AVG_PRICE] = mark
            start_value += value
        else:
            st[sid, F_DAY_START_VALUE] = 0.0
            st[sid, F_DAY_AVG_PRICE] = 0.0
        ix[sid, I_TRADES_DAY] = 0
    agg[A_REALIZED_DAY] = 0.0
    agg[A_FEES_DAY] = 0.0
    agg[A_DAY_CASH] = 0.0
    agg[A_DAY_START_VALUE] = start_value
