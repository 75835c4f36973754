"""Compiled fast path of the decoder: a whole Alpaca frame (JSON or msgpack bytes) parsed in numba
straight into the event arrays, one call per frame.

It handles the common case only — trades, quotes, bars and orderbooks with known symbols and sane
values — and gives up (``BAIL``) on anything else: a control message, an unknown type or symbol, an
escaped string, a number it cannot convert exactly, a value out of bounds, a bad timestamp. The
decoder then decodes that frame on its msgspec path, which is the reference for every rule here
(the bounds below mirror ``_wire``) and reports each bad message. Giving up is always safe.
"""

from __future__ import annotations

import numpy as np

from engine._jit import inline_kernel, kernel  # no NRT: the parsers never allocate (why in engine._jit)
from engine.marketdata.timestamps import _parse_one

OK = 0
BAIL = 1

# counts[] slots written by the parsers
N_TRADES, N_QUOTES, N_BARS, N_DELTAS, N_BOOKS, N_MESSAGES, MAX_TS = 0, 1, 2, 3, 4, 5, 6  # MAX_TS: latest event time

_PRICE_MAX = 1e10
_SIZE_MAX = 1e13
_SIDE_BID = 1
_SIDE_ASK = -1
_FLAG_SNAPSHOT = 1
_FLAG_RESET = 2
_FLAG_LAST = 4
_FLAG_UPDATED_BAR = 8
_FLAG_DAILY_BAR = 16


def _key(text: str) -> int:
    v = 0
    for k, ch in enumerate(text.encode()):
        v |= ch << (8 * k)
    return v


# Field ids. Numeric fields are stored in a per-message scratch row ``vals[field]`` (NaN = absent),
# so one code path serves every message type and the compiled function stays small.
F_T, F_S, F_TS, F_X, F_Z, F_BX, F_AX, F_B, F_A, F_R, F_C = range(11)  # strings, levels, flag, "c"
F_P, F_SZ, F_BP, F_BS, F_AP, F_AS, F_O, F_H, F_L, F_V, F_VW, F_I, F_N = range(11, 24)  # numbers
N_FIELDS = 24
FIRST_NUMBER = F_P
FIRST_INT = F_I
_KEYS = {
    "T": F_T, "S": F_S, "t": F_TS, "x": F_X, "z": F_Z, "bx": F_BX, "ax": F_AX, "b": F_B, "a": F_A, "r": F_R,
    "c": F_C, "p": F_P, "s": F_SZ, "bp": F_BP, "bs": F_BS, "ap": F_AP, "as": F_AS, "o": F_O, "h": F_H,
    "l": F_L, "v": F_V, "vw": F_VW, "i": F_I, "n": F_N,
}
# Direct lookup tables: one-byte keys by their byte, two-byte keys by both bytes.
_ONE_BYTE_KEYS = np.full(256, -1, dtype=np.int8)
_TWO_BYTE_KEYS = np.full(65536, -1, dtype=np.int8)
for _name, _fid in _KEYS.items():
    _raw = _name.encode()
    if len(_raw) == 1:
        _ONE_BYTE_KEYS[_raw[0]] = _fid
    else:
        _TWO_BYTE_KEYS[_raw[0] * 256 + _raw[1]] = _fid
T_TRADE, T_QUOTE, T_BAR, T_UBAR, T_DBAR, T_BOOK = (ord(c) for c in "tqbudo")

FNV_OFFSET = 14695981039346656037
FNV_PRIME = 1099511628211


def symbol_hash(name: bytes) -> int:
    """FNV-1a 64 of a symbol's bytes; ``_lookup`` computes the same inside numba."""
    h = FNV_OFFSET
    for b in name:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


@inline_kernel
def _lookup(buf, start, end, slots, names, lens):
    """Symbol id of buf[start:end] in the open-addressing table, -1 when unknown."""
    n = end - start
    if n < 1 or n > names.shape[1]:
        return -1
    h = np.uint64(FNV_OFFSET)
    for k in range(start, end):
        h = (h ^ np.uint64(buf[k])) * np.uint64(FNV_PRIME)
    mask = slots.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    for _ in range(slots.shape[0]):
        sid = slots[slot]
        if sid < 0:
            return -1
        if lens[sid] == n:
            same = True
            for k in range(n):
                if names[sid, k] != buf[start + k]:
                    same = False
                    break
            if same:
                return sid
        slot = (slot + 1) & mask
    return -1


