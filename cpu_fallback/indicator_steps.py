"""One-bar indicator steps: the single arithmetic shared by batch (CPU and GPU) and streaming features.

Each ``*_lane`` function advances one (symbol, window) by one bar: scalars in, scalars out, no branches
that depend on data (selects only), so the batch CPU loop over a block of symbols vectorises with
SIMD. Rare work that needs the whole window (re-seeding a running sum, rebuilding a variance) is
flagged by the lanes and done by ``window_fixup``. The batch drivers (``cpu_fallback.features``,
``gpu_kernels.features``) and the streaming update call these same functions in the same order, which
is why a stream equals the batch bit for bit. Nothing here may use ``fastmath``.

State lives in 2-D arrays ``st[slot, lane]``: a lane is a symbol in a batch block, a window in a
symbol's streaming state. Window history is read from ``buf[row % nrows, col]``: a batch panel
(``nrows`` = bars, no wrap) or a streaming ring buffer.

Definitions (TA-Lib's, checked against the installed TA-Lib in the tests):

- ``n`` counts bars since a symbol's first usable input (TA-Lib skips leading NaN). A NaN after that
  start poisons running sums and recurrences exactly as inside TA-Lib: SMA, EMA, ATR and MACD stay
  NaN, RSI reads 0, STDDEV recovers at its next rebuild.
- SMA: running sum / w; re-seeded from the window every ``RESEED_EVERY`` bars so long series do not drift.
- EMA: seed = SMA of the first w values, then ``fma(x - ema, k, ema)``, ``k = 2 / (w + 1)``.
- Variance (STDDEV, Bollinger, vol, volz): population variance from sums of deviations from an
  anchor, rebuilt by a two-pass over the window at least every 32 windows or when it falls below 1e-6
  of the largest mean squared deviation since the last rebuild (TA-Lib's cancellation-free scheme).
- RSI: Wilder averages of gains and losses seeded with their mean over w changes; 0 when both are 0.
- ATR: Wilder average of the true range from the second bar, seeded with the mean of w ranges.
- MACD: both EMAs seeded at bar ``slow - 1`` (the fast one with the SMA of the last ``fast`` values),
  signal = EMA of the MACD line; all three start at bar ``slow + signal - 2``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cpu_fallback.fused import fma, sqrt

NAN = np.nan
RESEED_EVERY = 4096  # bars between re-seeds of plain running sums (a power of two: a mask, not a division)
REBUILD_WINDOWS = 32.0  # a variance is rebuilt by a two-pass at least every 32 windows
COLLAPSE_RATIO = 1e-6  # rebuild when the variance falls below this share of the peak mean square
FLOOR_RATIO = 1e-12  # after a rebuild, a variance below this share of the mean square is 0
BB_K = 2.0  # Bollinger band half-width in population standard deviations

# per (symbol, window) state slots
S_SUM_C = 0  # running sum of closes (SMA, EMA seed)
S_EMA = 1
S_GAIN = 2
S_LOSS = 3
S_ATR = 4
S_VAR_C = 5  # 5 slots per variance: anchor, sum of deviations, sum of squares, peak, countdown
S_VAR_R = 10  # one-bar log returns (vol)
S_VAR_V = 15  # volumes (volz)
S_SUM_PV = 20  # running sum of price * volume (vwap)
S_SUM_VOL = 21  # running sum of volume (vwap)
S_LAST_VAR_C = 22  # this bar's close variance, for a fix-up that re-seeds only the sum
N_STATE = 23

# per symbol MACD state slots
M_FAST, M_SLOW, M_SIGNAL, M_SLOW_SUM, M_FAST_SUM, M_LINE_SUM = 0, 1, 2, 3, 4, 5
N_MACD_STATE = 6

# fix-up flags returned by the window lanes
FIX_SUM_C, FIX_VAR_C, FIX_VAR_R, FIX_VAR_V, FIX_VWAP = 1, 2, 4, 8, 16

# windowed feature kinds in output order; output index = kind * n_windows + window index
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


# ------------------------------------------------------------------------------------------- per bar


@njit(cache=True, error_model="numpy")
def bar_lane(high, low, close, volume, bar_vwap, prev_close, log_close, prev_log_close):
    """Per-bar series: (one-bar log return, true range, price * volume, high-low range in bps).

    The log return is ln(close) - ln(prev close) from the logs the caller took once per bar. True
    range uses TA-Lib's TRANGE comparisons (a NaN previous close leaves high - low). The VWAP price is
    the bar's own vwap when present, else the typical price (high + low + close) / 3.
    """
    true_range = high - low
    up = abs(prev_close - high)
    true_range = up if up > true_range else true_range
    down = abs(prev_close - low)
    true_range = down if down > true_range else true_range
    price = bar_vwap if bar_vwap == bar_vwap else (high + low + close) / 3.0
    return log_close - prev_log_close, true_range, price * volume, (high - low) / close * 1e4


@njit(cache=True, error_model="numpy")
def advance_count(n, usable):
    """Bars since the start: 0 until the first usable bar, then 1, 2, ... (TA-Lib skips leading NaN)."""
    return n + 1 if (n > 0) | usable else 0


@njit(cache=True, error_model="numpy")
def run_length(n, usable):
    """Bars since the last unusable (NaN) input: window-local features restart after a gap."""
    return n + 1 if usable else 0


# ------------------------------------------------------------------------------------ window pieces


@njit(cache=True, error_model="numpy")
def sum_lane(total, n, w, x, x_old):
    """Running window sum in TA-Lib's order (drop the old value, then add the new); (new total, output)."""
    grown = (0.0 if n == 1 else total) + x
    slid = (total - x_old) + x
    new = grown if n <= w else slid
    return new, (new if n >= w else NAN)


