"""Numba L1/L2 order book for many symbols: integer-tick price levels in dense windows around the touch.

Entry points (names are stable; the market-data layer and the bars call these):

- ``BookManager(n_symbols, tick_sizes, *, window_ticks=4096, depth_levels=10, overflow_capacity=64)``
- ``BookManager.apply_deltas(deltas, tob_out=None, *, tob_per="delta") -> ApplyResult``: a whole
  ``BOOK_DELTA_DTYPE`` batch (Alpaca crypto ``orderbooks`` semantics) in one numba call, optionally writing
  the top of book after every delta or after every message into ``tob_out``.
- ``BookManager.apply_quotes(quotes, tob_out=None) -> ApplyResult``: a ``QUOTE_DTYPE`` batch (L1).
- ``BookManager.update(symbol_id, side, price, size, ts_ns=0) -> int``: one level from Python, returns
  ``UPDATE_OK | UPDATE_CROSSED | UPDATE_DROPPED``.
- ``BookManager.top_of_book() -> TOB_DTYPE array``: one row per symbol (the live engine and bars read it).
- per symbol: ``best_bid_price``, ``best_ask_price``, ``best_bid_size``, ``best_ask_size``, ``midpoint``,
  ``spread``, ``spread_bps``, ``microprice``, ``last_update_ns``, ``depth(s, n)``, ``imbalance(s, n)``.

Semantics:

- A delta sets the aggregate size of one price level; size 0 deletes the level. ``FLAG_RESET`` on a delta
  clears both sides of that symbol before the delta is applied (Alpaca's ``"r": true``); a reset delta with
  size 0 and no valid price is a pure "book is now empty" marker, not a drop.
- Prices become integer ticks ``round(price / tick_size)`` per symbol; prices come back out as
  ``tick / ticks_per_unit`` when ``1 / tick_size`` is an integer (so 0.01 ticks give 123.45, not
  123.45000000000002), else ``tick * tick_size``.
- NaN, infinite, zero or negative prices, prices under one tick, NaN/negative/infinite sizes, sides other
  than ``SIDE_BID``/``SIDE_ASK`` and unknown symbol ids are counted drops (``stats()``), logged at most
  once every few seconds, never exceptions out of a batch.
- Crossed or locked books (best bid >= best ask) are checked at the end of each exchange message: a delta
  with ``FLAG_LAST_IN_BATCH``, the last delta of the batch, or the last of a run of deltas with the same
  symbol and ``ts_ns``. Checking mid-message would report the transient cross every time one message moves
  bids up before it removes the old asks. A crossed book is kept as sent (the next message usually fixes
  it) but flagged per symbol (``is_crossed``, the ``crossed`` column), counted, and returned in
  ``ApplyResult.crossed``.
- ``apply_quotes`` replaces the symbol's book with the quoted level on each side (a quote side with size
  0 is an empty side). Feed a symbol either quotes or ``orderbooks`` deltas, not both: a quote wipes depth.

Layout (the why): both sides use a key where smaller is better (asks: ``tick``; bids: ``-tick``), so one
code path serves both. Each (symbol, side) owns a dense float64 window of ``window_ticks`` sizes over keys
``[base, base + W)``; the best level always lies inside it. When a price improves past the window's near
edge the window shifts so the new best sits at offset ``W // 8``; when deletes leave the best beyond
``W // 2`` it shifts the other way. Levels pushed past the far edge go to a per-(symbol, side) overflow
store sorted by descending key, so the nearest overflow level is at the end and window shifts push and
pop there in O(1). When the overflow store is full the kernel stops before the delta, Python doubles the
store, and the batch resumes: no level is ever dropped.
"""

from __future__ import annotations

import logging
import math
import operator
import time
from typing import NamedTuple

import numpy as np

from engine._jit import entry_point, inline_kernel, kernel
from engine.errors import InputError
from engine.events import (
    BOOK_DELTA_DTYPE,
    FLAG_LAST_IN_BATCH,
    FLAG_RESET,
    QUOTE_DTYPE,
    SIDE_ASK,
    SIDE_BID,
)

log = logging.getLogger("tickforge.book")

# --- sentinels -----------------------------------------------------------------------------------
EMPTY_KEY = np.int64(1 << 62)        #: internal key of an empty side (worse than any real key)
_EMPTY = int(EMPTY_KEY)
EMPTY_BID_TICK = -(1 << 62)          #: best bid tick of an empty bid side
EMPTY_ASK_TICK = 1 << 62             #: best ask tick of an empty ask side
TICK_LIMIT = float(1 << 53)          #: prices at or beyond this many ticks are rejected (float64 exactness)

# --- update() return codes -----------------------------------------------------------------------
UPDATE_OK = 0          #: applied; book not crossed
UPDATE_CROSSED = 1     #: applied; book is now crossed or locked (flagged and counted)
UPDATE_DROPPED = 2     #: bad input; counted drop, book unchanged
_NEED_ROOM = 3         # internal: overflow store full, grow and retry

# --- per-symbol integer state columns (ival[s, col]); side index si: 0 bid, 1 ask ----------------
_S_BASE = 0       # +si: key at window offset 0
_S_BEST = 2       # +si: best key, EMPTY_KEY when the side is empty
_S_NWIN = 4       # +si: levels inside the window
_S_NOVF = 6       # +si: levels in the overflow store
_S_LAST_TS = 8    # ts_ns of the last applied event
_S_CROSSED = 9    # 1 while the book is crossed or locked (as of the last message end)
_S_N_CROSSED = 10 # message ends found crossed
_S_N_DROPPED = 11 # dropped events for this symbol
_N_ICOLS = 16     # padded to two cache lines

