"""One-bar indicator steps: the single arithmetic shared by batch (CPU and GPU) and streaming features.

Every function here advances the state of one (symbol, window) by one bar. The batch drivers call
them over time-major panels; the streaming driver calls them on ring buffers; the GPU kernels call
the same functions compiled for the device. Sharing the steps is what makes streaming equal batch bit
for bit, so nothing here may use ``fastmath`` (it would let LLVM reassociate one path and not the other).

Window history is read from ``buf[row, col]`` with ``row`` taken modulo ``nrows``: for a batch panel
``nrows`` is the number of bars (no wrap ever happens), for a streaming ring it is the ring length.

Definitions (TA-Lib's, checked against TA-Lib 0.6+/0.8 in the tests):

- ``n`` counts bars since a symbol's first usable input (TA-Lib skips leading NaN); a NaN after that
  start poisons running sums and recurrences exactly as it does inside TA-Lib (SMA, EMA, ATR, MACD stay
  NaN, RSI reads 0, STDDEV recovers at its next rebuild).
- SMA: running sum, ``sum / w``; re-seeded from the window every ``RESEED_EVERY`` bars so long series
  do not drift.
- EMA: seed = SMA of the first ``w`` values, then ``fma(x - ema, k, ema)`` with ``k = 2 / (w + 1)``.
- Variance (STDDEV, Bollinger): population variance from sums of deviations from an anchor, rebuilt by
  a two-pass over the window every ``32 w`` bars or when it collapses below 1e-6 of the largest mean
  squared deviation since the last rebuild (TA-Lib's cancellation-free scheme).
- RSI: Wilder averages of gains and losses seeded with their mean over ``w`` changes; 0 when both are 0.
- ATR: Wilder average of the true range from bar 1, seeded with the mean of the first ``w`` ranges.
- MACD: slow EMA seeded at bar ``slow - 1``; fast EMA seeded at the same bar with the SMA of the last
  ``fast`` values; signal = EMA of the MACD line; all three start at bar ``slow + signal - 2``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cpu_fallback.fused import fma

NAN = np.nan
RESEED_EVERY = 4096  # bars between re-seeds of plain running sums (SMA, VWAP)
REBUILD_WINDOWS = 32  # a variance is rebuilt by a two-pass at least every 32 windows
COLLAPSE_RATIO = 1e-6  # rebuild when the variance falls below this share of the peak mean square
FLOOR_RATIO = 1e-12  # after a rebuild, a variance below this share of the mean square is 0

# per (symbol, window) state slots
S_SUM_C = 0  # running sum of closes (SMA, EMA seed)
S_EMA = 1
S_GAIN = 2
S_LOSS = 3
S_ATR = 4
S_VAR_C = 5  # 5 slots each: anchor, sum of deviations, sum of squared deviations, peak, countdown
S_VAR_R = 10  # one-bar log returns (vol)
S_VAR_V = 15  # volume (volz)
S_SUM_PV = 20  # running sum of price * volume (vwap)
S_SUM_VOL = 21  # running sum of volume (vwap)
N_STATE = 22

# per symbol MACD state slots
M_FAST, M_SLOW, M_SIGNAL, M_SLOW_SUM, M_LINE_SUM = 0, 1, 2, 3, 4
N_MACD_STATE = 5

# windowed feature kinds, in output order; output index = kind * n_windows + window index
K_SMA, K_EMA, K_RSI, K_ATR, K_STDDEV, K_BB_UPPER, K_BB_MIDDLE, K_BB_LOWER = 0, 1, 2, 3, 4, 5, 6, 7
K_MOM, K_ROC, K_LOGRET, K_VOL, K_VWAP, K_VOLZ = 8, 9, 10, 11, 12, 13
N_WINDOWED_KINDS = 14
WINDOWED_KINDS = (
    "sma", "ema", "rsi", "atr", "stddev", "bb_upper", "bb_middle", "bb_lower",
    "mom", "roc", "logret", "vol", "vwap", "volz",
)
# window-free features follow the windowed block
G_MACD, G_MACD_SIGNAL, G_MACD_HIST, G_RANGE_BPS = 0, 1, 2, 3
GLOBAL_KINDS = ("macd", "macd_signal", "macd_hist", "range_bps")
BB_K = 2.0  # Bollinger band width in population standard deviations


@njit(cache=True)
def bar_inputs(high, low, close, volume, bar_vwap, prev_close):
    """Per-bar derived series: (one-bar log return, true range, price * volume, range in bps).

    True range follows TA-Lib's TRANGE comparisons (a NaN previous close leaves high - low).
    The VWAP price is the bar's own vwap when present, else the typical price (h + l + c) / 3.
    """
    log_return = math.log(close / prev_close)
    true_range = high - low
    up = abs(prev_close - high)
    if up > true_range:
        true_range = up
    down = abs(prev_close - low)
    if down > true_range:
        true_range = down
    price = bar_vwap if bar_vwap == bar_vwap else (high + low + close) / 3.0
    return log_return, true_range, price * volume, (high - low) / close * 1e4


@njit(cache=True)
def advance_count(n, started_now):
    """Bars since the start: 0 until the first usable bar, then 1, 2, ... (TA-Lib start rule)."""
    if n > 0 or started_now:
        return n + 1
    return 0


@njit(cache=True)
def run_length(n, usable):
    """Bars since the last unusable (NaN) input: window-local features restart after a gap."""
    return n + 1 if usable else 0


@njit(cache=True)
def window_sum(buf, col, first, count, nrows):
    """Sum of ``count`` consecutive rows from ``first`` (oldest first, starting from 0.0)."""
    total = 0.0
    for j in range(count):
        total += buf[(first + j) % nrows, col]
    return total


@njit(cache=True)
def _deviation_sums(buf, col, first, count, nrows, anchor):
    s1 = 0.0
    s2 = 0.0
    for j in range(count):
        d = buf[(first + j) % nrows, col] - anchor
        s1 += d
        s2 += d * d
    return s1, s2


@njit(cache=True)
def running_sum_step(st, k, n, w, x, x_old, buf, col, row, nrows):
    """Advance a running window sum; returns the sum once the window is full, else NaN."""
    if n == 0:
        return NAN
    if n <= w:
        if n == 1:
            st[k] = 0.0
        st[k] = st[k] + x
    elif n % RESEED_EVERY == 0:
        # fresh sum of the window; `0.0 * old` keeps a NaN-poisoned sum poisoned, as TA-Lib's would be
        st[k] = window_sum(buf, col, (row - w + 1 + nrows) % nrows, w, nrows) + 0.0 * st[k]
    else:
        st[k] = (st[k] - x_old) + x
    if n < w:
        return NAN
    return st[k]


@njit(cache=True)
def ema_step(st, k, n, w, x, seed_sum):
    """EMA with TA-Lib's seed (SMA of the first w values, taken from the running sum at n == w)."""
    if n < w:
        return NAN
    if n == w:
        e = seed_sum / w
    else:
        e = fma(x - st[k], 2.0 / (w + 1), st[k])
    st[k] = e
    return e