@inline_kernel
def _code(buf, start, end):
    """One-letter exchange/tape code: first byte, 0 for empty, -1 when not a short ASCII string."""
    if end - start > 4:
        return -1
    if end == start:
        return 0
    b = buf[start]
    if b >= 128:
        return -1
    return b


@inline_kernel
def _field(buf, start, end):
    """Field id of the key buf[start:end], -1 for a key the engine does not read."""
    if end - start == 1:
        return np.int64(_ONE_BYTE_KEYS[buf[start]])
    if end - start == 2:
        return np.int64(_TWO_BYTE_KEYS[np.int64(buf[start]) * 256 + buf[start + 1]])
    return np.int64(-1)


@inline_kernel
def _reset_fields(vals, ivals, codes):
    for k in range(vals.shape[0]):
        vals[k] = np.nan
    ivals[0] = 0
    ivals[1] = 0
    for k in range(4):
        codes[k] = 0


@inline_kernel
def _wrote(counts, slot, count, ts):
    """Record that rows were written: the new row count of ``slot`` and the frame's latest event time."""
    counts[slot] = count
    if ts > counts[MAX_TS]:
        counts[MAX_TS] = ts
    return True


@inline_kernel
def _emit(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts,
          mtype, s_start, s_end, ts, vals, ivals, codes, reset, d0, nd, has_levels, asks_first, bid_start):
    """Validate and write one parsed message, updating ``counts``; returns False to give up."""
    if s_start < 0:
        return False
    sid = _lookup(buf, s_start, s_end, slots, names, lens)
    if sid < 0 or (has_levels and mtype != T_BOOK):
        return False
    if mtype == T_TRADE:
        p = vals[F_P]
        sz = vals[F_SZ]
        nt = counts[N_TRADES]
        if not (p > 0.0 and p < _PRICE_MAX and sz >= 0.0 and sz < _SIZE_MAX) or nt >= trades.shape[0]:
            return False
        r = trades[nt]
        r.ts_ns = ts
        r.recv_ns = recv_ns
        r.symbol_id = sid
        r.exchange = codes[0]
        r.tape = codes[1]
        r.flags = 0
        r.price = p
        r.size = sz
        r.trade_id = ivals[0]
        return _wrote(counts, N_TRADES, nt + 1, ts)
    if mtype == T_QUOTE:
        for f in range(F_BP, F_AS + 1):
            if np.isnan(vals[f]):
                vals[f] = 0.0  # an absent side is an empty side
        bp, bs, ap, as_ = vals[F_BP], vals[F_BS], vals[F_AP], vals[F_AS]
        nq = counts[N_QUOTES]
        if not (bp < _PRICE_MAX and ap < _PRICE_MAX and bs >= 0.0 and bs < _SIZE_MAX and as_ >= 0.0 and as_ < _SIZE_MAX):
            return False
        if bp < 0.0 or ap < 0.0 or nq >= quotes.shape[0]:
            return False
        q = quotes[nq]
        q.ts_ns = ts
        q.recv_ns = recv_ns
        q.symbol_id = sid
        q.bid_exchange = codes[2]
        q.ask_exchange = codes[3]
        q.tape = codes[1]
        q.flags = 0
        q.bid_price = bp
        q.bid_size = bs
        q.ask_price = ap
        q.ask_size = as_
        return _wrote(counts, N_QUOTES, nq + 1, ts)
    if mtype == T_BAR or mtype == T_UBAR or mtype == T_DBAR:
        if np.isnan(vals[F_V]):
            vals[F_V] = 0.0
        if np.isnan(vals[F_VW]):
            vals[F_VW] = 0.0
        for f in (F_O, F_H, F_L, F_C):
            if not (vals[f] > 0.0 and vals[f] < _PRICE_MAX):
                return False
        nb = counts[N_BARS]
        if not (vals[F_V] >= 0.0 and vals[F_V] < _SIZE_MAX and vals[F_VW] >= 0.0 and vals[F_VW] < _PRICE_MAX) or nb >= bars.shape[0]:
            return False
        b = bars[nb]
        b.ts_ns = ts
        b.recv_ns = recv_ns
        b.symbol_id = sid
        b.flags = _FLAG_UPDATED_BAR if mtype == T_UBAR else (_FLAG_DAILY_BAR if mtype == T_DBAR else 0)
        b.open = vals[F_O]
        b.high = vals[F_H]
        b.low = vals[F_L]
        b.close = vals[F_C]
        b.volume = vals[F_V]
        b.vwap = vals[F_VW]
        b.trade_count = ivals[1]
        return _wrote(counts, N_BARS, nb + 1, ts)
    if mtype == T_BOOK:
        counts[N_BOOKS] += 1
        if nd == d0:
            if not reset:
                return True  # an update that changes nothing
            if nd >= deltas.shape[0]:
                return False
            deltas[nd].side = _SIDE_BID  # an empty reset: a placeholder level carries the flag
            deltas[nd].price = 0.0
            deltas[nd].size = 0.0
            nd += 1
        if asks_first and bid_start < nd:
            # "a" came before "b": put bids first, as the reference path does (a rotation in place)
            _reverse_levels(deltas, d0, bid_start)
            _reverse_levels(deltas, bid_start, nd)
            _reverse_levels(deltas, d0, nd)
        base = _FLAG_SNAPSHOT if reset else 0
        for k in range(d0, nd):
            d = deltas[k]
            d.ts_ns = ts
            d.recv_ns = recv_ns
            d.symbol_id = sid
            d.flags = base
        if reset:
            deltas[d0].flags = base | _FLAG_RESET
        deltas[nd - 1].flags = deltas[nd - 1].flags | _FLAG_LAST
        return _wrote(counts, N_DELTAS, nd, ts)
    return False


