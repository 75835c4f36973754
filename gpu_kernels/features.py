"""Feature kernels on the GPU (numba.cuda): every indicator over a time-major panel in one device pass.

Same function names and signatures as ``cpu_fallback.features``. The arithmetic is the CPU's:
the kernels call the very ``cpu_fallback.indicator_steps`` functions (numba compiles them for the
device), so the GPU computes the same definitions; results agree with the CPU to rounding (the CUDA
``log`` and the compiler's fused multiply-adds may differ in the last bit).

Layout: one thread per (symbol, window, feature group) walks time for the windowed features with its
state in registers (spilled to local memory only for the rare re-seed / rebuild fix-ups), one thread per
symbol for MACD, one thread per (bar, symbol) for the per-bar series. Neighbouring threads hold
neighbouring symbols, so every panel read ``x[t, s]`` is coalesced. Inputs go to the device once, all features are computed there, and the
``(n_features, bars, symbols)`` result comes back once (or stays on the device with ``device=True``).
State is float64 whatever the output dtype; ``float32`` halves the bytes written and copied back.
Each walk is a chain of dependent steps, so the kernels are bound by memory latency, not bandwidth:
the more chains in flight (symbols x windows x groups), the closer they get to the bandwidth bound.

Under ``NUMBA_ENABLE_CUDASIM=1`` the same host wrapper runs the kernels in the simulator on numpy
arrays (slow: small panels only), which is how CI checks them against the CPU fallback.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from numba import cuda

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
    N_MACD_STATE,
    N_STATE,
    N_WINDOWED_KINDS,
    S_LAST_VAR_C,
    S_SUM_C,
    S_SUM_PV,
    S_SUM_VOL,
    S_VAR_C,
    S_VAR_R,
    S_VAR_V,
    advance_count,
    bar_lane,
    change_lane,
    close_window_lane,
    macd_step,
    return_window_lane,
    run_length,
    volume_window_lane,
    wilder_lane,
    window_fixup,
)

THREADS = 128  # threads per block along the symbol axis


def _simulated() -> bool:
    from numba import config  # noqa: PLC0415

    return bool(config.ENABLE_CUDASIM)


if _simulated():

    def plain(array):
        """The numpy array behind a simulated kernel argument, so the CPU-compiled steps accept it."""
        item = array.__dict__.get("_item") if hasattr(array, "__dict__") else None
        return item._ary if item is not None else array

else:

    @cuda.jit(device=True)
    def plain(array):
        """On a device a kernel argument already is what the compiled steps take."""
        return array


def n_features(n_windows: int) -> int:
    return N_WINDOWED_KINDS * n_windows + len(GLOBAL_KINDS)


@cuda.jit
def _log_kernel(close, log_close):
    """One thread per (bar, symbol): ln(close), taken once for every window."""
    s, t = cuda.grid(2)
    n_bars, n_symbols = close.shape
    if s < n_symbols and t < n_bars:
        log_close[t, s] = math.log(close[t, s])


@cuda.jit
def _bar_kernel(high, low, close, volume, vwap, has_vwap, g0, log_close, log_return, true_range, pv, out):
    """One thread per (bar, symbol): log return, true range, price*volume and range_bps."""
    s, t = cuda.grid(2)
    n_bars, n_symbols = close.shape
    if s >= n_symbols or t >= n_bars:
        return
    prev_close = close[t - 1, s] if t > 0 else math.nan
    prev_log_close = log_close[t - 1, s] if t > 0 else math.nan
    bar_vwap = vwap[t, s] if has_vwap else math.nan
    r, tr, p, range_bps = bar_lane(high[t, s], low[t, s], close[t, s], volume[t, s], bar_vwap, prev_close,
                                   log_close[t, s], prev_log_close)
    log_return[t, s] = r
    true_range[t, s] = tr
    pv[t, s] = p
    out[g0 + G_RANGE_BPS, t, s] = range_bps


# close (SMA/EMA/STDDEV/BB), Wilder + changes (RSI/ATR/MOM/ROC/logret), returns (vol), volume, and MACD
# (window-free: walked by the threads of the first window only)
N_GROUPS = 5


@cuda.jit
def _window_kernel(high, low, close, volume, log_close, log_return, true_range, pv, windows,
                   macd_fast, macd_slow, macd_signal, out):
    """One thread per (symbol, window, feature group), walking time with its state in registers.

    Splitting the windowed features into four independent groups gives four times the threads of a
    thread per (symbol, window): each walk is a chain of dependent steps, and the more chains the GPU
    holds, the better it hides memory latency. ``blockIdx.z`` picks the group, uniform per block.
    """
    s = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    j = cuda.blockIdx.y
    group = cuda.blockIdx.z
    n_bars, n_symbols = close.shape
    nw = windows.shape[0]
    if s >= n_symbols or j >= nw:
        return
    w = windows[j]
    close = plain(close)
    log_return = plain(log_return)
    volume = plain(volume)
    pv = plain(pv)
    out = plain(out)
    st = cuda.local.array((N_STATE, 1), np.float64)  # the state in memory, only for the rare fix-ups
    if group == 0:
        sum_c = ema = a_c = s1_c = s2_c = pk_c = cd_c = var_c = 0.0
        n_c = 0
        for t in range(n_bars):
            c = close[t, s]
            n_c = advance_count(n_c, c == c)
            old = t - w if t >= w else 0
            trail = t - w + 1 if t >= w - 1 else 0
            (sum_c, ema, a_c, s1_c, s2_c, pk_c, cd_c, var_c, sma, ema_out, sd, upper, lower, flags) = close_window_lane(
                sum_c, ema, a_c, s1_c, s2_c, pk_c, cd_c, n_c, w, c, close[old, s], close[trail, s])
            out[K_SMA * nw + j, t, s] = sma
            out[K_EMA * nw + j, t, s] = ema_out
            out[K_STDDEV * nw + j, t, s] = sd
            out[K_BB_UPPER * nw + j, t, s] = upper
            out[K_BB_MIDDLE * nw + j, t, s] = sma
            out[K_BB_LOWER * nw + j, t, s] = lower
            if flags != 0:
                # spill to memory, let the shared fix-up rebuild from the panel, reload
                st[S_SUM_C, 0] = sum_c
                st[S_LAST_VAR_C, 0] = var_c
                st[S_VAR_C, 0], st[S_VAR_C + 1, 0], st[S_VAR_C + 2, 0], st[S_VAR_C + 3, 0], st[S_VAR_C + 4, 0] = (
                    a_c, s1_c, s2_c, pk_c, cd_c)
                window_fixup(flags, st, 0, w, j, nw, 0, 0, close, log_return, volume, pv, s, t, n_bars, out, t, s)
                sum_c = st[S_SUM_C, 0]
                var_c = st[S_LAST_VAR_C, 0]
                a_c, s1_c, s2_c, pk_c, cd_c = (st[S_VAR_C, 0], st[S_VAR_C + 1, 0], st[S_VAR_C + 2, 0],
                                               st[S_VAR_C + 3, 0], st[S_VAR_C + 4, 0])
    elif group == 1:
        gain = loss = atr = 0.0
        n_c = n_hlc = 0
        for t in range(n_bars):
            c = close[t, s]
            h = high[t, s]
            lo = low[t, s]
            n_c = advance_count(n_c, c == c)
            n_hlc = advance_count(n_hlc, (c == c) & (h == h) & (lo == lo))
            old = t - w if t >= w else 0
            prev_close = close[t - 1, s] if t > 0 else math.nan
            gain, loss, atr, rsi, atr_out = wilder_lane(gain, loss, atr, n_c, n_hlc, w, c, prev_close, true_range[t, s])
            mom, roc, logret = change_lane(n_c, t + 1, w, c, close[old, s], log_close[t, s], log_close[old, s])
            out[K_RSI * nw + j, t, s] = rsi
            out[K_ATR * nw + j, t, s] = atr_out
            out[K_MOM * nw + j, t, s] = mom
            out[K_ROC * nw + j, t, s] = roc
            out[K_LOGRET * nw + j, t, s] = logret
    elif group == 4:
        if j != 0:
            return
        ms = cuda.local.array((N_MACD_STATE, 1), np.float64)
        for k in range(N_MACD_STATE):
            ms[k, 0] = 0.0
        g0 = N_WINDOWED_KINDS * nw
        n_c = 0
        for t in range(n_bars):
            c = close[t, s]
            n_c = advance_count(n_c, c == c)
            line, signal, hist = macd_step(ms, 0, n_c, macd_fast, macd_slow, macd_signal, c)
            out[g0 + G_MACD, t, s] = line
            out[g0 + G_MACD_SIGNAL, t, s] = signal
            out[g0 + G_MACD_HIST, t, s] = hist
    elif group == 2:
        a_r = s1_r = s2_r = pk_r = cd_r = 0.0
        n_r = 0
        for t in range(n_bars):
            r = log_return[t, s]
            n_r = run_length(n_r, r == r)
            trail = t - w + 1 if t >= w - 1 else 0
            a_r, s1_r, s2_r, pk_r, cd_r, vol, flags = return_window_lane(
                a_r, s1_r, s2_r, pk_r, cd_r, n_r, w, r, log_return[trail, s])
            out[K_VOL * nw + j, t, s] = vol
            if flags != 0:
                st[S_VAR_R, 0], st[S_VAR_R + 1, 0], st[S_VAR_R + 2, 0], st[S_VAR_R + 3, 0], st[S_VAR_R + 4, 0] = (
                    a_r, s1_r, s2_r, pk_r, cd_r)
                window_fixup(flags, st, 0, w, j, nw, 0, 0, close, log_return, volume, pv, s, t, n_bars, out, t, s)
                a_r, s1_r, s2_r, pk_r, cd_r = (st[S_VAR_R, 0], st[S_VAR_R + 1, 0], st[S_VAR_R + 2, 0],
                                               st[S_VAR_R + 3, 0], st[S_VAR_R + 4, 0])
    elif group == 3:
        spv = svol = a_v = s1_v = s2_v = pk_v = cd_v = 0.0
        n_v = n_pv = 0
        for t in range(n_bars):
            v = volume[t, s]
            p = pv[t, s]
            n_v = run_length(n_v, v == v)
            n_pv = run_length(n_pv, p == p)
            old = t - w if t >= w else 0
            trail = t - w + 1 if t >= w - 1 else 0
            spv, svol, a_v, s1_v, s2_v, pk_v, cd_v, vwap, volz, flags = volume_window_lane(
                spv, svol, a_v, s1_v, s2_v, pk_v, cd_v, n_pv, n_v, w, p, pv[old, s], v, volume[old, s],
                volume[trail, s])
            out[K_VWAP * nw + j, t, s] = vwap
            out[K_VOLZ * nw + j, t, s] = volz
            if flags != 0:
                st[S_VAR_V, 0], st[S_VAR_V + 1, 0], st[S_VAR_V + 2, 0], st[S_VAR_V + 3, 0], st[S_VAR_V + 4, 0] = (
                    a_v, s1_v, s2_v, pk_v, cd_v)
                st[S_SUM_PV, 0] = spv
                st[S_SUM_VOL, 0] = svol
                window_fixup(flags, st, 0, w, j, nw, n_v, n_pv, close, log_return, volume, pv, s, t, n_bars, out, t, s)
                a_v, s1_v, s2_v, pk_v, cd_v = (st[S_VAR_V, 0], st[S_VAR_V + 1, 0], st[S_VAR_V + 2, 0],
                                               st[S_VAR_V + 3, 0], st[S_VAR_V + 4, 0])
                spv = st[S_SUM_PV, 0]
                svol = st[S_SUM_VOL, 0]


@dataclass
class GpuTimings:
    """Where the time of one ``compute_feature_panel`` call went (seconds, device-synchronised)."""

    to_device_s: float = 0.0
    kernels_s: float = 0.0
    to_host_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


def _xp():
    """cupy on a real device; None under the simulator (kernels then take numpy arrays)."""
    if cuda.is_available() and not getattr(cuda, "simulator_enabled", False) and not _simulated():
        import cupy  # noqa: PLC0415 - only on GPU hosts

        return cupy
    return None


def compute_feature_panel(high, low, close, volume, vwap, windows, macd, out_dtype, out=None, device=False,
                          timings: GpuTimings | None = None):
    """All features of ``(bars, symbols)`` panels on the GPU; returns ``(n_features, bars, symbols)``.

    Host numpy inputs are copied to the device once; device (cupy) inputs are used in place.
    ``device=True`` returns the cupy result without copying it back; otherwise the result is a numpy
    array (``out`` if given). ``timings``, when passed, receives the transfer and kernel times.
    """
    xp = _xp()
    n_bars, n_symbols = close.shape
    windows = np.ascontiguousarray(windows, dtype=np.int64)
    nw = len(windows)
    shape = (n_features(nw), n_bars, n_symbols)
    if n_bars == 0 or n_symbols == 0:
        return out if out is not None else np.empty(shape, dtype=out_dtype)
    sync = (lambda: xp.cuda.Device().synchronize()) if xp is not None else (lambda: None)
    t0 = time.perf_counter()
    if xp is not None:
        inputs = [xp.asarray(a, dtype=xp.float64) for a in (high, low, close, volume)]
        vw = xp.asarray(vwap, dtype=xp.float64) if vwap is not None else xp.empty((1, 1), dtype=xp.float64)
        d_windows = xp.asarray(windows)
        d_out = xp.empty(shape, dtype=out_dtype)
        scratch = [xp.empty((n_bars, n_symbols), dtype=xp.float64) for _ in range(4)]
    else:
        inputs = [np.ascontiguousarray(a, dtype=np.float64) for a in (high, low, close, volume)]
        vw = vwap if vwap is not None else np.empty((1, 1))
        d_windows = windows
        d_out = out if (out is not None and not device) else np.empty(shape, dtype=out_dtype)
        scratch = [np.empty((n_bars, n_symbols)) for _ in range(4)]
    sync()
    t1 = time.perf_counter()
    h, lo, c, v = inputs
    log_close, log_return, true_range, pv = scratch
    fast, slow, signal = (int(p) for p in macd)
    # the simulator runs every thread in Python: give it no idle ones
    threads = min(THREADS, n_symbols) if xp is None else THREADS
    blocks = (n_symbols + threads - 1) // threads
    pointwise = (blocks, n_bars)
    _log_kernel[pointwise, threads](c, log_close)
    _bar_kernel[pointwise, threads](h, lo, c, v, vw, vwap is not None, N_WINDOWED_KINDS * nw,
                                    log_close, log_return, true_range, pv, d_out)
    _window_kernel[(blocks, nw, N_GROUPS), threads](h, lo, c, v, log_close, log_return, true_range, pv, d_windows,
                                                    fast, slow, signal, d_out)
    sync()
    t2 = time.perf_counter()
    if xp is None or device:
        result = d_out
    elif out is not None:
        d_out.get(out=out)
        result = out
    else:
        result = d_out.get()
    t3 = time.perf_counter()
    if timings is not None:
        timings.to_device_s, timings.kernels_s, timings.to_host_s = t1 - t0, t2 - t1, t3 - t2
    return result