@njit(cache=True)
def rsi_step(st, n, w, x, prev):
    """Wilder RSI; 0 when average gain + loss is 0 (flat series) or not a number."""
    if n <= 1:
        st[S_GAIN] = 0.0
        st[S_LOSS] = 0.0
        return NAN
    gain = st[S_GAIN]
    loss = st[S_LOSS]
    change = x - prev
    if n <= w + 1:
        if change < 0.0:
            loss -= change
        else:
            gain += change
        if n < w + 1:
            st[S_GAIN] = gain
            st[S_LOSS] = loss
            return NAN
        loss /= w
        gain /= w
    else:
        loss *= w - 1
        gain *= w - 1
        if change < 0.0:
            loss -= change
        else:
            gain += change
        loss /= w
        gain /= w
    st[S_GAIN] = gain
    st[S_LOSS] = loss
    total = gain + loss
    if total > 0.0:
        return 100.0 * (gain / total)
    return 0.0


@njit(cache=True)
def atr_step(st, n, w, true_range):
    """Wilder ATR over true ranges from the second bar on (bar 0 has no previous close)."""
    if n <= 1:
        st[S_ATR] = 0.0
        return NAN
    if n <= w + 1:
        st[S_ATR] = st[S_ATR] + true_range
        if n < w + 1:
            return NAN
        st[S_ATR] = st[S_ATR] / w
    else:
        st[S_ATR] = ((st[S_ATR] * (w - 1)) + true_range) / w
    return st[S_ATR]