@kernel
def _reverse_levels(deltas, lo, hi):
    """Reverse the (side, price, size) of deltas[lo:hi] in place."""
    hi -= 1
    while lo < hi:
        a, b = deltas[lo], deltas[hi]
        a.side, b.side = b.side, a.side
        a.price, b.price = b.price, a.price
        a.size, b.size = b.size, a.size
        lo += 1
        hi -= 1


@kernel
def _add_level(deltas, nd, side, lp, ls):
    """Append one level; returns the new count, -1 when invalid or out of room."""
    if not (lp > 0.0 and lp < _PRICE_MAX and ls >= 0.0 and ls < _SIZE_MAX) or nd >= deltas.shape[0]:
        return -1
    deltas[nd].side = side
    deltas[nd].price = lp
    deltas[nd].size = ls
    return nd + 1


@kernel
def _clear_counts(counts):
    for k in range(counts.shape[0]):
        counts[k] = 0


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------
_POW10 = np.array([10.0**k for k in range(23)])


@kernel
def _ws(buf, pos, n):
    while pos < n:
        c = buf[pos]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        pos += 1
    return pos


@kernel
def _jstring(buf, pos, n):
    """buf[pos] is '"': returns (start, end, next) of a string without escapes; next = -1 if not."""
    start = pos + 1
    k = start
    while k < n:
        c = buf[k]
        if c == 34:
            return start, k, k + 1
        if c == 92 or c < 32:
            return start, k, -1
        k += 1
    return start, k, -1