# --- global counters (counters[c]) ---------------------------------------------------------------
C_DELTAS = 0
C_QUOTES = 1
C_DROP_SYMBOL = 2
C_DROP_SIDE = 3
C_DROP_PRICE = 4
C_DROP_SIZE = 5
C_CROSSED = 6
C_RESETS = 7
C_RECENTRES = 8
C_GROWS = 9
_N_COUNTERS = 16
COUNTER_NAMES = (
    "deltas_applied",
    "quotes_applied",
    "dropped_unknown_symbol",
    "dropped_bad_side",
    "dropped_bad_price",
    "dropped_bad_size",
    "crossed",
    "resets",
    "recentres",
    "overflow_grows",
)
_DROP_COUNTERS = (C_DROP_SYMBOL, C_DROP_SIDE, C_DROP_PRICE, C_DROP_SIZE)

#: Top of book of one symbol (a row of ``top_of_book()`` and of ``tob_out`` captures). Empty side:
#: price NaN, size 0; derived fields NaN. ``bid_depth``/``ask_depth``/``imbalance`` use ``depth_levels``.
TOB_DTYPE = np.dtype(
    [
        ("ts_ns", np.int64),
        ("symbol_id", np.int32),
        ("crossed", np.uint8),
        ("best_bid_price", np.float64),
        ("best_bid_size", np.float64),
        ("best_ask_price", np.float64),
        ("best_ask_size", np.float64),
        ("midpoint", np.float64),
        ("spread", np.float64),
        ("spread_bps", np.float64),
        ("microprice", np.float64),
        ("bid_depth", np.float64),
        ("ask_depth", np.float64),
        ("imbalance", np.float64),
    ],
    align=True,
)


class ApplyResult(NamedTuple):
    """Outcome of one batch."""

    applied: int   #: events applied
    dropped: int   #: events dropped (counted in ``stats()`` by reason)
    crossed: int   #: message ends that found the book crossed or locked
    messages: int  #: message ends (where crossing is checked)
    tob_rows: int  #: rows written to ``tob_out``


class Depth(NamedTuple):
    """Top-n levels per side, best first (bids descending, asks ascending)."""

    bid_prices: np.ndarray
    bid_sizes: np.ndarray
    ask_prices: np.ndarray
    ask_sizes: np.ndarray


# =================================================================================================
# numba kernels
# =================================================================================================

# Kernels are compiled without reference counting and small helpers inlined in numba IR: why in engine._jit.


@inline_kernel
def _price_to_tick(price, mul, div):
    """Integer tick of a price, or -1 when the price is not a usable positive finite price."""
    if not (price > 0.0):  # also rejects NaN
        return -1
    x = price * div / mul
    if not (x < TICK_LIMIT):  # also rejects inf
        return -1
    t = np.int64(np.floor(x + 0.5))
    if t < 1:
        return -1
    return t


@kernel
def _shift_down(qty, ival, okey, oqty, s, si, new_base):
    """Move the window towards better keys; far levels falling out go to overflow. False: no room."""
    w = qty.shape[2]
    base = ival[s, _S_BASE + si]
    d = base - new_base
    lo = w - d if d < w else 0
    nwin = ival[s, _S_NWIN + si]
    novf = ival[s, _S_NOVF + si]
    nmove = 0
    if nwin > 0:
        for off in range(lo, w):
            if qty[s, si, off] != 0.0:
                nmove += 1
        if novf + nmove > okey.shape[2]:
            return False
        # far to near, so the overflow store stays sorted by descending key
        for off in range(w - 1, lo - 1, -1):
            q = qty[s, si, off]
            if q != 0.0:
                okey[s, si, novf] = base + off
                oqty[s, si, novf] = q
                novf += 1
        if d < w:
            for off in range(w - 1 - d, -1, -1):
                qty[s, si, off + d] = qty[s, si, off]
            for off in range(d):
                qty[s, si, off] = 0.0
        else:
            for off in range(w):
                qty[s, si, off] = 0.0
    ival[s, _S_NWIN + si] = nwin - nmove
    ival[s, _S_NOVF + si] = novf
    ival[s, _S_BASE + si] = new_base
    return True


@kernel
def _shift_up(qty, ival, okey, oqty, s, si, new_base):
    """Move the window towards worse keys (all keys below ``new_base`` are empty); pull overflow in."""
    w = qty.shape[2]
    base = ival[s, _S_BASE + si]
    d = new_base - base
    nwin = ival[s, _S_NWIN + si]
    if nwin > 0:
        if d < w:
            for off in range(d, w):
                qty[s, si, off - d] = qty[s, si, off]
            for off in range(w - d, w):
                qty[s, si, off] = 0.0
        else:
            for off in range(w):
                qty[s, si, off] = 0.0
    novf = ival[s, _S_NOVF + si]
    limit = new_base + w
    while novf > 0 and okey[s, si, novf - 1] < limit:
        novf -= 1
        qty[s, si, okey[s, si, novf] - new_base] = oqty[s, si, novf]
        nwin += 1
    ival[s, _S_NWIN + si] = nwin
    ival[s, _S_NOVF + si] = novf
    ival[s, _S_BASE + si] = new_base


