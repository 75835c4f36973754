"""Feature kernels on the CPU: every indicator over a time-major panel, and the streaming state update.

Same function names and signatures as ``gpu_kernels.features``. Panels are ``(bars, symbols)``
float64; the result is one ``(n_features, bars, symbols)`` array whose feature order is
``indicator_steps.WINDOWED_KINDS`` x windows, then ``GLOBAL_KINDS``.

``prange`` spreads blocks of at most ``BLOCK`` symbols over the cores (at least one block per
thread, see ``block_width``); each task walks time, all windows,
with the block's symbols in a few small inner loops, each calling one branch-free lane function of
``indicator_steps`` (scalars in, scalars out) so it vectorises across symbols; the state
(``st[slot, symbol]``, about 47 KiB per window at 256 symbols) stays in L2. The rare window-wide
work (re-seeds, variance rebuilds) runs after the inner loop for the flagged symbols only.
The streaming update calls the same step functions one symbol at a time, so it equals the batch.

Memory traffic and SIMD set the speed (500 x 10,000 bars, 4 windows, on the 2-core CI box): the output
panel is 2.4 GB written once, so it is written with streaming stores (no cache-line fill before
each write) in runs as long as the block allows; inner loops load their inputs unconditionally
(a load behind a condition keeps LLVM from vectorising the loop).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from cpu_fallback.fused import store_fence, stream_store
from cpu_fallback.indicator_steps import (
    G_MACD,
    G_MACD_HIST,
    G_MACD_SIGNAL,
    G_RANGE_BPS,
    GLOBAL_KINDS,
    K_ATR,
    K_BB_LOWER,
    K_BB_MIDDLE,
    K_BB_UPPER,
    K_EMA,
    K_LOGRET,
    K_MOM,
    K_ROC,
    K_RSI,
    K_SMA,
    K_STDDEV,
    K_VOL,
    K_VOLZ,
    K_VWAP,
    M_FAST,
    M_FAST_SUM,
    M_LINE_SUM,
    M_SIGNAL,
    M_SLOW,
    M_SLOW_SUM,
    N_MACD_STATE,
    N_STATE,
    N_WINDOWED_KINDS,
    S_ATR,
    S_EMA,
    S_GAIN,
    S_LAST_VAR_C,
    S_LOSS,
    S_SUM_C,
    S_SUM_PV,
    S_SUM_VOL,
    S_VAR_C,
    S_VAR_R,
    S_VAR_V,
    advance_count,
    atr_lane,
    bar_lane,
    close_window_lane,
    macd_lane,
    macd_step,
    change_lane,
    return_window_lane,
    rsi_lane,
    run_length,
    volume_window_lane,
    window_fixup,
    window_step,
)

__all__ = ["BLOCK", "block_width", "N_MACD_STATE", "N_STATE", "compute_feature_panel", "n_features", "stream_reset", "stream_update"]

BLOCK = 256  # most symbols per task: 2 KiB runs of each output row, state for 4 windows fits in L2
LANE_ALIGN = 8  # block widths are multiples of a cache line of float64 where possible


def block_width(n_symbols: int, n_threads: int) -> int:
    """Symbols per task: as wide as ``BLOCK`` allows (long contiguous output runs are what the memory
    system rewards), but narrow enough that every thread gets a block."""
    n_tasks = max(-(-n_symbols // BLOCK), min(n_threads, -(-n_symbols // LANE_ALIGN)))
    width = -(-n_symbols // n_tasks)
    width = -(-width // LANE_ALIGN) * LANE_ALIGN
    return max(1, min(BLOCK, width))


def n_features(n_windows: int) -> int:
    return N_WINDOWED_KINDS * n_windows + len(GLOBAL_KINDS)


# Inner loops keep their state and outputs in one flat per-task array with rows BLOCK apart: a
# constant stride lets LLVM prove the rows never overlap, which it needs before it will vectorise.
# error_model="numpy" drops Python's division-by-zero checks, whose early exits also block SIMD.
N_BAR_OUT = 7  # bar pass scratch rows: log return, true range, pv, range_bps, macd, signal, hist


@njit(cache=True, parallel=True, error_model="numpy")
def _bar_pass(high, low, close, volume, vwap, has_vwap, macd_fast, macd_slow, macd_signal, n_windows,
              log_close, log_return, true_range, pv, out, width):
    """Per-bar series (log close, log return, true range, price*volume), MACD and range_bps."""
    n_symbols = close.shape[1]
    n_blocks = (n_symbols + width - 1) // width
    for b in prange(n_blocks):
        _bar_task(high, low, close, volume, vwap, has_vwap, macd_fast, macd_slow, macd_signal, n_windows,
                  log_close, log_return, true_range, pv, out, b * width, min(n_symbols, b * width + width))


@njit(cache=True, error_model="numpy")
def _bar_task(high, low, close, volume, vwap, has_vwap, macd_fast, macd_slow, macd_signal, n_windows,
              log_close, log_return, true_range, pv, out, s0, s1):
    """The bar pass for symbols s0..s1 (a serial function: LLVM vectorises it better than a parfor body)."""
    n_bars = close.shape[0]
    g0 = N_WINDOWED_KINDS * n_windows
    if True:
        work = np.zeros((N_MACD_STATE + N_BAR_OUT) * BLOCK)
        n_close = np.zeros(BLOCK, np.int64)
        o = N_MACD_STATE * BLOCK  # first scratch output row
        for t in range(n_bars):
            for s in range(s0, s1):
                log_close[t, s] = math.log(close[t, s])  # libm, like the streaming path
            prev = t - 1 if t > 0 else 0
            first_bar = t == 0
            for s in range(s0, s1):
                i = s - s0
                # unconditional loads, then selects: a conditional load keeps the loop scalar
                loaded_close = close[prev, s]
                loaded_log_close = log_close[prev, s]
                prev_close = np.nan if first_bar else loaded_close
                prev_log_close = np.nan if first_bar else loaded_log_close
                bar_vwap = vwap[t, s] if has_vwap else np.nan
                work[o + i], work[o + BLOCK + i], work[o + 2 * BLOCK + i], work[o + 3 * BLOCK + i] = bar_lane(
                    high[t, s], low[t, s], close[t, s], volume[t, s], bar_vwap, prev_close,
                    log_close[t, s], prev_log_close)
            for s in range(s0, s1):
                i = s - s0
                c = close[t, s]
                n = advance_count(n_close[i], c == c)
                n_close[i] = n
                (work[M_FAST * BLOCK + i], work[M_SLOW * BLOCK + i], work[M_SIGNAL * BLOCK + i],
                 work[M_SLOW_SUM * BLOCK + i], work[M_FAST_SUM * BLOCK + i], work[M_LINE_SUM * BLOCK + i],
                 work[o + 4 * BLOCK + i], work[o + 5 * BLOCK + i], work[o + 6 * BLOCK + i]) = macd_lane(
                    work[M_FAST * BLOCK + i], work[M_SLOW * BLOCK + i], work[M_SIGNAL * BLOCK + i],
                    work[M_SLOW_SUM * BLOCK + i], work[M_FAST_SUM * BLOCK + i], work[M_LINE_SUM * BLOCK + i],
                    n, macd_fast, macd_slow, macd_signal, c)
            # written once, read back (if at all) long after: streaming stores skip the cache fill
            _stream_row(log_return[t], work, o, s0, s1)
            _stream_row(true_range[t], work, o + BLOCK, s0, s1)
            _stream_row(pv[t], work, o + 2 * BLOCK, s0, s1)
            _stream_row(out[g0 + G_RANGE_BPS, t], work, o + 3 * BLOCK, s0, s1)
            _stream_row(out[g0 + G_MACD, t], work, o + 4 * BLOCK, s0, s1)
            _stream_row(out[g0 + G_MACD_SIGNAL, t], work, o + 5 * BLOCK, s0, s1)
            _stream_row(out[g0 + G_MACD_HIST, t], work, o + 6 * BLOCK, s0, s1)
        store_fence()


@njit(cache=True, error_model="numpy", boundscheck=False)
def _stream_row(dest, src, first, s0, s1):
    """``dest[s0:s1] = src[first:first + s1 - s0]`` with streaming stores."""
    for i in range(s1 - s0):
        stream_store(dest, s0 + i, src[first + i])


@njit(cache=True, parallel=True, error_model="numpy")
def _window_pass(high, low, close, volume, log_close, log_return, true_range, pv, windows, out, width):
    """Every windowed feature: one task per block of symbols, all windows inside it."""
    n_symbols = close.shape[1]
    n_blocks = (n_symbols + width - 1) // width
    for b in prange(n_blocks):
        _window_task(high, low, close, volume, log_close, log_return, true_range, pv, windows, out,
                     b * width, min(n_symbols, b * width + width))


@njit(cache=True, error_model="numpy")
def _window_task(high, low, close, volume, log_close, log_return, true_range, pv, windows, out, s0, s1):
    """Every window for symbols s0..s1: per bar, the counters once, then small loops per window."""
    n_bars = close.shape[0]
    nw = windows.shape[0]
    width = s1 - s0
    per_window = N_STATE * BLOCK
    work = np.zeros(nw * per_window)  # state rows, BLOCK apart, window after window
    # outputs of the current window, one row per feature kind; a separate array so LLVM sees that
    # the state and output rows never overlap
    scr = np.zeros(N_WINDOWED_KINDS * BLOCK)
    scratch = scr.reshape((N_WINDOWED_KINDS, 1, BLOCK))
    cnt = np.zeros(5 * BLOCK, np.int64)  # close, high/low/close, return, volume, pv counters
    flags = np.zeros(BLOCK, np.int64)
    for t in range(n_bars):
        prev = t - 1 if t > 0 else 0
        for s in range(s0, s1):
            i = s - s0
            c = close[t, s]
            h = high[t, s]
            lo = low[t, s]
            r = log_return[t, s]
            v = volume[t, s]
            p = pv[t, s]
            cnt[i] = advance_count(cnt[i], c == c)
            cnt[BLOCK + i] = advance_count(cnt[BLOCK + i], (c == c) & (h == h) & (lo == lo))
            cnt[2 * BLOCK + i] = run_length(cnt[2 * BLOCK + i], r == r)
            cnt[3 * BLOCK + i] = run_length(cnt[3 * BLOCK + i], v == v)
            cnt[4 * BLOCK + i] = run_length(cnt[4 * BLOCK + i], p == p)
        for j in range(nw):
            w = windows[j]
            ws = work[j * per_window:(j + 1) * per_window]  # this window's state rows (a view)
            # rows w and w-1 bars back; clamped rows are read but never used (the lanes select them away)
            old = t - w if t >= w else 0
            trail = t - w + 1 if t >= w - 1 else 0
            for s in range(s0, s1):
                i = s - s0
                (ws[S_SUM_C * BLOCK + i], ws[S_EMA * BLOCK + i], ws[S_VAR_C * BLOCK + i],
                 ws[(S_VAR_C + 1) * BLOCK + i], ws[(S_VAR_C + 2) * BLOCK + i],
                 ws[(S_VAR_C + 3) * BLOCK + i], ws[(S_VAR_C + 4) * BLOCK + i],
                 ws[S_LAST_VAR_C * BLOCK + i], scr[K_SMA * BLOCK + i], scr[K_EMA * BLOCK + i],
                 scr[K_STDDEV * BLOCK + i], scr[K_BB_UPPER * BLOCK + i], scr[K_BB_LOWER * BLOCK + i],
                 flags[i]) = close_window_lane(
                    ws[S_SUM_C * BLOCK + i], ws[S_EMA * BLOCK + i], ws[S_VAR_C * BLOCK + i],
                    ws[(S_VAR_C + 1) * BLOCK + i], ws[(S_VAR_C + 2) * BLOCK + i],
                    ws[(S_VAR_C + 3) * BLOCK + i], ws[(S_VAR_C + 4) * BLOCK + i], cnt[i], w,
                    close[t, s], close[old, s], close[trail, s])
            for s in range(s0, s1):
                i = s - s0
                # bar 0's previous close is never read (rsi_lane zeroes n <= 1), and a conditional
                # load would keep this loop scalar
                prev_close = close[prev, s]
                ws[S_GAIN * BLOCK + i], ws[S_LOSS * BLOCK + i], scr[K_RSI * BLOCK + i] = rsi_lane(
                    ws[S_GAIN * BLOCK + i], ws[S_LOSS * BLOCK + i], cnt[i], w, close[t, s], prev_close)
            for s in range(s0, s1):
                i = s - s0
                ws[S_ATR * BLOCK + i], scr[K_ATR * BLOCK + i] = atr_lane(
                    ws[S_ATR * BLOCK + i], cnt[BLOCK + i], w, true_range[t, s])
            for s in range(s0, s1):
                i = s - s0
                scr[K_MOM * BLOCK + i], scr[K_ROC * BLOCK + i], scr[K_LOGRET * BLOCK + i] = change_lane(
                    cnt[i], t + 1, w, close[t, s], close[old, s], log_close[t, s], log_close[old, s])
            for s in range(s0, s1):
                i = s - s0
                (ws[S_VAR_R * BLOCK + i], ws[(S_VAR_R + 1) * BLOCK + i],
                 ws[(S_VAR_R + 2) * BLOCK + i], ws[(S_VAR_R + 3) * BLOCK + i],
                 ws[(S_VAR_R + 4) * BLOCK + i], scr[K_VOL * BLOCK + i], flags_r) = return_window_lane(
                    ws[S_VAR_R * BLOCK + i], ws[(S_VAR_R + 1) * BLOCK + i],
                    ws[(S_VAR_R + 2) * BLOCK + i], ws[(S_VAR_R + 3) * BLOCK + i],
                    ws[(S_VAR_R + 4) * BLOCK + i], cnt[2 * BLOCK + i], w, log_return[t, s],
                    log_return[trail, s])
                flags[i] |= flags_r
            for s in range(s0, s1):
                i = s - s0
                (ws[S_SUM_PV * BLOCK + i], ws[S_SUM_VOL * BLOCK + i], ws[S_VAR_V * BLOCK + i],
                 ws[(S_VAR_V + 1) * BLOCK + i], ws[(S_VAR_V + 2) * BLOCK + i],
                 ws[(S_VAR_V + 3) * BLOCK + i], ws[(S_VAR_V + 4) * BLOCK + i],
                 scr[K_VWAP * BLOCK + i], scr[K_VOLZ * BLOCK + i], flags_v) = volume_window_lane(
                    ws[S_SUM_PV * BLOCK + i], ws[S_SUM_VOL * BLOCK + i], ws[S_VAR_V * BLOCK + i],
                    ws[(S_VAR_V + 1) * BLOCK + i], ws[(S_VAR_V + 2) * BLOCK + i],
                    ws[(S_VAR_V + 3) * BLOCK + i], ws[(S_VAR_V + 4) * BLOCK + i], cnt[4 * BLOCK + i],
                    cnt[3 * BLOCK + i], w, pv[t, s], pv[old, s], volume[t, s], volume[old, s], volume[trail, s])
                flags[i] |= flags_v
            for i in range(width):
                if flags[i] != 0:
                    st = ws.reshape((N_STATE, BLOCK))
                    window_fixup(flags[i], st, i, w, 0, 1, cnt[3 * BLOCK + i], cnt[4 * BLOCK + i],
                                 close, log_return, volume, pv, s0 + i, t, n_bars, scratch, 0, i)
            for kind in range(N_WINDOWED_KINDS):
                row = (K_SMA if kind == K_BB_MIDDLE else kind) * BLOCK  # the middle band is the SMA
                _stream_row(out[kind * nw + j, t], scr, row, s0, s1)
    store_fence()


def compute_feature_panel(high, low, close, volume, vwap, windows, macd, out_dtype, out=None):
    """All features of ``(bars, symbols)`` float64 panels; returns ``(n_features, bars, symbols)``.

    ``vwap`` may be None (the typical price is used); ``windows`` an int64 array of windows >= 2;
    ``macd`` a (fast, slow, signal) triple; ``out_dtype`` float64 or float32 (computed in float64).
    ``out`` may be a preallocated result array to fill (reusing one avoids page faults on big panels).
    """
    n_bars, n_symbols = close.shape
    windows = np.ascontiguousarray(windows, dtype=np.int64)
    shape = (n_features(len(windows)), n_bars, n_symbols)
    if out is None:
        out = np.empty(shape, dtype=out_dtype)
    if n_bars == 0 or n_symbols == 0:
        return out
    log_close = np.empty((n_bars, n_symbols))
    log_return = np.empty((n_bars, n_symbols))
    true_range = np.empty((n_bars, n_symbols))
    pv = np.empty((n_bars, n_symbols))
    has_vwap = vwap is not None
    vwap_panel = vwap if has_vwap else np.empty((1, 1))
    fast, slow, signal = (int(p) for p in macd)
    width = block_width(n_symbols, numba.get_num_threads())
    _bar_pass(high, low, close, volume, vwap_panel, has_vwap, fast, slow, signal, len(windows),
              log_close, log_return, true_range, pv, out, width)
    _window_pass(high, low, close, volume, log_close, log_return, true_range, pv, windows, out, width)
    return out


# ----------------------------------------------------------------------------------------- streaming

C_CLOSE, C_HLC, C_RET, C_VOL, C_PV, C_SEEN = 0, 1, 2, 3, 4, 5
N_COUNTERS = 6
R_CLOSE, R_LOG_CLOSE, R_RETURN, R_VOLUME, R_PV = 0, 1, 2, 3, 4
N_RINGS = 5


@njit(cache=True, error_model="numpy")
def stream_update(symbol_ids, high, low, close, volume, vwap, windows, macd_fast, macd_slow, macd_signal,
                  counters, rings, window_state, macd_state, out):
    """Advance the streaming state by one bar for each ``symbol_ids[k]`` (in order); row k -> ``out[:, 0, k]``.

    ``counters`` (symbols, 6) int64; ``rings`` (5, ring_len, symbols) float64 holding the last bars
    (close, log close, log return, volume, price*volume); ``window_state`` (symbols, N_STATE, windows);
    ``macd_state`` (symbols, N_MACD_STATE, 1).
    """
    ring_len = rings.shape[1]
    nw = windows.shape[0]
    g0 = N_WINDOWED_KINDS * nw
    close_ring = rings[R_CLOSE]
    log_close_ring = rings[R_LOG_CLOSE]
    return_ring = rings[R_RETURN]
    volume_ring = rings[R_VOLUME]
    pv_ring = rings[R_PV]
    for k in range(symbol_ids.shape[0]):
        s = symbol_ids[k]
        m = counters[s, C_SEEN] + 1
        counters[s, C_SEEN] = m
        row = (m - 1) % ring_len
        prev = (row - 1 + ring_len) % ring_len
        c = close[k]
        h = high[k]
        lo = low[k]
        v = volume[k]
        lc = math.log(c)
        prev_close = close_ring[prev, s] if m > 1 else np.nan
        prev_log_close = log_close_ring[prev, s] if m > 1 else np.nan
        r, tr, p, range_bps = bar_lane(h, lo, c, v, vwap[k], prev_close, lc, prev_log_close)
        close_ring[row, s] = c
        log_close_ring[row, s] = lc
        return_ring[row, s] = r
        volume_ring[row, s] = v
        pv_ring[row, s] = p
        n_c = advance_count(counters[s, C_CLOSE], c == c)
        n_hlc = advance_count(counters[s, C_HLC], (c == c) & (h == h) & (lo == lo))
        n_r = run_length(counters[s, C_RET], r == r)
        n_v = run_length(counters[s, C_VOL], v == v)
        n_pv = run_length(counters[s, C_PV], p == p)
        counters[s, C_CLOSE] = n_c
        counters[s, C_HLC] = n_hlc
        counters[s, C_RET] = n_r
        counters[s, C_VOL] = n_v
        counters[s, C_PV] = n_pv
        st = window_state[s]
        for j in range(nw):
            w = windows[j]
            old = (row - w + ring_len) % ring_len
            trail = (row - w + 1 + ring_len) % ring_len
            flags = window_step(
                st, j, w, j, nw, m, n_c, n_hlc, n_r, n_v, n_pv,
                c, close_ring[old, s], close_ring[trail, s], prev_close, tr,
                lc, log_close_ring[old, s], r, return_ring[trail, s],
                v, volume_ring[old, s], volume_ring[trail, s], p, pv_ring[old, s], out, 0, k)
            if flags != 0:
                window_fixup(flags, st, j, w, j, nw, n_v, n_pv,
                             close_ring, return_ring, volume_ring, pv_ring, s, row, ring_len, out, 0, k)
        line, signal, hist = macd_step(macd_state[s], 0, n_c, macd_fast, macd_slow, macd_signal, c)
        out[g0 + G_MACD, 0, k] = line
        out[g0 + G_MACD_SIGNAL, 0, k] = signal
        out[g0 + G_MACD_HIST, 0, k] = hist
        out[g0 + G_RANGE_BPS, 0, k] = range_bps


@njit(cache=True, error_model="numpy")
def stream_reset(symbol_id, counters, rings, window_state, macd_state):
    """Forget everything about one symbol: its next bar is its first."""
    counters[symbol_id, :] = 0
    rings[:, :, symbol_id] = np.nan
    window_state[symbol_id, :, :] = 0.0
    macd_state[symbol_id, :, :] = 0.0