@kernel
def _jnumber(buf, pos, n, pow10):
    """Parse a JSON number exactly when it fits the fast path.

    Returns (value, int_value, is_int, next); next = -1 when the number is malformed or needs more
    than float64's exact decimal fast path (more than 18 digits, or a power of ten beyond 22).
    All arithmetic is int64: 18 digits cannot overflow it.
    """
    k = pos
    neg = False
    if k < n and buf[k] == 45:
        neg = True
        k += 1
    mant = 0
    digits = 0
    lead = k
    while k < n:
        d = np.int64(buf[k]) - 48
        if d < 0 or d > 9:
            break
        if digits < 19:
            mant = mant * 10 + d
        digits += 1
        k += 1
    if k == lead or (buf[lead] == 48 and k - lead > 1):
        return 0.0, 0, False, -1
    exp10 = 0
    is_int = True
    if k < n and buf[k] == 46:
        is_int = False
        k += 1
        frac_start = k
        while k < n:
            d = np.int64(buf[k]) - 48
            if d < 0 or d > 9:
                break
            if digits < 19:
                mant = mant * 10 + d
                exp10 -= 1
            digits += 1
            k += 1
        if k == frac_start:
            return 0.0, 0, False, -1
    if k < n and (buf[k] == 101 or buf[k] == 69):
        is_int = False
        k += 1
        eneg = False
        if k < n and (buf[k] == 43 or buf[k] == 45):
            eneg = buf[k] == 45
            k += 1
        e = 0
        e_start = k
        while k < n and 48 <= buf[k] <= 57 and k - e_start < 5:
            e = e * 10 + (np.int64(buf[k]) - 48)
            k += 1
        if k == e_start or (k < n and 48 <= buf[k] <= 57):
            return 0.0, 0, False, -1
        exp10 += -e if eneg else e
    if digits > 18:
        return 0.0, 0, False, -1
    if is_int:
        iv = -mant if neg else mant
        return float(iv), iv, True, k
    if mant > 9007199254740992 or exp10 < -22 or exp10 > 22:
        return 0.0, 0, False, -1  # not exactly representable in one IEEE operation
    v = float(mant)
    if exp10 < 0:
        v = v / pow10[-exp10]
    else:
        v = v * pow10[exp10]
    return (-v if neg else v), 0, False, k


@kernel
def _jskip(buf, pos, n):
    """Skip one JSON value; -1 when malformed (or too deeply nested)."""
    depth = 0
    k = pos
    while True:
        k = _ws(buf, k, n)
        if k >= n:
            return -1
        c = buf[k]
        if c == 34:
            _, _, k = _jstring(buf, k, n)
            if k < 0:
                return -1
        elif c == 123 or c == 91:
            depth += 1
            if depth > 16:
                return -1
            k += 1
            continue
        elif c == 125 or c == 93:
            depth -= 1
            k += 1
            if depth < 0:
                return -1
        elif c == 116 or c == 102 or c == 110:  # true false null
            while k < n and 97 <= buf[k] <= 122:
                k += 1
        else:
            _, _, _, k = _jnumber(buf, k, n, _POW10)
            if k < 0:
                return -1
        if depth == 0:
            return k
        k = _ws(buf, k, n)
        if k < n and buf[k] == 44:
            k += 1


@kernel
def _jlevels(buf, pos, n, deltas, nd, side):
    """Parse a JSON array of {"p","s"} levels at buf[pos] == '['; returns (next, count), next -1 to give up."""
    pos = _ws(buf, pos + 1, n)
    if pos < n and buf[pos] == 93:
        return pos + 1, nd
    while True:
        if pos >= n or buf[pos] != 123:
            return -1, nd
        pos += 1
        lp = np.nan
        ls = np.nan
        first = True
        while True:
            pos = _ws(buf, pos, n)
            if pos >= n:
                return -1, nd
            if buf[pos] == 125:
                pos += 1
                break
            if not first:
                if buf[pos] != 44:
                    return -1, nd
                pos = _ws(buf, pos + 1, n)
            first = False
            if pos >= n or buf[pos] != 34:
                return -1, nd
            ks, ke, pos = _jstring(buf, pos, n)
            if pos < 0 or ke - ks != 1:
                return -1, nd
            key = buf[ks]
            pos = _ws(buf, pos, n)
            if pos >= n or buf[pos] != 58:
                return -1, nd
            pos = _ws(buf, pos + 1, n)
            if pos >= n or not (buf[pos] == 45 or 48 <= buf[pos] <= 57):
                return -1, nd
            val, _, _, pos = _jnumber(buf, pos, n, _POW10)
            if pos < 0:
                return -1, nd
            if key == 112:
                lp = val
            elif key == 115:
                ls = val
            else:
                return -1, nd
        nd = _add_level(deltas, nd, side, lp, ls)
        if nd < 0:
            return -1, nd
        pos = _ws(buf, pos, n)
        if pos < n and buf[pos] == 44:
            pos = _ws(buf, pos + 1, n)
            continue
        if pos < n and buf[pos] == 93:
            return pos + 1, nd
        return -1, nd