@kernel
def _after_best_removed(qty, ival, okey, oqty, counters, s, si, from_off):
    """Find the next best level after the best one was deleted; re-centre when it drifted far."""
    w = qty.shape[2]
    base = ival[s, _S_BASE + si]
    if ival[s, _S_NWIN + si] > 0:
        for off in range(from_off + 1, w):
            if qty[s, si, off] != 0.0:
                ival[s, _S_BEST + si] = base + off
                if off > (w >> 1):
                    _shift_up(qty, ival, okey, oqty, s, si, base + off - (w >> 3))
                    counters[C_RECENTRES] += 1
                return
    novf = ival[s, _S_NOVF + si]
    if novf > 0:
        best = okey[s, si, novf - 1]
        ival[s, _S_BEST + si] = best
        _shift_up(qty, ival, okey, oqty, s, si, best - (w >> 3))
        counters[C_RECENTRES] += 1
    else:
        ival[s, _S_BEST + si] = EMPTY_KEY


@inline_kernel
def _ovf_position(okey, s, si, novf, key):
    """First index whose key is <= ``key`` in the descending overflow store (binary search)."""
    lo = 0
    hi = novf
    while lo < hi:
        mid = (lo + hi) >> 1
        if okey[s, si, mid] > key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def _ovf_set(okey, oqty, ival, s, si, key, q):
    novf = ival[s, _S_NOVF + si]
    p = _ovf_position(okey, s, si, novf, key)
    if p < novf and okey[s, si, p] == key:
        if q != 0.0:
            oqty[s, si, p] = q
        else:
            for j in range(p, novf - 1):
                okey[s, si, j] = okey[s, si, j + 1]
                oqty[s, si, j] = oqty[s, si, j + 1]
            ival[s, _S_NOVF + si] = novf - 1
        return 0
    if q == 0.0:
        return 0
    if novf >= okey.shape[2]:
        return _NEED_ROOM
    for j in range(novf, p, -1):
        okey[s, si, j] = okey[s, si, j - 1]
        oqty[s, si, j] = oqty[s, si, j - 1]
    okey[s, si, p] = key
    oqty[s, si, p] = q
    ival[s, _S_NOVF + si] = novf + 1
    return 0


@inline_kernel
def _set_level(qty, ival, okey, oqty, counters, s, si, key, q):
    """Set (q > 0) or delete (q == 0) the level at ``key``. Returns 0, or _NEED_ROOM with nothing changed."""
    w = qty.shape[2]
    headroom = w >> 3
    base = ival[s, _S_BASE + si]
    best = ival[s, _S_BEST + si]
    if q == 0.0:
        if best == EMPTY_KEY or key < best:
            return 0  # nothing lives better than the best: deleting a missing level is a no-op
        off = key - base
        if off < w:
            if qty[s, si, off] != 0.0:
                qty[s, si, off] = 0.0
                ival[s, _S_NWIN + si] -= 1
                if key == best:
                    _after_best_removed(qty, ival, okey, oqty, counters, s, si, off)
            return 0
        return _ovf_set(okey, oqty, ival, s, si, key, 0.0)
    if best == EMPTY_KEY:
        _place_only_level(qty, ival, s, si, key, q)
        return 0
    if key < base:
        if not _shift_down(qty, ival, okey, oqty, s, si, key - headroom):
            return _NEED_ROOM
        counters[C_RECENTRES] += 1
        base = key - headroom
    off = key - base
    if off < w:
        if qty[s, si, off] == 0.0:
            ival[s, _S_NWIN + si] += 1
        qty[s, si, off] = q
        if key < best:
            ival[s, _S_BEST + si] = key
        return 0
    return _ovf_set(okey, oqty, ival, s, si, key, q)


@inline_kernel
def _place_only_level(qty, ival, s, si, key, q):
    """The first level of an empty side: the window is all zeros and the overflow store empty."""
    headroom = qty.shape[2] >> 3
    ival[s, _S_BASE + si] = key - headroom
    qty[s, si, headroom] = q
    ival[s, _S_NWIN + si] = 1
    ival[s, _S_BEST + si] = key


@kernel
def _clear_side(qty, ival, s, si):
    nwin = ival[s, _S_NWIN + si]
    if nwin > 0:
        w = qty.shape[2]
        off = ival[s, _S_BEST + si] - ival[s, _S_BASE + si]
        while nwin > 0 and off < w:
            if qty[s, si, off] != 0.0:
                qty[s, si, off] = 0.0
                nwin -= 1
            off += 1
    ival[s, _S_NWIN + si] = 0
    ival[s, _S_NOVF + si] = 0
    ival[s, _S_BEST + si] = EMPTY_KEY


@kernel
def _reset_symbol(qty, ival, counters, s):
    _clear_side(qty, ival, s, 0)
    _clear_side(qty, ival, s, 1)
    counters[C_RESETS] += 1


@inline_kernel
def _check_crossed(ival, counters, s):
    bid_key = ival[s, _S_BEST]
    ask_key = ival[s, _S_BEST + 1]
    crossed = bid_key != EMPTY_KEY and ask_key != EMPTY_KEY and -bid_key >= ask_key
    if crossed:
        ival[s, _S_CROSSED] = 1
        ival[s, _S_N_CROSSED] += 1
        counters[C_CROSSED] += 1
    else:
        ival[s, _S_CROSSED] = 0
    return crossed


@inline_kernel
def _side_depth_sum(qty, ival, okey, oqty, s, si, n):
    """Total size of the best ``n`` levels of one side (window from the best outwards, then overflow)."""
    total = 0.0
    if n <= 0 or ival[s, _S_BEST + si] == EMPTY_KEY:
        return total
    w = qty.shape[2]
    nwin = ival[s, _S_NWIN + si]
    want = n if n < nwin else nwin
    taken = 0
    off = ival[s, _S_BEST + si] - ival[s, _S_BASE + si]
    while taken < want and off < w:
        # branch-free body: whether a slot holds a level is a coin flip the predictor would lose
        q = qty[s, si, off]
        total += q
        taken += q != 0.0
        off += 1
    j = ival[s, _S_NOVF + si] - 1
    while taken < n and j >= 0:
        total += oqty[s, si, j]
        taken += 1
        j -= 1
    return total


