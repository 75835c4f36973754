"""Numba bar aggregation: trades into OHLCV + VWAP + count bars at many timeframes at once, plus tick-,
volume- and value-bars, with book microstructure sampled at each bar's close.

Entry points (names are stable; the market-data layer and the live engine call these):

- ``BarAggregator(n_symbols, timeframes=DEFAULT_TIMEFRAMES, *, tick_bars=(), volume_bars=(),
  value_bars=(), book=None)``
- ``BarAggregator.add_trades(trades) -> BarBatch``: a ``TRADE_DTYPE`` batch in one numba call; returns the
  bars that closed.
- ``BarAggregator.flush(now_ns) -> BarBatch``: close every time bar whose window ended by ``now_ns`` (call
  it on a timer so a quiet feed still gets its bars).
- ``BarAggregator.close_all() -> BarBatch``: close every open bar, time and activity (end of a replay).
- ``BarBatch``: ``bars`` (``engine.events.BAR_DTYPE``), ``timeframe`` (int16 index into ``names``),
  ``micro`` (``MICRO_DTYPE``); ``batch.select("1m")`` gives one timeframe's ``BAR_DTYPE`` array.

Semantics:

- Time bars cover ``[k * tf, (k + 1) * tf)`` ns since the Unix epoch (UTC); ``ts_ns`` is the window
  start. A trade exactly on a boundary opens the next bar. A window without trades produces no bar.
  A bar is emitted when the first trade of a later window arrives, or by ``flush``/``close_all``.
- Open and close follow trade timestamps (earliest / latest ``ts_ns``, arrival order among equal times),
  so small reorderings inside a bar do not change it. High, low, volume, VWAP (sum(p*s)/sum(s), NaN when
  the volume is 0) and trade count do not depend on order.
- Every timeframe must be a multiple of the smallest. Each timeframe's parent is the largest smaller one
  that divides it (1s <- 5s <- 15s ... for the defaults; 1m <- 3m and 1m <- 5m <- 15m for 1m,3m,5m,15m),
  so a parent's windows nest in its children's. A trade updates only the smallest bar; a bar that closes
  is merged into its children, finest first. That is why eleven timeframes cost about as much as one.
- A late trade (older than the open smallest window, or in one a flush already closed) is counted in
  ``stats()["late_trades"]`` and still lands in every larger bar whose window is open and not yet emitted.
  Trades whose larger bar a flush already emitted are counted there too (once per bar they missed). So
  call ``flush(now_ns - grace)`` rather than ``flush(now_ns)`` when exchange timestamps lag the clock.
- Activity bars (tick/volume/value) close on the trade that makes the count / volume / notional reach the
  threshold (that trade belongs to the closing bar; nothing is split). ``ts_ns`` is their first trade's
  time. Thresholds are a number or one number per symbol. They follow arrival order.
- ``recv_ns`` of a bar is the ``recv_ns`` of its last trade. ``flags`` is 0.
- Microstructure (``MICRO_DTYPE``: mid, spread, spread_bps, microprice, bid/ask depth over the book's
  ``depth_levels``, imbalance) is **sampled from the attached ``BookManager`` at the moment the bar is
  emitted**, not time-weighted: the book as it stands when ``add_trades``/``flush`` runs (the live loop
  applies a frame's book deltas first). All NaN with no book; an empty book gives NaN prices, depth 0.
- NaN/infinite/zero/negative prices, NaN/infinite/negative sizes and unknown symbol ids are counted drops;
  trades flagged ``FLAG_CORRECTION`` are skipped (counted) since they are not prints.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine._jit import entry_point, inline_kernel, kernel
from engine.book import BookManager, _checked, _tob_values
from engine.errors import InputError
from engine.events import BAR_DTYPE, FLAG_CORRECTION, TRADE_DTYPE, copy_records, frozen_empty

log = logging.getLogger("tickforge.bars")

NS_PER_S = 1_000_000_000

#: The 11 standard timeframes, name -> seconds.
DEFAULT_TIMEFRAMES: tuple[str, ...] = ("1s", "5s", "15s", "30s", "1m", "5m", "15m", "30m", "1h", "4h", "1d")

KIND_TICK = 1
KIND_VOLUME = 2
KIND_VALUE = 3

#: Book state sampled when a bar closes (NaN without a book).
MICRO_DTYPE = np.dtype(
    [
        ("mid", np.float64),
        ("spread", np.float64),
        ("spread_bps", np.float64),
        ("microprice", np.float64),
        ("bid_depth", np.float64),
        ("ask_depth", np.float64),
        ("imbalance", np.float64),
    ],
    align=True,
)

# time-bar integer state columns: tint[s, k, col]
_T_START = 0     # window start (ns)
_T_N = 1         # trades in the bar
_T_RECV = 2      # recv_ns of the last trade
_T_OPEN_TS = 3   # ts of the trade that set open
_T_CLOSE_TS = 4  # ts of the trade that set close
_T_CLOSED = 5    # 1 once a flush closed this window (its bar, if any, was emitted)
_N_TINT = 6
# float state columns: tflt[s, k, col] (activity bars add the running measure)
_F_OPEN = 0
_F_HIGH = 1
_F_LOW = 2
_F_CLOSE = 3
_F_VOLUME = 4
_F_VALUE = 5     # sum(price * size)
_F_MEASURE = 6   # activity bars: trades / volume / value so far
_N_TFLT = 6
_N_AFLT = 7

# counters
C_TRADES = 0
C_DROP_SYMBOL = 1
C_DROP_PRICE = 2
C_DROP_SIZE = 3
C_CORRECTIONS = 4
C_LATE = 5
C_BARS = 6
_N_COUNTERS = 8
COUNTER_NAMES = (
    "trades",
    "dropped_unknown_symbol",
    "dropped_bad_price",
    "dropped_bad_size",
    "skipped_corrections",
    "late_trades",
    "bars_emitted",
)
_DROP_COUNTERS = (C_DROP_SYMBOL, C_DROP_PRICE, C_DROP_SIZE)

_NO_WINDOW = np.int64(-(1 << 62))  # start of "no window yet": adding any timeframe cannot overflow
_COPY_OUT_LIMIT = 65_536  # bars; above this a batch hands over its output buffers instead of copying


# =================================================================================================
# numba kernels
# =================================================================================================


@inline_kernel
def _emit(out_bars, out_tf, out_micro, j, tf_index, s, start, ints, flts, book, depth_n):
    """Write one finished bar at row ``j``; ``ints``/``flts`` are its state rows."""
    b = out_bars[j]
    b.ts_ns = start
    b.recv_ns = ints[_T_RECV]
    b.symbol_id = s
    b.flags = 0
    b.open = flts[_F_OPEN]
    b.high = flts[_F_HIGH]
    b.low = flts[_F_LOW]
    b.close = flts[_F_CLOSE]
    b.volume = flts[_F_VOLUME]
    b.vwap = flts[_F_VALUE] / flts[_F_VOLUME] if flts[_F_VOLUME] > 0.0 else np.nan
    b.trade_count = ints[_T_N]
    out_tf[j] = tf_index
    m = out_micro[j]
    qty, ival, okey, oqty, fval = book
    if s < ival.shape[0]:
        v = _tob_values(qty, ival, okey, oqty, fval, s, depth_n)
        m.mid = v[4]
        m.spread = v[5]
        m.spread_bps = v[6]
        m.microprice = v[7]
        m.bid_depth = v[8]
        m.ask_depth = v[9]
        m.imbalance = v[10]
    else:
        m.mid = np.nan
        m.spread = np.nan
        m.spread_bps = np.nan
        m.microprice = np.nan
        m.bid_depth = np.nan
        m.ask_depth = np.nan
        m.imbalance = np.nan


@inline_kernel
def _start_bar(ints, flts, ts, price, size, recv):
    ints[_T_N] = 1
    ints[_T_RECV] = recv
    ints[_T_OPEN_TS] = ts
    ints[_T_CLOSE_TS] = ts
    flts[_F_OPEN] = price
    flts[_F_HIGH] = price
    flts[_F_LOW] = price
    flts[_F_CLOSE] = price
    flts[_F_VOLUME] = size
    flts[_F_VALUE] = price * size


@inline_kernel
def _fold_common(ints, flts, price, size, recv):
    """What every trade does to a bar it joins, whichever trade sets the close: high, low, volume,
    value, count, last receive time. Inlined in numba IR, so sharing it costs nothing."""
    if price > flts[_F_HIGH]:
        flts[_F_HIGH] = price
    if price < flts[_F_LOW]:
        flts[_F_LOW] = price
    flts[_F_VOLUME] += size
    flts[_F_VALUE] += price * size
    ints[_T_N] += 1
    ints[_T_RECV] = recv


@inline_kernel
def _fold_trade(ints, flts, ts, price, size, recv):
    """Add one trade to a bar that already holds trades (open/close by timestamp)."""
    if ts < ints[_T_OPEN_TS]:
        ints[_T_OPEN_TS] = ts
        flts[_F_OPEN] = price
    if ts >= ints[_T_CLOSE_TS]:
        ints[_T_CLOSE_TS] = ts
        flts[_F_CLOSE] = price
    _fold_common(ints, flts, price, size, recv)


@inline_kernel
def _fold_arrival(ints, flts, price, size, recv):
    """Add one trade to an activity bar: arrival order decides the close."""
    flts[_F_CLOSE] = price
    _fold_common(ints, flts, price, size, recv)


@inline_kernel
def _merge_bar(dst_i, dst_f, src_i, src_f):
    """Merge a finished smaller bar into a larger one."""
    if dst_i[_T_N] == 0:
        for c in range(_N_TFLT):
            dst_f[c] = src_f[c]
        dst_i[_T_N] = src_i[_T_N]
        dst_i[_T_RECV] = src_i[_T_RECV]
        dst_i[_T_OPEN_TS] = src_i[_T_OPEN_TS]
        dst_i[_T_CLOSE_TS] = src_i[_T_CLOSE_TS]
        return
    if src_i[_T_OPEN_TS] < dst_i[_T_OPEN_TS]:
        dst_i[_T_OPEN_TS] = src_i[_T_OPEN_TS]
        dst_f[_F_OPEN] = src_f[_F_OPEN]
    if src_i[_T_CLOSE_TS] >= dst_i[_T_CLOSE_TS]:
        dst_i[_T_CLOSE_TS] = src_i[_T_CLOSE_TS]
        dst_f[_F_CLOSE] = src_f[_F_CLOSE]
    if src_f[_F_HIGH] > dst_f[_F_HIGH]:
        dst_f[_F_HIGH] = src_f[_F_HIGH]
    if src_f[_F_LOW] < dst_f[_F_LOW]:
        dst_f[_F_LOW] = src_f[_F_LOW]
    dst_f[_F_VOLUME] += src_f[_F_VOLUME]
    dst_f[_F_VALUE] += src_f[_F_VALUE]
    dst_i[_T_N] += src_i[_T_N]
    dst_i[_T_RECV] = src_i[_T_RECV]


@inline_kernel
def _close_level(tint, tflt, children, child_start, counters, s, k, out_bars, out_tf, out_micro, j, book, depth_n):
    """Close level ``k``'s bar of symbol ``s``: emit it if it holds trades and hand it to the child levels.
    Returns the next output row."""
    n_k = tint[s, k, _T_N]
    if n_k > 0:
        _emit(out_bars, out_tf, out_micro, j, k, s, tint[s, k, _T_START], tint[s, k], tflt[s, k], book, depth_n)
        j += 1
        for c_i in range(child_start[k], child_start[k + 1]):
            c = children[c_i]
            if tint[s, c, _T_CLOSED] == 0:
                _merge_bar(tint[s, c], tflt[s, c], tint[s, k], tflt[s, k])
            else:
                # a flush already emitted the larger bar these trades belong to: late for it
                counters[C_LATE] += n_k
        tint[s, k, _T_N] = 0
    return j


@kernel
def _add_trades(trades, start, tf_ns, parent, children, child_start, tint, tflt, akind, athr, aint, aflt, counters,
                out_bars, out_tf, out_micro, n_out, book, depth_n, chain):
    """Fold ``trades[start:]`` into bars; returns (next trade index, rows written, trades dropped).
    Stops early only when the output buffer might not hold the bars the next trade could close."""
    n = trades.shape[0]
    n_sym = tint.shape[0]
    k_count = tf_ns.shape[0]
    a_count = akind.shape[0]
    room = out_bars.shape[0] - (k_count + a_count)
    tf0 = tf_ns[0]
    folded = 0
    dropped = 0
    for i in range(start, n):
        t = trades[i]
        s = np.int64(t.symbol_id)
        if s < 0 or s >= n_sym:
            counters[C_DROP_SYMBOL] += 1
            dropped += 1
            continue
        if (t.flags & FLAG_CORRECTION) != 0:
            counters[C_CORRECTIONS] += 1
            continue
        price = t.price
        size = t.size
        if not (price > 0.0) or price == np.inf:
            counters[C_DROP_PRICE] += 1
            dropped += 1
            continue
        if not (size >= 0.0) or size == np.inf:
            counters[C_DROP_SIZE] += 1
            dropped += 1
            continue
        if n_out > room:
            counters[C_TRADES] += folded
            return i, n_out, dropped
        folded += 1
        ts = t.ts_ns
        recv = t.recv_ns
        fine_start = tint[s, 0, _T_START]
        fine_closed = tint[s, 0, _T_CLOSED] != 0
        if not fine_closed and ts >= fine_start and ts < fine_start + tf0:
            _fold_trade(tint[s, 0], tflt[s, 0], ts, price, size, recv)  # the hot path
        elif ts < fine_start or (fine_closed and ts < fine_start + tf0):
            # late: its smallest window is gone. Larger windows still open take it, each through the
            # highest-resolution level that can (its bar reaches the larger ones when it closes).
            counters[C_LATE] += 1
            for k in range(1, k_count):
                ks = tint[s, k, _T_START]
                if tint[s, k, _T_CLOSED] == 0 and ts >= ks and ts < ks + tf_ns[k]:
                    p = parent[k]
                    ps = tint[s, p, _T_START]
                    if p == 0 or not (tint[s, p, _T_CLOSED] == 0 and ts >= ps and ts < ps + tf_ns[p]):
                        if tint[s, k, _T_N] == 0:
                            _start_bar(tint[s, k], tflt[s, k], ts, price, size, recv)
                        else:
                            _fold_trade(tint[s, k], tflt[s, k], ts, price, size, recv)
        else:
            # a later smallest window: close every level whose window the trade left, finest first, so
            # each closed bar reaches its child levels before they close in turn
            for k in range(k_count):
                ks = tint[s, k, _T_START]
                if ts >= ks and ts < ks + tf_ns[k] and not (k == 0 and fine_closed):
                    if chain:
                        break  # each level nests in the next: the larger windows are unchanged too
                    continue
                n_out = _close_level(tint, tflt, children, child_start, counters, s, k, out_bars, out_tf, out_micro,
                                     n_out, book, depth_n)
                tint[s, k, _T_START] = ts - ts % tf_ns[k]
                tint[s, k, _T_CLOSED] = 0
            _start_bar(tint[s, 0], tflt[s, 0], ts, price, size, recv)
        for a in range(a_count):
            ai = aint[s, a]
            af = aflt[s, a]
            if ai[_T_N] == 0:
                ai[_T_START] = ts
                _start_bar(ai, af, ts, price, size, recv)
                af[_F_MEASURE] = 0.0
            else:
                _fold_arrival(ai, af, price, size, recv)
            kind = akind[a]
            if kind == KIND_TICK:
                af[_F_MEASURE] += 1.0
            elif kind == KIND_VOLUME:
                af[_F_MEASURE] += size
            else:
                af[_F_MEASURE] += price * size
            if af[_F_MEASURE] >= athr[s, a]:
                _emit(out_bars, out_tf, out_micro, n_out, k_count + a, s, ai[_T_START], ai, af, book, depth_n)
                n_out += 1
                ai[_T_N] = 0
    counters[C_TRADES] += folded
    return n, n_out, dropped


@kernel
def _flush(now_ns, close_activity, tf_ns, children, child_start, tint, tflt, akind, aint, aflt, counters, out_bars,
           out_tf, out_micro, n_out, book, depth_n):
    """Close time bars whose window ended by ``now_ns`` (and, if asked, every activity bar)."""
    n_sym = tint.shape[0]
    k_count = tf_ns.shape[0]
    for s in range(n_sym):
        for k in range(k_count):
            ks = tint[s, k, _T_START]
            if tint[s, k, _T_CLOSED] == 0 and ks != _NO_WINDOW and ks + tf_ns[k] <= now_ns:
                n_out = _close_level(tint, tflt, children, child_start, counters, s, k, out_bars, out_tf, out_micro,
                                     n_out, book, depth_n)
                tint[s, k, _T_CLOSED] = 1
        if close_activity:
            for a in range(akind.shape[0]):
                if aint[s, a, _T_N] > 0:
                    _emit(out_bars, out_tf, out_micro, n_out, k_count + a, s, aint[s, a, _T_START], aint[s, a],
                          aflt[s, a], book, depth_n)
                    n_out += 1
                    aint[s, a, _T_N] = 0
    return n_out


# =================================================================================================
# Python front end
# =================================================================================================

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def timeframe_seconds(spec: str | int) -> int:
    """``"15s" | "5m" | "4h" | "1d"`` or an int of seconds -> seconds."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        seconds = int(spec)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(spec))
        if not m:
            raise InputError(f"bad timeframe {spec!r}: expected like '1s', '5m', '4h', '1d' or seconds")
        seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds < 1:
        raise InputError(f"bad timeframe {spec!r}: must be at least 1 second")
    return seconds