@kernel
def parse_json(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts, vals, ivals, codes):
    """Parse a JSON frame into the arrays; ``counts`` gets the sizes. Returns OK or BAIL."""
    n = buf.shape[0]
    _clear_counts(counts)
    pos = _ws(buf, 0, n)
    if pos >= n or buf[pos] != 91:
        return BAIL
    pos = _ws(buf, pos + 1, n)
    if pos < n and buf[pos] == 93:
        return OK if _ws(buf, pos + 1, n) == n else BAIL
    nmsg = 0
    while True:
        if pos >= n or buf[pos] != 123:
            return BAIL
        pos += 1
        _reset_fields(vals, ivals, codes)
        mtype = 0
        s_start = s_end = -1
        ts = np.int64(0)
        has_ts = False
        reset = False
        d0 = nd = counts[N_DELTAS]
        seen_b = seen_a = asks_first = False
        bid_start = nd
        first = True
        while True:
            pos = _ws(buf, pos, n)
            if pos >= n:
                return BAIL
            if buf[pos] == 125:
                pos += 1
                break
            if not first:
                if buf[pos] != 44:
                    return BAIL
                pos = _ws(buf, pos + 1, n)
            first = False
            if pos >= n or buf[pos] != 34:
                return BAIL
            ks, ke, pos = _jstring(buf, pos, n)
            if pos < 0:
                return BAIL
            fid = _field(buf, ks, ke)
            pos = _ws(buf, pos, n)
            if pos >= n or buf[pos] != 58:
                return BAIL
            pos = _ws(buf, pos + 1, n)
            if pos >= n:
                return BAIL
            if fid < 0:  # a field the engine does not read (conditions, taker side, ...)
                pos = _jskip(buf, pos, n)
                if pos < 0:
                    return BAIL
                continue
            ch = buf[pos]
            if ch == 34:
                vs, ve, pos = _jstring(buf, pos, n)
                if pos < 0:
                    return BAIL
                if fid == F_T:
                    if ve - vs != 1:
                        return BAIL
                    mtype = buf[vs]
                elif fid == F_S:
                    s_start = vs
                    s_end = ve
                elif fid == F_TS:
                    ts, has_ts = _parse_one(buf, vs, ve)
                    if not has_ts:
                        return BAIL
                elif F_X <= fid <= F_AX:
                    code = _code(buf, vs, ve)
                    if code < 0:
                        return BAIL
                    codes[fid - F_X] = code
                else:
                    return BAIL  # a string where a number belongs: the slow path reports it
            elif ch == 45 or (48 <= ch <= 57):
                val, ival, is_int, pos = _jnumber(buf, pos, n, _POW10)
                if pos < 0:
                    return BAIL
                if fid >= FIRST_INT:
                    if not is_int:
                        return BAIL
                    ivals[fid - FIRST_INT] = ival
                elif fid >= FIRST_NUMBER or fid == F_C:
                    vals[fid] = val
                else:
                    return BAIL
            elif ch == 91:
                if fid == F_B or fid == F_A:
                    if (fid == F_B and seen_b) or (fid == F_A and seen_a):
                        return BAIL
                    if fid == F_B:
                        seen_b = True
                        bid_start = nd
                        asks_first = seen_a
                        pos, nd = _jlevels(buf, pos, n, deltas, nd, _SIDE_BID)
                    else:
                        seen_a = True
                        pos, nd = _jlevels(buf, pos, n, deltas, nd, _SIDE_ASK)
                elif fid == F_C:
                    pos = _jskip(buf, pos, n)
                else:
                    return BAIL
                if pos < 0:
                    return BAIL
            elif fid == F_R and ch == 116 and pos + 4 <= n and buf[pos + 1] == 114 and buf[pos + 2] == 117 and buf[pos + 3] == 101:
                reset = True
                pos += 4
            elif fid == F_R and ch == 102 and pos + 5 <= n and buf[pos + 1] == 97 and buf[pos + 2] == 108 and buf[pos + 3] == 115 and buf[pos + 4] == 101:
                pos += 5
            else:
                return BAIL
        if not has_ts:
            return BAIL
        has_levels = seen_b or seen_a
        if not _emit(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts,
                     mtype, s_start, s_end, ts, vals, ivals, codes, reset, d0, nd, has_levels, asks_first, bid_start):
            return BAIL
        nmsg += 1
        pos = _ws(buf, pos, n)
        if pos >= n:
            return BAIL
        if buf[pos] == 44:
            pos = _ws(buf, pos + 1, n)
            continue
        if buf[pos] == 93:
            if _ws(buf, pos + 1, n) != n:
                return BAIL
            break
        return BAIL
    counts[N_MESSAGES] = nmsg
    return OK