@kernel
def _side_levels(qty, ival, okey, oqty, fval, s, si, n, out_price, out_size):
    """Write the best ``n`` levels of one side (prices, sizes); returns how many there are."""
    if n <= 0 or ival[s, _S_BEST + si] == EMPTY_KEY:
        return 0
    w = qty.shape[2]
    sign = -1 if si == 0 else 1
    mul = fval[s, 0]
    div = fval[s, 1]
    base = ival[s, _S_BASE + si]
    taken = 0
    nwin = ival[s, _S_NWIN + si]
    off = ival[s, _S_BEST + si] - base
    while taken < n and taken < nwin and off < w:
        q = qty[s, si, off]
        if q != 0.0:
            out_price[taken] = (sign * (base + off)) * mul / div
            out_size[taken] = q
            taken += 1
        off += 1
    j = ival[s, _S_NOVF + si] - 1
    while taken < n and j >= 0:
        out_price[taken] = (sign * okey[s, si, j]) * mul / div
        out_size[taken] = oqty[s, si, j]
        taken += 1
        j -= 1
    return taken


@inline_kernel
def _tob_values(qty, ival, okey, oqty, fval, s, depth_n):
    """Top-of-book numbers of one symbol:
    (bid_px, bid_sz, ask_px, ask_sz, mid, spread, spread_bps, microprice, bid_depth, ask_depth, imbalance)."""
    nan = np.nan
    mul = fval[s, 0]
    div = fval[s, 1]
    bid_key = ival[s, _S_BEST]
    ask_key = ival[s, _S_BEST + 1]
    bid_px = nan
    bid_sz = 0.0
    ask_px = nan
    ask_sz = 0.0
    if bid_key != EMPTY_KEY:
        bid_px = (-bid_key) * mul / div
        bid_sz = qty[s, 0, bid_key - ival[s, _S_BASE]]
    if ask_key != EMPTY_KEY:
        ask_px = ask_key * mul / div
        ask_sz = qty[s, 1, ask_key - ival[s, _S_BASE + 1]]
    mid = nan
    spread = nan
    spread_bps = nan
    micro = nan
    if bid_key != EMPTY_KEY and ask_key != EMPTY_KEY:
        mid = (ask_key - bid_key) * mul / div * 0.5
        spread = (ask_key + bid_key) * mul / div
        spread_bps = spread / mid * 1e4
        micro = (bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz)
    bid_depth = _side_depth_sum(qty, ival, okey, oqty, s, 0, depth_n)
    ask_depth = _side_depth_sum(qty, ival, okey, oqty, s, 1, depth_n)
    total = bid_depth + ask_depth
    imbalance = (bid_depth - ask_depth) / total if total > 0.0 else nan
    return bid_px, bid_sz, ask_px, ask_sz, mid, spread, spread_bps, micro, bid_depth, ask_depth, imbalance


@inline_kernel
def _write_tob(out, row, qty, ival, okey, oqty, fval, s, depth_n):
    v = _tob_values(qty, ival, okey, oqty, fval, s, depth_n)
    r = out[row]
    r.ts_ns = ival[s, _S_LAST_TS]
    r.symbol_id = s
    r.crossed = ival[s, _S_CROSSED]
    r.best_bid_price = v[0]
    r.best_bid_size = v[1]
    r.best_ask_price = v[2]
    r.best_ask_size = v[3]
    r.midpoint = v[4]
    r.spread = v[5]
    r.spread_bps = v[6]
    r.microprice = v[7]
    r.bid_depth = v[8]
    r.ask_depth = v[9]
    r.imbalance = v[10]


@kernel
def _write_unknown_tob(out, row, s):
    r = out[row]
    r.ts_ns = 0
    r.symbol_id = s
    r.crossed = 0
    r.best_bid_price = np.nan
    r.best_bid_size = 0.0
    r.best_ask_price = np.nan
    r.best_ask_size = 0.0
    r.midpoint = np.nan
    r.spread = np.nan
    r.spread_bps = np.nan
    r.microprice = np.nan
    r.bid_depth = 0.0
    r.ask_depth = 0.0
    r.imbalance = np.nan


