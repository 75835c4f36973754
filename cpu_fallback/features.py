"""Feature kernels on the CPU: every indicator over a time-major panel, and the streaming state update.

Same function names and signatures as ``gpu_kernels.features``. Panels are ``(bars, symbols)``
float64; the result is one ``(n_features, bars, symbols)`` array whose feature order is
``indicator_steps.WINDOWED_KINDS`` x windows, then ``GLOBAL_KINDS``.

Work is split into blocks of ``BLOCK`` neighbouring symbols (one or two cache lines of a panel row):
``prange`` spreads (block, window) tasks over the cores and each task walks time with its symbols in
the inner loop, so the state it touches stays in L1. The per-bar arithmetic is ``indicator_steps``,
the same functions the streaming update below calls, so a stream equals the batch bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from cpu_fallback.indicator_steps import (
    G_MACD,
    G_MACD_HIST,
    G_MACD_SIGNAL,
    G_RANGE_BPS,
    GLOBAL_KINDS,
    N_MACD_STATE,
    N_STATE,
    N_WINDOWED_KINDS,
    advance_count,
    bar_inputs,
    macd_step,
    run_length,
    window_features,
)

BLOCK = 16  # symbols per task: 128 bytes of a float64 panel row


def n_features(n_windows: int) -> int:
    return N_WINDOWED_KINDS * n_windows + len(GLOBAL_KINDS)


@njit(cache=True, parallel=True)
def _bar_pass(high, low, close, volume, vwap, has_vwap, macd_fast, macd_slow, macd_signal, n_windows,
              log_return, true_range, pv, out):
    """Per-bar series (log return, true range, price*volume), MACD and range_bps for every symbol."""
    n_bars, n_symbols = close.shape
    n_blocks = (n_symbols + BLOCK - 1) // BLOCK
    g0 = N_WINDOWED_KINDS * n_windows
    for b in prange(n_blocks):
        s0 = b * BLOCK
        s1 = min(n_symbols, s0 + BLOCK)
        macd_state = np.zeros((s1 - s0, N_MACD_STATE))
        n_close = np.zeros(s1 - s0, np.int64)
        for t in range(n_bars):
            for s in range(s0, s1):
                i = s - s0
                c = close[t, s]
                prev_close = close[t - 1, s] if t > 0 else np.nan
                bar_vwap = vwap[t, s] if has_vwap else np.nan
                r, tr, p, range_bps = bar_inputs(high[t, s], low[t, s], c, volume[t, s], bar_vwap, prev_close)
                log_return[t, s] = r
                true_range[t, s] = tr
                pv[t, s] = p
                n_close[i] = advance_count(n_close[i], c == c)
                line, signal, hist = macd_step(macd_state[i], n_close[i], macd_fast, macd_slow, macd_signal,
                                               c, close, s, t, n_bars)
                out[g0 + G_MACD, t, s] = line
                out[g0 + G_MACD_SIGNAL, t, s] = signal
                out[g0 + G_MACD_HIST, t, s] = hist
                out[g0 + G_RANGE_BPS, t, s] = range_bps


@njit(cache=True, parallel=True)
def _window_pass(high, low, close, volume, log_return, true_range, pv, windows, out):
    """Every windowed feature: one task per (symbol block, window)."""
    n_bars, n_symbols = close.shape
    nw = windows.shape[0]
    n_blocks = (n_symbols + BLOCK - 1) // BLOCK
    for task in prange(n_blocks * nw):
        b = task // nw
        j = task % nw
        w = windows[j]
        s0 = b * BLOCK
        s1 = min(n_symbols, s0 + BLOCK)
        width = s1 - s0
        state = np.zeros((width, N_STATE))
        n_c = np.zeros(width, np.int64)
        n_hlc = np.zeros(width, np.int64)
        n_r = np.zeros(width, np.int64)
        n_v = np.zeros(width, np.int64)
        n_pv = np.zeros(width, np.int64)
        for t in range(n_bars):
            for s in range(s0, s1):
                i = s - s0
                c = close[t, s]
                h = high[t, s]
                lo = low[t, s]
                r = log_return[t, s]
                v = volume[t, s]
                p = pv[t, s]
                n_c[i] = advance_count(n_c[i], c == c)
                n_hlc[i] = advance_count(n_hlc[i], c == c and h == h and lo == lo)
                n_r[i] = run_length(n_r[i], r == r)
                n_v[i] = run_length(n_v[i], v == v)
                n_pv[i] = run_length(n_pv[i], p == p)
                prev_close = close[t - 1, s] if t > 0 else np.nan
                window_features(state[i], j, nw, w, n_c[i], n_hlc[i], n_r[i], n_v[i], n_pv[i], t + 1,
                                c, prev_close, true_range[t, s], r, v, p,
                                close, log_return, volume, pv, s, t, n_bars, out, t, s)


def compute_feature_panel(high, low, close, volume, vwap, windows, macd, out_dtype):
    """All features of ``(bars, symbols)`` float64 panels; returns ``(n_features, bars, symbols)``.

    ``vwap`` may be None (the typical price is used); ``windows`` an int64 array of windows >= 2;
    ``macd`` a (fast, slow, signal) triple; ``out_dtype`` float64 or float32 (computed in float64).
    """
    n_bars, n_symbols = close.shape
    windows = np.ascontiguousarray(windows, dtype=np.int64)
    out = np.empty((n_features(len(windows)), n_bars, n_symbols), dtype=out_dtype)
    if n_bars == 0 or n_symbols == 0:
        return out
    log_return = np.empty((n_bars, n_symbols))
    true_range = np.empty((n_bars, n_symbols))
    pv = np.empty((n_bars, n_symbols))
    has_vwap = vwap is not None
    vwap_panel = vwap if has_vwap else np.empty((1, 1))
    fast, slow, signal = (int(p) for p in macd)
    _bar_pass(high, low, close, volume, vwap_panel, has_vwap, fast, slow, signal, len(windows),
              log_return, true_range, pv, out)
    _window_pass(high, low, close, volume, log_return, true_range, pv, windows, out)
    return out


# ----------------------------------------------------------------------------------------- streaming

N_STATE = N_STATE  # re-exported for the streaming state layout
N_MACD_STATE = N_MACD_STATE

C_CLOSE, C_HLC, C_RET, C_VOL, C_PV, C_SEEN = 0, 1, 2, 3, 4, 5
N_COUNTERS = 6


@njit(cache=True)
def stream_update(symbol_ids, high, low, close, volume, vwap, windows, macd_fast, macd_slow, macd_signal,
                  counters, close_ring, return_ring, volume_ring, pv_ring, window_state, macd_state, out):
    """Advance the streaming state by one bar for each ``symbol_ids[k]`` (in order); row k -> ``out[:, 0, k]``.

    ``counters`` (symbols, 6) int64; rings (ring_len, symbols) float64 holding the last bars;
    ``window_state`` (symbols, windows, N_STATE); ``macd_state`` (symbols, N_MACD_STATE).
    """
    ring_len = close_ring.shape[0]
    nw = windows.shape[0]
    g0 = N_WINDOWED_KINDS * nw
    for k in range(symbol_ids.shape[0]):
        s = symbol_ids[k]
        m = counters[s, C_SEEN] + 1
        counters[s, C_SEEN] = m
        row = (m - 1) % ring_len
        prev_close = close_ring[(row - 1 + ring_len) % ring_len, s] if m > 1 else np.nan
        c = close[k]
        h = high[k]
        lo = low[k]
        v = volume[k]
        r, tr, p, range_bps = bar_inputs(h, lo, c, v, vwap[k], prev_close)
        close_ring[row, s] = c
        return_ring[row, s] = r
        volume_ring[row, s] = v
        pv_ring[row, s] = p
        n_c = advance_count(counters[s, C_CLOSE], c == c)
        n_hlc = advance_count(counters[s, C_HLC], c == c and h == h and lo == lo)
        n_r = run_length(counters[s, C_RET], r == r)
        n_v = run_length(counters[s, C_VOL], v == v)
        n_pv = run_length(counters[s, C_PV], p == p)
        counters[s, C_CLOSE] = n_c
        counters[s, C_HLC] = n_hlc
        counters[s, C_RET] = n_r
        counters[s, C_VOL] = n_v
        counters[s, C_PV] = n_pv
        for j in range(nw):
            window_features(window_state[s, j], j, nw, windows[j], n_c, n_hlc, n_r, n_v, n_pv, m,
                            c, prev_close, tr, r, v, p,
                            close_ring, return_ring, volume_ring, pv_ring, s, row, ring_len, out, 0, k)
        line, signal, hist = macd_step(macd_state[s], n_c, macd_fast, macd_slow, macd_signal,
                                       c, close_ring, s, row, ring_len)
        out[g0 + G_MACD, 0, k] = line
        out[g0 + G_MACD_SIGNAL, 0, k] = signal
        out[g0 + G_MACD_HIST, 0, k] = hist
        out[g0 + G_RANGE_BPS, 0, k] = range_bps


@njit(cache=True)
def stream_reset(symbol_id, counters, close_ring, return_ring, volume_ring, pv_ring, window_state, macd_state):
    """Forget everything about one symbol: its next bar is its first."""
    counters[symbol_id, :] = 0
    close_ring[:, symbol_id] = np.nan
    return_ring[:, symbol_id] = np.nan
    volume_ring[:, symbol_id] = np.nan
    pv_ring[:, symbol_id] = np.nan
    window_state[symbol_id, :, :] = 0.0
    macd_state[symbol_id, :] = 0.0