# ---------------------------------------------------------------------------------------------
# msgpack
# ---------------------------------------------------------------------------------------------
@inline_kernel
def _be(buf, pos, size):
    v = np.uint64(0)
    for k in range(size):
        v = (v << np.uint64(8)) | np.uint64(buf[pos + k])
    return v


@inline_kernel
def _mnumber(buf, pos, n, bits):
    """A msgpack number: (value, int_value, is_int, next); next = -1 when it is not a number."""
    if pos >= n:
        return 0.0, 0, False, -1
    c = buf[pos]
    if c <= 0x7F:
        return float(c), np.int64(c), True, pos + 1
    if c >= 0xE0:
        iv = np.int64(c) - 256
        return float(iv), iv, True, pos + 1
    if c == 0xCB:
        if pos + 9 > n:
            return 0.0, 0, False, -1
        bits[0] = _be(buf, pos + 1, 8)
        return bits.view(np.float64)[0], 0, False, pos + 9  # a view: no allocation without NRT
    if c == 0xCA:
        if pos + 5 > n:
            return 0.0, 0, False, -1
        bits32 = bits.view(np.uint32)  # two words of the scratch, reinterpreted in place
        bits32[0] = np.uint32(_be(buf, pos + 1, 4))
        return float(bits32.view(np.float32)[0]), 0, False, pos + 5
    if 0xCC <= c <= 0xCF:
        size = 1 << (c - 0xCC)
        if pos + 1 + size > n:
            return 0.0, 0, False, -1
        u = _be(buf, pos + 1, size)
        if u > np.uint64(9223372036854775807):
            return float(u), 0, False, pos + 1 + size  # fine as a float, not as an int64
        return float(u), np.int64(u), True, pos + 1 + size
    if 0xD0 <= c <= 0xD3:
        size = 1 << (c - 0xD0)
        if pos + 1 + size > n:
            return 0.0, 0, False, -1
        u = _be(buf, pos + 1, size)
        shift = np.uint64(64 - 8 * size)
        iv = np.int64(u << shift) >> np.int64(shift)  # sign-extend
        return float(iv), iv, True, pos + 1 + size
    return 0.0, 0, False, -1


@inline_kernel
def _mstr(buf, pos, n):
    """(start, end, next) of a msgpack str; next = -1 when buf[pos] is not one."""
    if pos >= n:
        return 0, 0, -1
    c = buf[pos]
    if 0xA0 <= c <= 0xBF:
        start = pos + 1
        end = start + (c & 0x1F)
    elif c == 0xD9 and pos + 2 <= n:
        start = pos + 2
        end = start + buf[pos + 1]
    elif c == 0xDA and pos + 3 <= n:
        start = pos + 3
        end = start + np.int64(_be(buf, pos + 1, 2))
    else:
        return 0, 0, -1
    if end > n:
        return 0, 0, -1
    return start, end, end