@njit(cache=True)
def moments_step(st, k, n, w, x, x_trail, buf, col, row, nrows):
    """Population variance of the last w values and the current value's deviation from their mean.

    Returns (variance, x - mean), NaN until the window is full. ``x_trail`` is the oldest value of
    the current window, dropped after the output so the sums are ready for the next bar.
    """
    inv = 1.0 / w
    if n == 0:
        return NAN, NAN
    if n < w:
        if n == 1:
            st[k] = x
            st[k + 1] = 0.0
            st[k + 2] = 0.0
        d = x - st[k]
        st[k + 1] += d
        st[k + 2] += d * d
        if n == w - 1:
            st[k + 3] = st[k + 2]
            st[k + 4] = REBUILD_WINDOWS * w
        return NAN, NAN
    if w == 1:  # pragma: no cover - windows are validated >= 2
        return 0.0, 0.0
    anchor = st[k]
    s1 = st[k + 1]
    s2 = st[k + 2]
    peak = st[k + 3]
    d = x - anchor
    s1 += d
    s2 += d * d
    peak = s2 if s2 > peak else peak
    mean = s1 * inv
    var = s2 * inv - mean * mean
    dev = d - mean
    d = x_trail - anchor
    s1 -= d
    s2 -= d * d
    countdown = st[k + 4] - 1.0
    if var < COLLAPSE_RATIO * (peak * inv) or countdown <= 0.0:
        # the running sums carry rounding that scales with the largest values they held: start over
        countdown = REBUILD_WINDOWS * w
        first = (row - w + 1 + nrows) % nrows
        anchor = window_sum(buf, col, first, w, nrows) * inv
        s1, s2 = _deviation_sums(buf, col, first, w, nrows, anchor)
        mean = s1 * inv
        var = s2 * inv - mean * mean
        if var < COLLAPSE_RATIO * (s2 * inv):
            # a window flat to the rounding of its mean: anchor on one of its own values instead
            anchor = x
            s1, s2 = _deviation_sums(buf, col, first, w, nrows, anchor)
            mean = s1 * inv
            var = s2 * inv - mean * mean
        peak = s2
        if var < FLOOR_RATIO * (s2 * inv):
            var = 0.0
        dev = (x - anchor) - mean
        d = x_trail - anchor
        s1 -= d
        s2 -= d * d
    st[k] = anchor
    st[k + 1] = s1
    st[k + 2] = s2
    st[k + 3] = peak
    st[k + 4] = countdown
    return var, dev


