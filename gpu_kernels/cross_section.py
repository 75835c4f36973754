"""Cross-sectional kernels on the GPU (numba.cuda): z-scores and ranks across a universe, rolling beta/correlation.

Same names, signatures and definitions as ``cpu_fallback.cross_section`` (see its docstring). The
functions take numpy arrays (copied to the device and back) or CUDA device arrays (results stay on
the device). They run under the numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) on numpy arrays.

Layout: the z-score is one block per feature column, threads striding over symbols with a shared
memory tree reduction in float64 (two passes over anchored values: mean, then centred sum of squares). Ranks and rolling
beta/correlation are one thread per output cell, the fast thread index over symbols so neighbouring
threads read neighbouring addresses of the row-major panels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int32

THREADS_PER_BLOCK = 128   #: z-score reduction width (a power of two)
TILE = 16                 #: 2-D launch tile for the per-cell kernels


@cuda.jit(cache=True)
def _zscore_kernel(panel, out):
    f = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n_symbols = panel.shape[0]
    if f >= panel.shape[1]:
        return
    part_sum = cuda.shared.array(THREADS_PER_BLOCK, float64)
    part_cnt = cuda.shared.array(THREADS_PER_BLOCK, int32)

    # every thread finds the same anchor (the column's first finite value; usually row 0) so the sums
    # below keep the precision of the spread at a large common level, as on the CPU
    anchor = 0.0
    for i in range(n_symbols):
        if math.isfinite(panel[i, f]):
            anchor = panel[i, f]
            break
    s = 0.0
    c = 0
    for i in range(tid, n_symbols, THREADS_PER_BLOCK):
        x = panel[i, f]
        if math.isfinite(x):
            s += x - anchor
            c += 1
    part_sum[tid] = s
    part_cnt[tid] = c
    cuda.syncthreads()
    step = THREADS_PER_BLOCK // 2
    while step > 0:
        if tid < step:
            part_sum[tid] += part_sum[tid + step]
            part_cnt[tid] += part_cnt[tid + step]
        cuda.syncthreads()
        step //= 2
    count = part_cnt[0]
    mean = part_sum[0] / count if count > 0 else 0.0
    cuda.syncthreads()  # everyone has read the totals before the buffer is reused

    ss = 0.0
    for i in range(tid, n_symbols, THREADS_PER_BLOCK):
        x = panel[i, f]
        if math.isfinite(x):
            d = (x - anchor) - mean
            ss += d * d
    part_sum[tid] = ss
    cuda.syncthreads()
    step = THREADS_PER_BLOCK // 2
    while step > 0:
        if tid < step:
            part_sum[tid] += part_sum[tid + step]
        cuda.syncthreads()
        step //= 2
    std = math.sqrt(part_sum[0] / count) if count > 0 else 0.0

    for i in range(tid, n_symbols, THREADS_PER_BLOCK):
        x = panel[i, f]
        if not math.isfinite(x):
            out[i, f] = math.nan
        elif std > 0.0:
            out[i, f] = ((x - anchor) - mean) / std
        else:
            out[i, f] = 0.0


@cuda.jit(cache=True)
def _rank_kernel(panel, out):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x  # symbol
    f = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y  # feature
    n_symbols = panel.shape[0]
    if i >= n_symbols or f >= panel.shape[1]:
        return
    x = panel[i, f]
    if not math.isfinite(x):
        out[i, f] = math.nan
        return
    below = 0
    equal = 0
    for k in range(n_symbols):
        y = panel[k, f]
        if math.isfinite(y):
            if y < x:
                below += 1
            elif y == x:
                equal += 1
    out[i, f] = below + (equal + 1) / 2.0


@cuda.jit(cache=True)
def _beta_corr_kernel(returns, bench_col, window, beta, corr):
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x  # symbol
    t = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y  # bar
    n_bars, n_symbols = returns.shape
    if j >= n_symbols or t >= n_bars:
        return
    beta[t, j] = math.nan
    corr[t, j] = math.nan
    if t < window - 1:
        return
    start = t - window + 1
    sx = 0.0
    sb = 0.0
    for k in range(start, t + 1):
        x = returns[k, j]
        b = returns[k, bench_col]
        if not (math.isfinite(x) and math.isfinite(b)):
            return
        sx += x
        sb += b
    mx = sx / window
    mb = sb / window
    cxx = 0.0
    cbb = 0.0
    cxb = 0.0
    for k in range(start, t + 1):
        dx = returns[k, j] - mx
        db = returns[k, bench_col] - mb
        cxx += dx * dx
        cbb += db * db
        cxb += dx * db
    if cbb > 0.0:
        beta[t, j] = cxb / cbb
        if cxx > 0.0:
            corr[t, j] = cxb / math.sqrt(cxx * cbb)


def cross_sectional_zscore(panel):
    """Z-score of every symbol against the universe, per feature column: ``(symbols, features)`` float64."""
    d_panel, on_host = _to_device(panel)
    d_out = cuda.device_array(d_panel.shape, dtype=np.float64)
    if d_panel.shape[0] and d_panel.shape[1]:
        _zscore_kernel[d_panel.shape[1], THREADS_PER_BLOCK](d_panel, d_out)
    return d_out.copy_to_host() if on_host else d_out


def cross_sectional_rank(panel):
    """Average-tie 1-based rank of every symbol within the universe, per feature column."""
    d_panel, on_host = _to_device(panel)
    d_out = cuda.device_array(d_panel.shape, dtype=np.float64)
    n_symbols, n_features = d_panel.shape
    if n_symbols and n_features:
        grid = (_blocks(n_symbols, TILE), _blocks(n_features, TILE))
        _rank_kernel[grid, (TILE, TILE)](d_panel, d_out)
    return d_out.copy_to_host() if on_host else d_out


def rolling_beta_corr(returns, bench_col: int, window: int):
    """Rolling beta and correlation of every symbol to the benchmark column: two ``(bars, symbols)`` arrays."""
    d_returns, on_host = _to_device(returns)
    n_bars, n_symbols = d_returns.shape
    if not 0 <= int(bench_col) < n_symbols:
        raise ValueError(f"benchmark column {bench_col} is outside 0..{n_symbols - 1}")
    if int(window) < 2:
        raise ValueError(f"window must be at least 2, got {window}")
    d_beta = cuda.device_array((n_bars, n_symbols), dtype=np.float64)
    d_corr = cuda.device_array((n_bars, n_symbols), dtype=np.float64)
    if n_bars and n_symbols:
        grid = (_blocks(n_symbols, TILE), _blocks(n_bars, TILE))
        _beta_corr_kernel[grid, (TILE, TILE)](d_returns, int(bench_col), int(window), d_beta, d_corr)
    if on_host:
        return d_beta.copy_to_host(), d_corr.copy_to_host()
    return d_beta, d_corr


def _blocks(n: int, per_block: int) -> int:
    return (n + per_block - 1) // per_block


def _to_device(panel):
    """A contiguous float64 2-D device array, and whether the caller gave host memory."""
    # the CUDA simulator has no cuda.is_cuda_array; device arrays there still expose copy_to_host
    if not isinstance(panel, np.ndarray) and (hasattr(panel, "__cuda_array_interface__") or hasattr(panel, "copy_to_host")):
        if panel.ndim != 2 or panel.dtype != np.float64:
            raise ValueError(f"expected a 2-D float64 device panel, got {panel.ndim}-D {panel.dtype}")
        return panel, False
    arr = np.ascontiguousarray(panel, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D panel, got shape {arr.shape}")
    return cuda.to_device(arr), True


__all__ = ["cross_sectional_rank", "cross_sectional_zscore", "rolling_beta_corr"]