@inline_kernel
def _mcontainer(buf, pos, n):
    """(kind, count, next) for an array (1) or map (2) header; kind 0 when neither."""
    if pos >= n:
        return 0, 0, -1
    c = buf[pos]
    if 0x90 <= c <= 0x9F:
        return 1, c & 0x0F, pos + 1
    if 0x80 <= c <= 0x8F:
        return 2, c & 0x0F, pos + 1
    if (c == 0xDC or c == 0xDE) and pos + 3 <= n:
        return (1 if c == 0xDC else 2), np.int64(_be(buf, pos + 1, 2)), pos + 3
    if (c == 0xDD or c == 0xDF) and pos + 5 <= n:
        return (1 if c == 0xDD else 2), np.int64(_be(buf, pos + 1, 4)), pos + 5
    return 0, 0, -1


@kernel
def _mskip(buf, pos, n):
    """Skip one msgpack value (iteratively); -1 when cut off or invalid."""
    pending = 1
    k = pos
    while pending > 0:
        if k >= n:
            return -1
        c = buf[k]
        pending -= 1
        if c <= 0x7F or c >= 0xE0 or c == 0xC0 or c == 0xC2 or c == 0xC3:
            k += 1
        elif 0xA0 <= c <= 0xBF or c == 0xD9 or c == 0xDA or c == 0xDB:
            if c <= 0xBF:
                k += 1 + (c & 0x1F)
            else:
                w = 1 if c == 0xD9 else (2 if c == 0xDA else 4)
                if k + 1 + w > n:
                    return -1
                k += 1 + w + np.int64(_be(buf, k + 1, w))
        elif 0xC4 <= c <= 0xC6:
            w = 1 << (c - 0xC4)
            if k + 1 + w > n:
                return -1
            k += 1 + w + np.int64(_be(buf, k + 1, w))
        elif 0xC7 <= c <= 0xC9:
            w = 1 << (c - 0xC7)
            if k + 1 + w > n:
                return -1
            k += 2 + w + np.int64(_be(buf, k + 1, w))
        elif c == 0xCA or c == 0xCE or c == 0xD2:
            k += 5
        elif c == 0xCB or c == 0xCF or c == 0xD3:
            k += 9
        elif c == 0xCC or c == 0xD0:
            k += 2
        elif c == 0xCD or c == 0xD1:
            k += 3
        elif 0xD4 <= c <= 0xD8:
            k += 2 + (1 << (c - 0xD4))
        else:
            kind, count, nxt = _mcontainer(buf, k, n)
            if kind == 0 or count > n:
                return -1
            pending += count * kind  # a map holds two values per entry
            k = nxt
    return k if k <= n else -1


@inline_kernel
def _mtimestamp(buf, pos, n):
    """A msgpack Timestamp (ext -1) as (ns, next); next = -1 when it is not one or out of range."""
    if pos + 2 > n:
        return 0, -1
    c = buf[pos]
    if c == 0xD6:
        size, start = 4, pos + 2
        typ = buf[pos + 1]
    elif c == 0xD7:
        size, start = 8, pos + 2
        typ = buf[pos + 1]
    elif c == 0xC7 and pos + 3 <= n and buf[pos + 1] == 12:
        size, start = 12, pos + 3
        typ = buf[pos + 2]
    else:
        return 0, -1
    if typ != 0xFF or start + size > n:
        return 0, -1
    max_s = np.int64(9223372035)
    if size == 4:
        secs = np.int64(_be(buf, start, 4))
        nanos = np.int64(0)
    elif size == 8:
        u = _be(buf, start, 8)
        nanos = np.int64(u >> np.uint64(34))
        secs = np.int64(u & np.uint64((1 << 34) - 1))
    else:
        nanos = np.int64(_be(buf, start, 4))
        secs = np.int64(_be(buf, start + 4, 8))
    if nanos >= 1_000_000_000 or secs > max_s or secs < -max_s:
        return 0, -1
    return secs * 1_000_000_000 + nanos, start + size