@njit(cache=True, error_model="numpy")
def reseed_due(n, w):
    return (n > w) & ((n & (RESEED_EVERY - 1)) == 0)


@njit(cache=True, error_model="numpy")
def ema_lane(ema, n, w, x, seed_sum):
    """EMA seeded with the SMA of the first w values (the running sum at n == w); (new ema, output)."""
    stepped = fma(x - ema, 2.0 / (w + 1), ema)
    new = seed_sum / w if n == w else stepped
    new = ema if n < w else new
    return new, (new if n >= w else NAN)


@njit(cache=True, error_model="numpy")
def rsi_lane(gain, loss, n, w, x, prev):
    """Wilder RSI; (gain, loss, output). Changes are summed for w bars, then averaged and smoothed."""
    change = x - prev
    seeding = n <= w + 1
    g = gain if seeding else gain * (w - 1)
    lo = loss if seeding else loss * (w - 1)
    falling = change < 0.0
    g = g if falling else g + change
    lo = lo - change if falling else lo
    averaged = n >= w + 1
    g = g / w if averaged else g
    lo = lo / w if averaged else lo
    g = 0.0 if n <= 1 else g
    lo = 0.0 if n <= 1 else lo
    total = g + lo
    rsi = 100.0 * (g / total) if total > 0.0 else 0.0
    return g, lo, (rsi if averaged else NAN)


@njit(cache=True, error_model="numpy")
def atr_lane(atr, n, w, true_range):
    """Wilder ATR over true ranges from the second bar on; (new atr, output)."""
    averaged = n >= w + 1
    base = atr * (w - 1) if n > w + 1 else atr
    acc = base + true_range
    new = acc / w if averaged else acc
    new = 0.0 if n <= 1 else new
    return new, (new if averaged else NAN)