@njit(cache=True)
def window_features(st, j, nw, w, n_c, n_hlc, n_r, n_v, n_pv, m,
                    close, prev_close, true_range, log_return, volume, pv,
                    cbuf, rbuf, vbuf, pvbuf, col, row, nrows, out, orow, ocol):
    """Every windowed feature of one (symbol, window) for one bar, written to ``out[kind*nw + j, orow, ocol]``.

    ``n_*`` are the bar counters of the symbol after this bar (TA-Lib start counts for close and
    high/low/close, run lengths for the window-local series), ``m`` the number of bars seen in all.
    """
    nan = NAN
    row_old = (row - w + nrows) % nrows  # the bar w back (valid only when m > w)
    row_trail = (row - w + 1 + nrows) % nrows  # oldest bar of the current window

    # SMA, EMA, STDDEV, Bollinger bands (close, TA-Lib start)
    close_old = cbuf[row_old, col] if n_c > w else nan
    total = running_sum_step(st, S_SUM_C, n_c, w, close, close_old, cbuf, col, row, nrows)
    sma = total / w
    out[K_SMA * nw + j, orow, ocol] = sma
    out[K_EMA * nw + j, orow, ocol] = ema_step(st, S_EMA, n_c, w, close, st[S_SUM_C])
    close_trail = cbuf[row_trail, col] if n_c >= w else nan
    var, _ = moments_step(st, S_VAR_C, n_c, w, close, close_trail, cbuf, col, row, nrows)
    sd = math.sqrt(var) if var == var else nan
    out[K_STDDEV * nw + j, orow, ocol] = sd
    out[K_BB_UPPER * nw + j, orow, ocol] = sma + BB_K * sd
    out[K_BB_MIDDLE * nw + j, orow, ocol] = sma
    out[K_BB_LOWER * nw + j, orow, ocol] = sma - BB_K * sd

    out[K_RSI * nw + j, orow, ocol] = rsi_step(st, n_c, w, close, prev_close)
    out[K_ATR * nw + j, orow, ocol] = atr_step(st, n_hlc, w, true_range)

    # MOM and ROC (TA-Lib start), log return (any w bars back)
    if n_c > w:
        out[K_MOM * nw + j, orow, ocol] = close - close_old
        out[K_ROC * nw + j, orow, ocol] = ((close / close_old) - 1.0) * 100.0 if close_old != 0.0 else 0.0
    else:
        out[K_MOM * nw + j, orow, ocol] = nan
        out[K_ROC * nw + j, orow, ocol] = nan
    out[K_LOGRET * nw + j, orow, ocol] = math.log(close / cbuf[row_old, col]) if m > w else nan

    # realised volatility: population sigma of the last w one-bar log returns
    r_trail = rbuf[row_trail, col] if n_r >= w else nan
    var_r, _ = moments_step(st, S_VAR_R, n_r, w, log_return, r_trail, rbuf, col, row, nrows)
    out[K_VOL * nw + j, orow, ocol] = math.sqrt(var_r) if n_r >= w else nan

    # rolling VWAP: sum(price * volume) / sum(volume) over the last w bars
    pv_old = pvbuf[row_old, col] if n_pv > w else nan
    vol_old = vbuf[row_old, col] if n_pv > w else nan
    pv_total = running_sum_step(st, S_SUM_PV, n_pv, w, pv, pv_old, pvbuf, col, row, nrows)
    vol_total = running_sum_step(st, S_SUM_VOL, n_pv, w, volume, vol_old, vbuf, col, row, nrows)
    out[K_VWAP * nw + j, orow, ocol] = pv_total / vol_total if (n_pv >= w and vol_total > 0.0) else nan

    # volume z-score against the last w volumes (population sigma); 0 when they are all equal
    v_trail = vbuf[row_trail, col] if n_v >= w else nan
    var_v, dev_v = moments_step(st, S_VAR_V, n_v, w, volume, v_trail, vbuf, col, row, nrows)
    if n_v < w:
        out[K_VOLZ * nw + j, orow, ocol] = nan
    elif var_v > 0.0:
        out[K_VOLZ * nw + j, orow, ocol] = dev_v / math.sqrt(var_v)
    else:
        out[K_VOLZ * nw + j, orow, ocol] = 0.0


@njit(cache=True)
def macd_step(ms, n, fast, slow, signal, x, cbuf, col, row, nrows):
    """MACD line, signal and histogram for one bar (TA-Lib's aligned seeds); NaN inside the lookback."""
    nan = NAN
    if n == 0:
        return nan, nan, nan
    if n == 1:
        ms[M_SLOW_SUM] = 0.0
        ms[M_LINE_SUM] = 0.0
    if n < slow:
        ms[M_SLOW_SUM] = ms[M_SLOW_SUM] + x
        return nan, nan, nan
    if n == slow:
        ms[M_SLOW_SUM] = ms[M_SLOW_SUM] + x
        ms[M_SLOW] = ms[M_SLOW_SUM] / slow
        ms[M_FAST] = window_sum(cbuf, col, (row - fast + 1 + nrows) % nrows, fast, nrows) / fast
    else:
        ms[M_SLOW] = fma(x - ms[M_SLOW], 2.0 / (slow + 1), ms[M_SLOW])
        ms[M_FAST] = fma(x - ms[M_FAST], 2.0 / (fast + 1), ms[M_FAST])
    line = ms[M_FAST] - ms[M_SLOW]
    k = n - slow + 1  # MACD line values so far
    if k <= signal:
        ms[M_LINE_SUM] = ms[M_LINE_SUM] + line
        if k < signal:
            return nan, nan, nan
        ms[M_SIGNAL] = ms[M_LINE_SUM] / signal
    else:
        ms[M_SIGNAL] = fma(line - ms[M_SIGNAL], 2.0 / (signal + 1), ms[M_SIGNAL])
    return line, ms[M_SIGNAL], line - ms[M_SIGNAL]