@kernel
def _apply_deltas(qty, ival, okey, oqty, fval, counters, deltas, start, tob_out, per_message, tob_rows, depth_n):
    """Apply ``deltas[start:]``; returns (next index, applied, dropped, crossed message ends, message ends,
    tob rows written). Stops early (next index < len) only when an overflow store is full."""
    n = deltas.shape[0]
    n_sym = ival.shape[0]
    capture = tob_out.shape[0] > 0
    per_delta = capture and not per_message
    applied = 0
    dropped = 0
    crossed = 0
    messages = 0
    for i in range(start, n):
        d = deltas[i]
        s = np.int64(d.symbol_id)
        if s < 0 or s >= n_sym:
            counters[C_DROP_SYMBOL] += 1
            dropped += 1
            if per_delta:
                _write_unknown_tob(tob_out, i, s)
            continue
        flags = d.flags
        reset = (flags & FLAG_RESET) != 0
        if reset:
            _reset_symbol(qty, ival, counters, s)
        size = d.size
        side = d.side
        si = 0 if side == SIDE_BID else 1
        tick = _price_to_tick(d.price, fval[s, 0], fval[s, 1])
        bad = -1
        if side != SIDE_BID and side != SIDE_ASK:
            bad = C_DROP_SIDE
        elif not (size >= 0.0) or size == np.inf:
            bad = C_DROP_SIZE
        elif tick < 0:
            bad = C_DROP_PRICE
        if bad >= 0:
            if reset and size == 0.0 and bad == C_DROP_PRICE:
                bad = -1  # a pure reset marker: the book is now empty
                ival[s, _S_LAST_TS] = d.ts_ns
                applied += 1
            else:
                counters[bad] += 1
                ival[s, _S_N_DROPPED] += 1
                dropped += 1
        else:
            key = tick if si == 1 else -tick
            if _set_level(qty, ival, okey, oqty, counters, s, si, key, size) == _NEED_ROOM:
                counters[C_DELTAS] += applied
                return i, applied, dropped, crossed, messages, tob_rows
            ival[s, _S_LAST_TS] = d.ts_ns
            applied += 1
        if (
            (flags & FLAG_LAST_IN_BATCH) != 0
            or i == n - 1
            or deltas[i + 1].symbol_id != d.symbol_id
            or deltas[i + 1].ts_ns != d.ts_ns
        ):
            messages += 1
            if _check_crossed(ival, counters, s):
                crossed += 1
            if capture and per_message:
                _write_tob(tob_out, tob_rows, qty, ival, okey, oqty, fval, s, depth_n)
                tob_rows += 1
        if per_delta:
            _write_tob(tob_out, i, qty, ival, okey, oqty, fval, s, depth_n)
            tob_rows = i + 1
    counters[C_DELTAS] += applied
    return n, applied, dropped, crossed, messages, tob_rows


@kernel
def _update_one(qty, ival, okey, oqty, fval, counters, s, side, price, size, ts_ns):
    """One level from Python; every update is its own message (crossing checked after it)."""
    if s < 0 or s >= ival.shape[0]:
        counters[C_DROP_SYMBOL] += 1
        return UPDATE_DROPPED
    bad = -1
    if side != SIDE_BID and side != SIDE_ASK:
        bad = C_DROP_SIDE
    elif not (size >= 0.0) or size == np.inf:
        bad = C_DROP_SIZE
    tick = _price_to_tick(price, fval[s, 0], fval[s, 1])
    if bad < 0 and tick < 0:
        bad = C_DROP_PRICE
    if bad >= 0:
        counters[bad] += 1
        ival[s, _S_N_DROPPED] += 1
        return UPDATE_DROPPED
    si = 0 if side == SIDE_BID else 1
    key = tick if si == 1 else -tick
    if _set_level(qty, ival, okey, oqty, counters, s, si, key, size) == _NEED_ROOM:
        return _NEED_ROOM
    ival[s, _S_LAST_TS] = ts_ns
    counters[C_DELTAS] += 1
    if _check_crossed(ival, counters, s):
        return UPDATE_CROSSED
    return UPDATE_OK


@kernel
def _quote_side_ok(price, size, mul, div):
    """-1: bad size, -2: bad price, 0: empty side, else the tick."""
    if not (size >= 0.0) or size == np.inf:
        return -1
    if size == 0.0:
        return 0
    tick = _price_to_tick(price, mul, div)
    if tick < 0:
        return -2
    return tick


@kernel
def _apply_quotes(qty, ival, okey, oqty, fval, counters, quotes, tob_out, depth_n):
    """Replace each quoted symbol's book with its L1 quote; returns (applied, dropped, crossed)."""
    n = quotes.shape[0]
    n_sym = ival.shape[0]
    capture = tob_out.shape[0] > 0
    applied = 0
    dropped = 0
    crossed = 0
    for i in range(n):
        q = quotes[i]
        s = np.int64(q.symbol_id)
        if s < 0 or s >= n_sym:
            counters[C_DROP_SYMBOL] += 1
            dropped += 1
            if capture:
                _write_unknown_tob(tob_out, i, s)
            continue
        bid_tick = _quote_side_ok(q.bid_price, q.bid_size, fval[s, 0], fval[s, 1])
        ask_tick = _quote_side_ok(q.ask_price, q.ask_size, fval[s, 0], fval[s, 1])
        if bid_tick < 0 or ask_tick < 0:
            counters[C_DROP_SIZE if (bid_tick == -1 or ask_tick == -1) else C_DROP_PRICE] += 1
            ival[s, _S_N_DROPPED] += 1
            dropped += 1
        else:
            _clear_side(qty, ival, s, 0)
            _clear_side(qty, ival, s, 1)
            if bid_tick > 0:
                _place_only_level(qty, ival, s, 0, -bid_tick, q.bid_size)
            if ask_tick > 0:
                _place_only_level(qty, ival, s, 1, ask_tick, q.ask_size)
            ival[s, _S_LAST_TS] = q.ts_ns
            applied += 1
            if _check_crossed(ival, counters, s):
                crossed += 1
        if capture:
            _write_tob(tob_out, i, qty, ival, okey, oqty, fval, s, depth_n)
    counters[C_QUOTES] += applied
    return applied, dropped, crossed


@kernel
def _snapshot(qty, ival, okey, oqty, fval, depth_n, out):
    for s in range(ival.shape[0]):
        _write_tob(out, s, qty, ival, okey, oqty, fval, s, depth_n)


@kernel
def _reset_all(qty, ival, counters):
    for s in range(ival.shape[0]):
        _reset_symbol(qty, ival, counters, s)


# =================================================================================================
# Python front end
# =================================================================================================