@njit(cache=True, error_model="numpy")
def moments_lane(anchor, s1, s2, peak, countdown, n, w, x, x_trail):
    """Population variance of the last w values and x's deviation from their mean, on running sums.

    Returns (anchor, s1, s2, peak, countdown, variance, deviation, rebuild): the output pair is NaN
    until the window is full; ``x_trail`` (the window's oldest value) is dropped after the output;
    ``rebuild`` asks for ``moments_rebuild`` on this bar.
    """
    inv = 1.0 / w
    first = n == 1
    a = x if first else anchor
    d = x - a
    t1 = (0.0 if first else s1) + d
    t2 = (0.0 if first else s2) + d * d
    full = n >= w
    pk = t2 if t2 > peak else peak
    mean = t1 * inv
    var = t2 * inv - mean * mean
    dev = d - mean
    dt = x_trail - a
    cd = countdown - 1.0
    rebuild = full & ((var < COLLAPSE_RATIO * (pk * inv)) | (cd <= 0.0))
    init_end = n == w - 1
    new_s1 = t1 - dt if full else t1
    new_s2 = t2 - dt * dt if full else t2
    new_peak = pk if full else (t2 if init_end else peak)
    new_cd = cd if full else (REBUILD_WINDOWS * w if init_end else countdown)
    return a, new_s1, new_s2, new_peak, new_cd, (var if full else NAN), (dev if full else NAN), rebuild


@njit(cache=True, error_model="numpy")
def window_sum(buf, col, first, count, nrows):
    """Sum of ``count`` consecutive rows from ``first``, oldest first, starting from 0.0."""
    total = 0.0
    for j in range(count):
        total += buf[(first + j) % nrows, col]
    return total


@njit(cache=True, error_model="numpy")
def _deviation_sums(buf, col, first, count, nrows, anchor):
    s1 = 0.0
    s2 = 0.0
    for j in range(count):
        d = buf[(first + j) % nrows, col] - anchor
        s1 += d
        s2 += d * d
    return s1, s2


@njit(cache=True, error_model="numpy")
def moments_rebuild(buf, col, first, w, nrows, x, x_trail):
    """Fresh two-pass sums for the window starting at row ``first``; same outputs as ``moments_lane``."""
    inv = 1.0 / w
    anchor = window_sum(buf, col, first, w, nrows) * inv
    s1, s2 = _deviation_sums(buf, col, first, w, nrows, anchor)
    mean = s1 * inv
    var = s2 * inv - mean * mean
    if var < COLLAPSE_RATIO * (s2 * inv):
        # flat to the rounding of its mean: anchored on one of its own values the variance is exact
        anchor = x
        s1, s2 = _deviation_sums(buf, col, first, w, nrows, anchor)
        mean = s1 * inv
        var = s2 * inv - mean * mean
    peak = s2
    if var < FLOOR_RATIO * (s2 * inv):
        var = 0.0
    dev = (x - anchor) - mean
    d = x_trail - anchor
    return anchor, s1 - d, s2 - d * d, peak, REBUILD_WINDOWS * w, var, dev


@njit(cache=True, error_model="numpy")
def volz_value(n, w, var, dev):
    z = dev / sqrt(var) if var > 0.0 else 0.0
    return z if n >= w else NAN


@njit(cache=True, error_model="numpy")
def vwap_value(n, w, pv_total, vol_total):
    return pv_total / vol_total if (n >= w) & (vol_total > 0.0) else NAN


# ------------------------------------------------------------------------------ window lane groups
# Four pure functions (scalars in, scalars out) cover every windowed feature. The batch CPU driver
# calls each in its own loop over a block of symbols (small loops with few arrays vectorise);
# ``window_step`` calls them in the same order for one lane held in a state array.


@njit(cache=True, error_model="numpy")
def close_window_lane(sum_c, ema, a, s1, s2, pk, cd, n, w, x, x_old, x_trail):
    """SMA, EMA, STDDEV and Bollinger bands of the closes.

    Returns the new state (sum, ema, 5 variance slots), this bar's variance, the outputs
    (sma, ema, stddev, upper, lower) and the fix-up flags.
    """
    total, window_total = sum_lane(sum_c, n, w, x, x_old)
    ema, ema_out = ema_lane(ema, n, w, x, total)
    a, s1, s2, pk, cd, var, _, rebuild = moments_lane(a, s1, s2, pk, cd, n, w, x, x_trail)
    sma = window_total / w
    sd = sqrt(var)
    flags = (FIX_SUM_C if reseed_due(n, w) else 0) | (FIX_VAR_C if rebuild else 0)
    return total, ema, a, s1, s2, pk, cd, var, sma, ema_out, sd, sma + BB_K * sd, sma - BB_K * sd, flags