@kernel
def _mlevels(buf, pos, n, deltas, nd, side, bits):
    """Parse a msgpack array of {"p","s"} maps; returns (next, count), next -1 to give up."""
    kind, n_levels, pos = _mcontainer(buf, pos, n)
    if kind != 1:
        return -1, nd
    for _ in range(n_levels):
        kind, n_fields, pos = _mcontainer(buf, pos, n)
        if kind != 2:
            return -1, nd
        lp = np.nan
        ls = np.nan
        for _f in range(n_fields):
            ks, ke, pos = _mstr(buf, pos, n)
            if pos < 0 or ke - ks != 1:
                return -1, nd
            val, _, _, pos = _mnumber(buf, pos, n, bits)
            if pos < 0:
                return -1, nd
            if buf[ks] == 112:
                lp = val
            elif buf[ks] == 115:
                ls = val
            else:
                return -1, nd
        nd = _add_level(deltas, nd, side, lp, ls)
        if nd < 0:
            return -1, nd
    return pos, nd


@kernel
def parse_msgpack(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts, vals, ivals, codes, bits):
    """Parse a msgpack frame into the arrays; ``counts`` gets the sizes. Returns OK or BAIL."""
    n = buf.shape[0]
    _clear_counts(counts)
    kind, n_msgs, pos = _mcontainer(buf, 0, n)
    if kind != 1:
        return BAIL
    for _ in range(n_msgs):
        kind, n_fields, pos = _mcontainer(buf, pos, n)
        if kind != 2:
            return BAIL
        _reset_fields(vals, ivals, codes)
        mtype = 0
        s_start = s_end = -1
        ts = np.int64(0)
        has_ts = False
        reset = False
        d0 = nd = counts[N_DELTAS]
        seen_b = seen_a = asks_first = False
        bid_start = nd
        for _f in range(n_fields):
            ks, ke, pos = _mstr(buf, pos, n)
            if pos < 0 or pos >= n:
                return BAIL
            fid = _field(buf, ks, ke)
            if fid < 0:
                pos = _mskip(buf, pos, n)
                if pos < 0:
                    return BAIL
                continue
            ch = buf[pos]
            is_str = (0xA0 <= ch <= 0xBF) or ch == 0xD9 or ch == 0xDA
            is_array = (0x90 <= ch <= 0x9F) or ch == 0xDC or ch == 0xDD
            if fid == F_TS:
                ts, pos = _mtimestamp(buf, pos, n)
                if pos < 0:
                    return BAIL
                has_ts = True
            elif fid <= F_AX:
                if not is_str:
                    return BAIL
                vs, ve, pos = _mstr(buf, pos, n)
                if pos < 0:
                    return BAIL
                if fid == F_T:
                    if ve - vs != 1:
                        return BAIL
                    mtype = buf[vs]
                elif fid == F_S:
                    s_start = vs
                    s_end = ve
                else:
                    code = _code(buf, vs, ve)
                    if code < 0:
                        return BAIL
                    codes[fid - F_X] = code
            elif fid == F_B or fid == F_A:
                if not is_array or (fid == F_B and seen_b) or (fid == F_A and seen_a):
                    return BAIL
                if fid == F_B:
                    seen_b = True
                    bid_start = nd
                    asks_first = seen_a
                    pos, nd = _mlevels(buf, pos, n, deltas, nd, _SIDE_BID, bits)
                else:
                    seen_a = True
                    pos, nd = _mlevels(buf, pos, n, deltas, nd, _SIDE_ASK, bits)
                if pos < 0:
                    return BAIL
            elif fid == F_R:
                if ch == 0xC3:
                    reset = True
                elif ch != 0xC2:
                    return BAIL
                pos += 1
            elif fid == F_C and is_array:
                pos = _mskip(buf, pos, n)
                if pos < 0:
                    return BAIL
            else:
                val, ival, is_int, pos = _mnumber(buf, pos, n, bits)
                if pos < 0:
                    return BAIL
                if fid >= FIRST_INT:
                    if not is_int:
                        return BAIL
                    ivals[fid - FIRST_INT] = ival
                else:
                    vals[fid] = val
        if not has_ts:
            return BAIL
        has_levels = seen_b or seen_a
        if not _emit(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts,
                     mtype, s_start, s_end, ts, vals, ivals, codes, reset, d0, nd, has_levels, asks_first, bid_start):
            return BAIL
    if pos != n:
        return BAIL
    counts[N_MESSAGES] = n_msgs
    return OK