def timeframe_name(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class BarBatch:
    """Bars that closed in one call: ``bars[i]`` is of timeframe ``names[timeframe[i]]``."""

    bars: np.ndarray       # BAR_DTYPE
    timeframe: np.ndarray  # int16 index into names
    micro: np.ndarray      # MICRO_DTYPE, sampled from the book when the bar closed
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.bars)

    def select(self, name: str) -> np.ndarray:
        """The ``BAR_DTYPE`` bars of one timeframe (``"1m"``, ``"tick:500"``, ...), in emission order."""
        return self.bars[self.timeframe == self._index(name)]

    def select_micro(self, name: str) -> np.ndarray:
        return self.micro[self.timeframe == self._index(name)]

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise InputError(f"unknown timeframe {name!r}; have {', '.join(self.names)}") from None


class BarAggregator:
    """Bars of ``n_symbols`` symbols (ids ``0..n_symbols-1``) at every timeframe in one pass."""

    def __init__(
        self,
        n_symbols: int,
        timeframes: Sequence[str | int] = DEFAULT_TIMEFRAMES,
        *,
        tick_bars: Sequence[float | Sequence[float]] = (),
        volume_bars: Sequence[float | Sequence[float]] = (),
        value_bars: Sequence[float | Sequence[float]] = (),
        book: BookManager | None = None,
        initial_capacity: int = 1024,
    ) -> None:
        n = int(n_symbols)
        if n < 1:
            raise InputError(f"n_symbols must be >= 1, got {n_symbols}")
        seconds = [timeframe_seconds(t) for t in timeframes]
        if not seconds:
            raise InputError("at least one timeframe is needed")
        if sorted(set(seconds)) != seconds:
            raise InputError(f"timeframes must be distinct and ascending, got {list(timeframes)}")
        if any(sec % seconds[0] for sec in seconds):
            raise InputError(f"every timeframe must be a multiple of the smallest ({seconds[0]} s)")
        self.n_symbols = n
        self.timeframe_seconds = tuple(seconds)
        names = [timeframe_name(sec) for sec in seconds]
        kinds: list[int] = []
        thresholds: list[np.ndarray] = []
        activity = ((KIND_TICK, "tick", tick_bars), (KIND_VOLUME, "volume", volume_bars), (KIND_VALUE, "value", value_bars))
        for kind, label, specs in activity:
            for j, spec in enumerate(specs):
                thr = np.broadcast_to(np.asarray(spec, dtype=np.float64), (n,)).copy() if np.ndim(spec) == 0 else np.asarray(spec, dtype=np.float64)
                if thr.shape != (n,):
                    raise InputError(f"{label} bar threshold must be a number or one per symbol ({n})")
                if not np.all(np.isfinite(thr) & (thr > 0)):
                    raise InputError(f"{label} bar thresholds must be finite and > 0")
                kinds.append(kind)
                thresholds.append(thr)
                names.append(f"{label}:{float(spec):g}" if np.ndim(spec) == 0 else f"{label}:per-symbol-{j}")
        if len(set(names)) != len(names):
            raise InputError(f"duplicate bar specs: {names}")
        self.names = tuple(names)
        self._no_bars = BarBatch(frozen_empty(BAR_DTYPE), frozen_empty(np.int16), frozen_empty(MICRO_DTYPE), self.names)
        k, a = len(seconds), len(kinds)
        self._tf_ns = np.array(seconds, dtype=np.int64) * NS_PER_S
        # each level's parent is the largest smaller timeframe that divides it: its closed bars feed this one
        parent = [0] + [max(j for j in range(lvl) if seconds[lvl] % seconds[j] == 0) for lvl in range(1, k)]
        children = [[c for c in range(1, k) if parent[c] == lvl] for lvl in range(k)]
        self._parent = np.array(parent, dtype=np.int64)
        self._chain = all(parent[lvl] == lvl - 1 for lvl in range(1, k))  # every level feeds the next one
        self._children = np.array([c for cs in children for c in cs], dtype=np.int64)
        self._child_start = np.cumsum([0] + [len(cs) for cs in children]).astype(np.int64)
        self._tint = np.zeros((n, k, _N_TINT), dtype=np.int64)
        self._tint[:, :, _T_START] = _NO_WINDOW
        self._tflt = np.zeros((n, k, _N_TFLT), dtype=np.float64)
        self._akind = np.array(kinds, dtype=np.int64)
        self._athr = np.stack(thresholds, axis=1) if thresholds else np.zeros((n, 0), dtype=np.float64)
        self._aint = np.zeros((n, a, _N_TINT), dtype=np.int64)
        self._aflt = np.zeros((n, a, _N_AFLT), dtype=np.float64)
        self._counters = np.zeros(_N_COUNTERS, dtype=np.int64)
        self._per_trade_max = k + a  # bars one trade can close at most
        self._initial_capacity = max(int(initial_capacity), 2 * (k + a))
        self._alloc_out(self._initial_capacity)
        self._add_trades_fn = None  # compiled entry point, bound after the first call
        self._flush_fn = None  # likewise for flush
        # a zero-symbol book state: same array types as a real one, so the kernel compiles once
        self._no_book = (
            np.zeros((0, 2, 16), dtype=np.float64),
            np.zeros((0, 16), dtype=np.int64),
            np.zeros((0, 2, 1), dtype=np.int64),
            np.zeros((0, 2, 1), dtype=np.float64),
            np.zeros((0, 2), dtype=np.float64),
        )
        self._book_state = self._no_book
        self._depth_n = 1
        self._book: BookManager | None = None
        self.attach_book(book)
        self._dropped_logged = 0
        self._last_drop_log = -math.inf

    def attach_book(self, book: BookManager | None) -> None:
        """Sample microstructure from ``book`` when bars close (``None`` detaches)."""
        if book is not None and book.n_symbols < self.n_symbols:
            raise InputError(f"book holds {book.n_symbols} symbols, bars need {self.n_symbols}")
        self._book = book
        self._depth_n = book.depth_levels if book is not None else 1

    def add_trades(self, trades: np.ndarray) -> BarBatch:
        """Fold a ``TRADE_DTYPE`` batch into every bar; returns the bars that closed, in order."""
        trades = _checked(trades, TRADE_DTYPE, "trades")
        # size the output from the bars-per-trade seen so far, so a big batch rarely regrows it
        seen = self._counters[C_TRADES]
        expected = int(len(trades) * (self._counters[C_BARS] / seen if seen else 0.05) * 1.25) + self._per_trade_max
        if expected > len(self._out_bars):
            self._alloc_out(expected)
        book = self._current_book()
        start = n_out = dropped = 0
        while True:
            args = (trades, start, self._tf_ns, self._parent, self._children, self._child_start, self._tint, self._tflt,
                    self._akind, self._athr, self._aint, self._aflt, self._counters, self._out_bars, self._out_tf,
                    self._out_micro, n_out, book, self._depth_n, self._chain)
            if self._add_trades_fn is not None:
                start, n_out, d = self._add_trades_fn(*args)
            else:
                start, n_out, d = _add_trades(*args)
                self._add_trades_fn = entry_point(_add_trades, args)
            dropped += d
            if start >= len(trades):
                break
            self._alloc_out(2 * len(self._out_bars), keep=n_out)
        if dropped:
            self._log_drops()
        return self._take(n_out)

    def flush(self, now_ns: int) -> BarBatch:
        """Close every time bar whose window ended at or before ``now_ns`` (activity bars stay open)."""
        return self._flush(int(now_ns), False)

    def close_all(self) -> BarBatch:
        """Close every open bar, time and activity (end of stream)."""
        return self._flush(np.iinfo(np.int64).max, True)

    def next_close_ns(self) -> int | None:
        """When the earliest open time bar's window ends (call ``flush`` then), or None if none is open."""
        open_rows = self._tint[:, 0, _T_N] > 0
        if not open_rows.any():
            return None
        return int(self._tint[open_rows, 0, _T_START].min() + self._tf_ns[0])

    def stats(self) -> dict[str, int]:
        return {name: int(self._counters[i]) for i, name in enumerate(COUNTER_NAMES)}

    def __repr__(self) -> str:
        return f"BarAggregator(n_symbols={self.n_symbols}, names={self.names})"

    # --- internals -----------------------------------------------------------------------------

    def _current_book(self) -> tuple[np.ndarray, ...]:
        # re-read every call: the book may have grown its overflow store (new arrays)
        return self._book.state_arrays() if self._book is not None else self._no_book

    def _flush(self, now_ns: int, close_activity: bool) -> BarBatch:
        need = self.n_symbols * (len(self._tf_ns) + len(self._akind))
        if len(self._out_bars) < need:
            self._alloc_out(need)
        args = (
            np.int64(now_ns), close_activity, self._tf_ns, self._children, self._child_start, self._tint, self._tflt,
            self._akind, self._aint, self._aflt,
            self._counters, self._out_bars, self._out_tf, self._out_micro, 0, self._current_book(), self._depth_n,
        )
        if self._flush_fn is None:  # bound on first use, as add_trades is: no type dispatch per flush
            self._flush_fn = entry_point(_flush, args)
        return self._take(self._flush_fn(*args))

    def _alloc_out(self, capacity: int, keep: int = 0) -> None:
        bars = np.zeros(capacity, dtype=BAR_DTYPE)
        tf = np.zeros(capacity, dtype=np.int16)
        micro = np.zeros(capacity, dtype=MICRO_DTYPE)
        if keep:
            bars[:keep] = self._out_bars[:keep]
            tf[:keep] = self._out_tf[:keep]
            micro[:keep] = self._out_micro[:keep]
        self._out_bars, self._out_tf, self._out_micro = bars, tf, micro

    def _take(self, n_out: int) -> BarBatch:
        if n_out == 0:
            return self._no_bars  # most calls close nothing: one shared empty (read-only) batch
        self._counters[C_BARS] += n_out
        if n_out <= _COPY_OUT_LIMIT:
            return BarBatch(
                copy_records(self._out_bars[:n_out]), self._out_tf[:n_out].copy(), copy_records(self._out_micro[:n_out]), self.names
            )
        # a big batch keeps the buffers (no copy of every bar); the next call starts small again
        batch = BarBatch(self._out_bars[:n_out], self._out_tf[:n_out], self._out_micro[:n_out], self.names)
        self._alloc_out(self._initial_capacity)
        return batch

    def _drops(self) -> int:
        return int(sum(self._counters[c] for c in _DROP_COUNTERS))

    def _log_drops(self) -> None:
        now = time.monotonic()
        total = self._drops()
        if now - self._last_drop_log < 5.0 or total == self._dropped_logged:
            return
        self._last_drop_log = now
        self._dropped_logged = total
        reasons = ", ".join(f"{COUNTER_NAMES[c]}={int(self._counters[c])}" for c in _DROP_COUNTERS if self._counters[c])
        log.warning("bars dropped bad trades (totals: %s)", reasons)


__all__ = [
    "BarAggregator",
    "BarBatch",
    "DEFAULT_TIMEFRAMES",
    "MICRO_DTYPE",
    "timeframe_name",
    "timeframe_seconds",
]