@njit(cache=True, error_model="numpy")
def wilder_lane(gain, loss, atr, n_c, n_hlc, w, x, prev, true_range):
    """RSI and ATR; (gain, loss, atr, rsi, atr output). The CPU batch calls the two lanes in separate loops."""
    gain, loss, rsi = rsi_lane(gain, loss, n_c, w, x, prev)
    atr, atr_out = atr_lane(atr, n_hlc, w, true_range)
    return gain, loss, atr, rsi, atr_out


@njit(cache=True, error_model="numpy")
def change_lane(n_c, m, w, x, x_old, log_close, log_close_old):
    """MOM and ROC (TA-Lib start) and the log return over w bars; (mom, roc, logret)."""
    stepped = n_c > w
    roc = ((x / x_old) - 1.0) * 100.0 if x_old != 0.0 else 0.0
    return ((x - x_old if stepped else NAN), (roc if stepped else NAN),
            (log_close - log_close_old if m > w else NAN))


@njit(cache=True, error_model="numpy")
def momentum_lane(gain, loss, atr, n_c, n_hlc, m, w, x, prev, x_old, true_range, log_close, log_close_old):
    """RSI, ATR, MOM, ROC and log return; (gain, loss, atr, rsi, atr, mom, roc, logret)."""
    gain, loss, atr, rsi, atr_out = wilder_lane(gain, loss, atr, n_c, n_hlc, w, x, prev, true_range)
    mom, roc, logret = change_lane(n_c, m, w, x, x_old, log_close, log_close_old)
    return gain, loss, atr, rsi, atr_out, mom, roc, logret


@njit(cache=True, error_model="numpy")
def return_window_lane(a, s1, s2, pk, cd, n, w, r, r_trail):
    """Realised volatility; (5 variance slots, vol, flags)."""
    a, s1, s2, pk, cd, var, _, rebuild = moments_lane(a, s1, s2, pk, cd, n, w, r, r_trail)
    return a, s1, s2, pk, cd, sqrt(var), (FIX_VAR_R if rebuild else 0)


@njit(cache=True, error_model="numpy")
def volume_window_lane(spv, svol, a, s1, s2, pk, cd, n_pv, n_v, w, pv, pv_old, v, v_old, v_trail):
    """Rolling VWAP and volume z-score; (pv sum, volume sum, 5 variance slots, vwap, volz, flags)."""
    spv, _ = sum_lane(spv, n_pv, w, pv, pv_old)
    svol, _ = sum_lane(svol, n_pv, w, v, v_old)
    a, s1, s2, pk, cd, var, dev, rebuild = moments_lane(a, s1, s2, pk, cd, n_v, w, v, v_trail)
    flags = (FIX_VAR_V if rebuild else 0) | (FIX_VWAP if reseed_due(n_pv, w) else 0)
    return spv, svol, a, s1, s2, pk, cd, vwap_value(n_pv, w, spv, svol), volz_value(n_v, w, var, dev), flags