def _tick_conversion(tick_size: float) -> tuple[float, float]:
    """(mul, div) with price = tick * mul / div: exact decimal prices when 1/tick_size is an integer."""
    inverse = 1.0 / tick_size
    rounded = round(inverse)
    if rounded >= 1 and abs(inverse - rounded) <= 1e-9 * inverse:
        return 1.0, float(rounded)
    return float(tick_size), 1.0


class BookManager:
    """Order books of ``n_symbols`` symbols (ids ``0..n_symbols-1``) with per-symbol tick sizes."""

    def __init__(
        self,
        n_symbols: int,
        tick_sizes: float | np.ndarray | list[float],
        *,
        window_ticks: int = 4096,
        depth_levels: int = 10,
        overflow_capacity: int = 64,
    ) -> None:
        if int(n_symbols) < 1:
            raise InputError(f"n_symbols must be >= 1, got {n_symbols}")
        if int(window_ticks) < 16:
            raise InputError(f"window_ticks must be >= 16, got {window_ticks}")
        if int(depth_levels) < 1:
            raise InputError(f"depth_levels must be >= 1, got {depth_levels}")
        if int(overflow_capacity) < 1:
            raise InputError(f"overflow_capacity must be >= 1, got {overflow_capacity}")
        n = int(n_symbols)
        ticks = np.asarray(tick_sizes, dtype=np.float64)
        if ticks.ndim == 0:
            ticks = np.full(n, float(ticks))
        if ticks.shape != (n,):
            raise InputError(f"tick_sizes must be a scalar or have one entry per symbol ({n}), got shape {ticks.shape}")
        if not np.all(np.isfinite(ticks) & (ticks > 0)):
            raise InputError("tick_sizes must be finite and > 0")
        self.n_symbols = n
        self.window_ticks = int(window_ticks)
        self.depth_levels = int(depth_levels)
        self.tick_sizes = ticks.copy()
        self._qty = np.zeros((n, 2, self.window_ticks), dtype=np.float64)
        self._ival = np.zeros((n, _N_ICOLS), dtype=np.int64)
        self._ival[:, _S_BEST] = EMPTY_KEY
        self._ival[:, _S_BEST + 1] = EMPTY_KEY
        self._okey = np.zeros((n, 2, int(overflow_capacity)), dtype=np.int64)
        self._oqty = np.zeros((n, 2, int(overflow_capacity)), dtype=np.float64)
        self._conv = [_tick_conversion(float(t)) for t in ticks]  # (mul, div) as Python floats for getters
        self._fval = np.array(self._conv, dtype=np.float64).reshape(n, 2)
        self._counters = np.zeros(_N_COUNTERS, dtype=np.int64)
        self._state = (self._qty, self._ival, self._okey, self._oqty, self._fval, self._counters)
        self._tob = np.zeros(n, dtype=TOB_DTYPE)
        self._no_capture = np.zeros(0, dtype=TOB_DTYPE)
        self._update_fn = self._first_update
        self._apply_deltas_fn = None  # compiled entry points, bound after the first call
        self._apply_quotes_fn = None
        self._dropped_logged = 0
        self._last_drop_log = -math.inf

    # --- batches -------------------------------------------------------------------------------

    def apply_deltas(self, deltas: np.ndarray, tob_out: np.ndarray | None = None, *, tob_per: str = "delta") -> ApplyResult:
        """Apply a ``BOOK_DELTA_DTYPE`` batch in one numba call.

        ``tob_out`` (optional ``TOB_DTYPE`` array, at least ``len(deltas)`` rows) receives top-of-book rows:
        with ``tob_per="delta"`` row i is the book of delta i's symbol right after delta i (dropped deltas
        included; an unknown symbol gets an empty row); with ``tob_per="message"`` one row per message end,
        packed from row 0 (``ApplyResult.tob_rows`` says how many), which is what a strategy reads.
        """
        deltas = _checked(deltas, BOOK_DELTA_DTYPE, "deltas")
        per_message = tob_per == "message"
        if not per_message and tob_per != "delta":
            raise InputError(f"tob_per must be 'delta' or 'message', got {tob_per!r}")
        capture = self._no_capture if tob_out is None else self._checked_capture(tob_out, len(deltas))
        start = applied = dropped = crossed = messages = rows = 0
        while True:
            args = self._state + (deltas, start, capture, per_message, rows, self.depth_levels)
            if self._apply_deltas_fn is not None:
                start, a, d, c, m, rows = self._apply_deltas_fn(*args)
            else:
                start, a, d, c, m, rows = _apply_deltas(*args)
                self._apply_deltas_fn = entry_point(_apply_deltas, args)
            applied += a
            dropped += d
            crossed += c
            messages += m
            if start >= len(deltas):
                break
            self._grow_overflow()
        if dropped:
            self.log_drops()
        return ApplyResult(applied, dropped, crossed, messages, rows)

    def apply_quotes(self, quotes: np.ndarray, tob_out: np.ndarray | None = None) -> ApplyResult:
        """Apply a ``QUOTE_DTYPE`` batch: each quote replaces its symbol's book with one level per side."""
        quotes = _checked(quotes, QUOTE_DTYPE, "quotes")
        capture = self._no_capture if tob_out is None else self._checked_capture(tob_out, len(quotes))
        args = self._state + (quotes, capture, self.depth_levels)
        unknown_before = self._counters[C_DROP_SYMBOL]
        if self._apply_quotes_fn is not None:
            applied, dropped, crossed = self._apply_quotes_fn(*args)
        else:
            applied, dropped, crossed = _apply_quotes(*args)
            self._apply_quotes_fn = entry_point(_apply_quotes, args)
        if dropped:
            self.log_drops()
        known = len(quotes) - (self._counters[C_DROP_SYMBOL] - unknown_before)
        return ApplyResult(applied, dropped, crossed, int(known), len(quotes) if tob_out is not None else 0)

    def update(self, symbol_id: int, side: int, price: float, size: float, ts_ns: int = 0) -> int:
        """Set one level (size 0 deletes) from Python: ``UPDATE_OK``, ``UPDATE_CROSSED`` or ``UPDATE_DROPPED``."""
        if type(symbol_id) is not int or type(side) is not int:
            # the compiled entry point would truncate a float id silently; insist on integers
            symbol_id = operator.index(symbol_id)
            side = operator.index(side)
        rc = self._update_fn(*self._state, symbol_id, side, price, size, ts_ns)
        if rc >= UPDATE_DROPPED:
            if rc == _NEED_ROOM:
                self._grow_overflow()
                return self.update(symbol_id, side, price, size, ts_ns)
            self.log_drops()
        return rc

    def _first_update(self, *args: object) -> int:
        """Compile (or load) the update kernel, then bind its entry point to skip per-call dispatch."""
        args = args[:6] + (int(args[6]), int(args[7]), float(args[8]), float(args[9]), int(args[10]))  # type: ignore[call-overload]
        rc = _update_one(*args)
        self._update_fn = entry_point(_update_one, args)
        return rc

    # --- queries -------------------------------------------------------------------------------

    def top_of_book(self, copy: bool = True) -> np.ndarray:
        """``TOB_DTYPE`` row per symbol (row i is symbol i). ``copy=False`` returns an internal buffer
        that the next call overwrites."""
        _snapshot(self._qty, self._ival, self._okey, self._oqty, self._fval, self.depth_levels, self._tob)
        return self._tob.copy() if copy else self._tob

    # Per-symbol getters read the state arrays from Python (no numba call): cheap for a few symbols.
    # For many symbols at once use top_of_book() or the tob_out capture of apply_deltas.

    def best_bid_tick(self, symbol_id: int) -> int:
        key = self._ival.item(self._sid(symbol_id), _S_BEST)
        return EMPTY_BID_TICK if key == _EMPTY else -key

    def best_ask_tick(self, symbol_id: int) -> int:
        key = self._ival.item(self._sid(symbol_id), _S_BEST + 1)
        return EMPTY_ASK_TICK if key == _EMPTY else key

    def best_bid_price(self, symbol_id: int) -> float:
        s = self._sid(symbol_id)
        key = self._ival.item(s, _S_BEST)
        if key == _EMPTY:
            return math.nan
        mul, div = self._conv[s]
        return -key * mul / div

    def best_ask_price(self, symbol_id: int) -> float:
        s = self._sid(symbol_id)
        key = self._ival.item(s, _S_BEST + 1)
        if key == _EMPTY:
            return math.nan
        mul, div = self._conv[s]
        return key * mul / div

    def best_bid_size(self, symbol_id: int) -> float:
        return self._best_size(self._sid(symbol_id), 0)

    def best_ask_size(self, symbol_id: int) -> float:
        return self._best_size(self._sid(symbol_id), 1)

    def midpoint(self, symbol_id: int) -> float:
        s = self._sid(symbol_id)
        bid_key, ask_key = self._ival.item(s, _S_BEST), self._ival.item(s, _S_BEST + 1)
        if bid_key == _EMPTY or ask_key == _EMPTY:
            return math.nan
        mul, div = self._conv[s]
        return (ask_key - bid_key) * mul / div * 0.5

    def spread(self, symbol_id: int) -> float:
        s = self._sid(symbol_id)
        bid_key, ask_key = self._ival.item(s, _S_BEST), self._ival.item(s, _S_BEST + 1)
        if bid_key == _EMPTY or ask_key == _EMPTY:
            return math.nan
        mul, div = self._conv[s]
        return (ask_key + bid_key) * mul / div

    def spread_bps(self, symbol_id: int) -> float:
        mid = self.midpoint(symbol_id)
        return self.spread(symbol_id) / mid * 1e4 if mid == mid else math.nan

    def microprice(self, symbol_id: int) -> float:
        """Size-weighted mid, (bid * ask_size + ask * bid_size) / (bid_size + ask_size): nearer the bid when
        the ask holds more size, i.e. nearer the side more likely to be traded through next."""
        bid_px, ask_px = self.best_bid_price(symbol_id), self.best_ask_price(symbol_id)
        if bid_px != bid_px or ask_px != ask_px:
            return math.nan
        bid_sz, ask_sz = self.best_bid_size(symbol_id), self.best_ask_size(symbol_id)
        return (bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz)

    def last_update_ns(self, symbol_id: int) -> int:
        return self._ival.item(self._sid(symbol_id), _S_LAST_TS)

    def is_crossed(self, symbol_id: int) -> bool:
        return self._ival.item(self._sid(symbol_id), _S_CROSSED) != 0

    def crossed_symbols(self) -> np.ndarray:
        """Ids of the symbols whose book is crossed or locked now."""
        return np.flatnonzero(self._ival[:, _S_CROSSED])

    def depth(self, symbol_id: int, n: int | None = None) -> Depth:
        """Best ``n`` levels per side (default ``depth_levels``), overflow levels included."""
        s = self._sid(symbol_id)
        n = self.depth_levels if n is None else int(n)
        if n < 0:
            raise InputError(f"depth n must be >= 0, got {n}")
        out = []
        for si in (0, 1):
            prices = np.empty(n, dtype=np.float64)
            sizes = np.empty(n, dtype=np.float64)
            k = _side_levels(self._qty, self._ival, self._okey, self._oqty, self._fval, s, si, n, prices, sizes)
            out += [prices[:k], sizes[:k]]
        return Depth(*out)

    def imbalance(self, symbol_id: int, n: int | None = None) -> float:
        """(bid size - ask size) / (bid size + ask size) over the best ``n`` levels: in [-1, 1], NaN if empty."""
        s = self._sid(symbol_id)
        n = self.depth_levels if n is None else int(n)
        bid = _side_depth_sum(self._qty, self._ival, self._okey, self._oqty, s, 0, n)
        ask = _side_depth_sum(self._qty, self._ival, self._okey, self._oqty, s, 1, n)
        return (bid - ask) / (bid + ask) if bid + ask > 0 else math.nan

    def n_levels(self, symbol_id: int) -> tuple[int, int]:
        """(bid levels, ask levels), overflow included."""
        row = self._ival[self._sid(symbol_id)]
        return int(row[_S_NWIN] + row[_S_NOVF]), int(row[_S_NWIN + 1] + row[_S_NOVF + 1])

    def stats(self) -> dict[str, int]:
        """Counters since construction: applied, drops by reason, crossed message ends, resets, re-centres."""
        return {name: int(self._counters[i]) for i, name in enumerate(COUNTER_NAMES)}

    def reset(self, symbol_id: int | None = None) -> None:
        """Empty one symbol's book (or every book)."""
        if symbol_id is None:
            _reset_all(self._qty, self._ival, self._counters)
            self._ival[:, _S_CROSSED] = 0
        else:
            s = self._sid(symbol_id)
            _reset_symbol(self._qty, self._ival, self._counters, s)
            self._ival[s, _S_CROSSED] = 0

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """The kernels' state arrays, in ``apply_quotes_kernel``'s order (replaced when the overflow store grows)."""
        return self._state

    def state_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(qty, ival, okey, oqty, fval) for numba consumers such as the bars (read-only use)."""
        return self._qty, self._ival, self._okey, self._oqty, self._fval

    def __repr__(self) -> str:
        return f"BookManager(n_symbols={self.n_symbols}, window_ticks={self.window_ticks}, depth_levels={self.depth_levels})"

    # --- internals -----------------------------------------------------------------------------

    def _sid(self, symbol_id: int) -> int:
        s = symbol_id if type(symbol_id) is int else operator.index(symbol_id)
        if not 0 <= s < self.n_symbols:
            raise InputError(f"unknown symbol id {s} (book holds 0..{self.n_symbols - 1})")
        return s

    def _best_size(self, s: int, si: int) -> float:
        key = self._ival.item(s, _S_BEST + si)
        if key == _EMPTY:
            return 0.0
        return self._qty.item(s, si, key - self._ival.item(s, _S_BASE + si))

    def _checked_capture(self, tob_out: np.ndarray, n: int) -> np.ndarray:
        if not isinstance(tob_out, np.ndarray) or tob_out.dtype != TOB_DTYPE or tob_out.ndim != 1 or len(tob_out) < n:
            raise InputError(f"tob_out must be a 1-D TOB_DTYPE array of at least {n} rows")
        if not (tob_out.flags.c_contiguous and tob_out.flags.writeable):
            raise InputError("tob_out must be C-contiguous and writeable")
        return tob_out

    def _grow_overflow(self) -> None:
        """Double every overflow store (rare: levels far from the touch piled up)."""
        n, _, cap = self._okey.shape
        okey = np.zeros((n, 2, cap * 2), dtype=np.int64)
        oqty = np.zeros((n, 2, cap * 2), dtype=np.float64)
        okey[:, :, :cap] = self._okey
        oqty[:, :, :cap] = self._oqty
        self._okey, self._oqty = okey, oqty
        self._state = (self._qty, self._ival, self._okey, self._oqty, self._fval, self._counters)
        self._counters[C_GROWS] += 1
        log.info("book overflow store grown to %d levels per symbol side", cap * 2)

    def log_drops(self) -> None:
        """One warning line at most every 5 s, with the totals by reason."""
        now = time.monotonic()
        if now - self._last_drop_log < 5.0:
            return
        total = int(sum(self._counters[c] for c in _DROP_COUNTERS))
        if total == self._dropped_logged:
            return
        self._last_drop_log = now
        self._dropped_logged = total
        reasons = ", ".join(f"{COUNTER_NAMES[c]}={int(self._counters[c])}" for c in _DROP_COUNTERS if self._counters[c])
        log.warning("book dropped bad events (totals: %s)", reasons)


def _checked(events: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """The events as a C-contiguous writeable array (the one layout the kernels are compiled for; a
    read-only or strided batch is copied once rather than compiled for again), or InputError."""
    if not isinstance(events, np.ndarray) or events.dtype != dtype or events.ndim != 1:
        got = getattr(events, "dtype", type(events).__name__)
        raise InputError(f"{what} must be a 1-D array of engine.events dtype, got {got}")
    flags = events.flags
    if flags.c_contiguous and flags.writeable:
        return events
    return np.array(events, order="C")


#: the compiled quote batch, for callers that fuse it with other work in one compiled call
apply_quotes_kernel = _apply_quotes

__all__ = [
    "ApplyResult",
    "BookManager",
    "COUNTER_NAMES",
    "Depth",
    "EMPTY_ASK_TICK",
    "EMPTY_BID_TICK",
    "TOB_DTYPE",
    "UPDATE_CROSSED",
    "UPDATE_DROPPED",
    "UPDATE_OK",
    "apply_quotes_kernel",
]