@njit(cache=True, error_model="numpy")
def window_step(st, i, w, j, nw, m, n_c, n_hlc, n_r, n_v, n_pv,
                close, close_old, close_trail, prev_close, true_range,
                log_close, log_close_old, log_return, return_trail,
                volume, volume_old, volume_trail, pv, pv_old, out, orow, ocol):
    """Every windowed feature of lane ``i`` of ``st[slot, lane]`` for one bar (window w, index j of nw).

    Writes ``out[kind * nw + j, orow, ocol]`` and returns the ``FIX_*`` flags ``window_fixup`` must
    finish. Counters (``n_*``) are after this bar; ``m`` is the number of bars seen in all. Values
    "old" are w bars back, "trail" w - 1 bars back; they only count where they exist.
    """
    (st[S_SUM_C, i], st[S_EMA, i], st[S_VAR_C, i], st[S_VAR_C + 1, i], st[S_VAR_C + 2, i], st[S_VAR_C + 3, i],
     st[S_VAR_C + 4, i], st[S_LAST_VAR_C, i], sma, ema, sd, upper, lower, flags_c) = close_window_lane(
        st[S_SUM_C, i], st[S_EMA, i], st[S_VAR_C, i], st[S_VAR_C + 1, i], st[S_VAR_C + 2, i],
        st[S_VAR_C + 3, i], st[S_VAR_C + 4, i], n_c, w, close, close_old, close_trail)
    out[K_SMA * nw + j, orow, ocol] = sma
    out[K_EMA * nw + j, orow, ocol] = ema
    out[K_STDDEV * nw + j, orow, ocol] = sd
    out[K_BB_UPPER * nw + j, orow, ocol] = upper
    out[K_BB_MIDDLE * nw + j, orow, ocol] = sma
    out[K_BB_LOWER * nw + j, orow, ocol] = lower

    st[S_GAIN, i], st[S_LOSS, i], st[S_ATR, i], rsi, atr, mom, roc, logret = momentum_lane(
        st[S_GAIN, i], st[S_LOSS, i], st[S_ATR, i], n_c, n_hlc, m, w, close, prev_close, close_old,
        true_range, log_close, log_close_old)
    out[K_RSI * nw + j, orow, ocol] = rsi
    out[K_ATR * nw + j, orow, ocol] = atr
    out[K_MOM * nw + j, orow, ocol] = mom
    out[K_ROC * nw + j, orow, ocol] = roc
    out[K_LOGRET * nw + j, orow, ocol] = logret

    (st[S_VAR_R, i], st[S_VAR_R + 1, i], st[S_VAR_R + 2, i], st[S_VAR_R + 3, i], st[S_VAR_R + 4, i],
     vol, flags_r) = return_window_lane(
        st[S_VAR_R, i], st[S_VAR_R + 1, i], st[S_VAR_R + 2, i], st[S_VAR_R + 3, i], st[S_VAR_R + 4, i],
        n_r, w, log_return, return_trail)
    out[K_VOL * nw + j, orow, ocol] = vol

    (st[S_SUM_PV, i], st[S_SUM_VOL, i], st[S_VAR_V, i], st[S_VAR_V + 1, i], st[S_VAR_V + 2, i],
     st[S_VAR_V + 3, i], st[S_VAR_V + 4, i], vwap, volz, flags_v) = volume_window_lane(
        st[S_SUM_PV, i], st[S_SUM_VOL, i], st[S_VAR_V, i], st[S_VAR_V + 1, i], st[S_VAR_V + 2, i],
        st[S_VAR_V + 3, i], st[S_VAR_V + 4, i], n_pv, n_v, w, pv, pv_old, volume, volume_old, volume_trail)
    out[K_VWAP * nw + j, orow, ocol] = vwap
    out[K_VOLZ * nw + j, orow, ocol] = volz
    return flags_c | flags_r | flags_v


@njit(cache=True, error_model="numpy")
def _store_moments(st, k, i, a, s1, s2, pk, cd):
    st[k, i] = a
    st[k + 1, i] = s1
    st[k + 2, i] = s2
    st[k + 3, i] = pk
    st[k + 4, i] = cd


@njit(cache=True, error_model="numpy")
def window_fixup(flags, st, i, w, j, nw, n_v, n_pv, cbuf, rbuf, vbuf, pvbuf, col, row, nrows, out, orow, ocol):
    """Finish what the window lanes flagged: re-seed sums and rebuild variances from the window history."""
    first = (row - w + 1 + nrows) % nrows
    if flags & (FIX_SUM_C | FIX_VAR_C):
        if flags & FIX_SUM_C:
            # `0.0 * old` keeps a NaN-poisoned sum poisoned, as TA-Lib's running sum would be
            st[S_SUM_C, i] = window_sum(cbuf, col, first, w, nrows) + 0.0 * st[S_SUM_C, i]
        if flags & FIX_VAR_C:
            a, s1, s2, pk, cd, var, _ = moments_rebuild(cbuf, col, first, w, nrows, cbuf[row, col], cbuf[first, col])
            _store_moments(st, S_VAR_C, i, a, s1, s2, pk, cd)
            st[S_LAST_VAR_C, i] = var
        sma = st[S_SUM_C, i] / w
        sd = sqrt(st[S_LAST_VAR_C, i])
        out[K_SMA * nw + j, orow, ocol] = sma
        out[K_STDDEV * nw + j, orow, ocol] = sd
        out[K_BB_UPPER * nw + j, orow, ocol] = sma + BB_K * sd
        out[K_BB_MIDDLE * nw + j, orow, ocol] = sma
        out[K_BB_LOWER * nw + j, orow, ocol] = sma - BB_K * sd
    if flags & FIX_VAR_R:
        a, s1, s2, pk, cd, var, _ = moments_rebuild(rbuf, col, first, w, nrows, rbuf[row, col], rbuf[first, col])
        _store_moments(st, S_VAR_R, i, a, s1, s2, pk, cd)
        out[K_VOL * nw + j, orow, ocol] = sqrt(var)
    if flags & FIX_VAR_V:
        a, s1, s2, pk, cd, var, dev = moments_rebuild(vbuf, col, first, w, nrows, vbuf[row, col], vbuf[first, col])
        _store_moments(st, S_VAR_V, i, a, s1, s2, pk, cd)
        out[K_VOLZ * nw + j, orow, ocol] = volz_value(n_v, w, var, dev)
    if flags & FIX_VWAP:
        st[S_SUM_PV, i] = window_sum(pvbuf, col, first, w, nrows)
        st[S_SUM_VOL, i] = window_sum(vbuf, col, first, w, nrows)
        out[K_VWAP * nw + j, orow, ocol] = vwap_value(n_pv, w, st[S_SUM_PV, i], st[S_SUM_VOL, i])


# ----------------------------------------------------------------------------------------------- MACD


@njit(cache=True, error_model="numpy")
def macd_lane(fast_ema, slow_ema, signal_ema, slow_sum, fast_sum, line_sum, n, fast, slow, signal, x):
    """MACD for one bar: (6 new state values, line, signal, histogram); NaN inside the lookback.

    The fast EMA's seed is the straight sum of the ``fast`` closes ending at bar ``slow - 1``,
    accumulated as they arrive, so no window history is needed.
    """
    new_slow_sum = (0.0 if n == 1 else slow_sum) + x
    new_slow_sum = new_slow_sum if n <= slow else slow_sum
    fast_from = slow - fast + 1  # first bar of the fast seed window
    new_fast_sum = (0.0 if n == fast_from else fast_sum) + x
    new_fast_sum = new_fast_sum if (n >= fast_from) & (n <= slow) else fast_sum
    seeding = n == slow
    new_slow = new_slow_sum / slow if seeding else fma(x - slow_ema, 2.0 / (slow + 1), slow_ema)
    new_fast = new_fast_sum / fast if seeding else fma(x - fast_ema, 2.0 / (fast + 1), fast_ema)
    line = new_fast - new_slow
    k = n - slow + 1  # MACD line values so far, this one included
    new_line_sum = (0.0 if k == 1 else line_sum) + line
    new_line_sum = new_line_sum if (k >= 1) & (k <= signal) else line_sum
    new_signal = new_line_sum / signal if k == signal else fma(line - signal_ema, 2.0 / (signal + 1), signal_ema)
    started = n >= slow
    ready = k >= signal
    return (new_fast if started else fast_ema, new_slow if started else slow_ema,
            new_signal if ready else signal_ema, new_slow_sum, new_fast_sum, new_line_sum,
            (line if ready else NAN), (new_signal if ready else NAN), (line - new_signal if ready else NAN))


@njit(cache=True, error_model="numpy")
def macd_step(ms, i, n, fast, slow, signal, x):
    """``macd_lane`` on lane ``i`` of a state array ``ms[slot, lane]``; returns (line, signal, histogram)."""
    (ms[M_FAST, i], ms[M_SLOW, i], ms[M_SIGNAL, i], ms[M_SLOW_SUM, i], ms[M_FAST_SUM, i], ms[M_LINE_SUM, i],
     line, sig, hist) = macd_lane(ms[M_FAST, i], ms[M_SLOW, i], ms[M_SIGNAL, i], ms[M_SLOW_SUM, i],
                                  ms[M_FAST_SUM, i], ms[M_LINE_SUM, i], n, fast, slow, signal, x)
    return line, sig, hist
