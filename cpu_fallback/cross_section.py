"""Cross-sectional kernels on the CPU: z-scores and ranks across a universe, rolling beta/correlation.

Same function names and signatures as ``gpu_kernels.cross_section``. Inputs are a feature panel
``(symbols, features)`` for one bar, or a time-major returns panel ``(bars, symbols)``.

Definitions (shared with the GPU kernels and the tests' numpy reference):

- ``cross_sectional_zscore``: per feature column, ``(x - mean) / std`` over the symbols whose value is
  finite; population std (ddof 0, TA-Lib's convention); two passes over values taken relative to the
  column's first finite value, so a column with a large common level keeps the precision of its spread. A non-finite input gives NaN; a column with zero spread gives 0.0.
- ``cross_sectional_rank``: per feature column, 1-based rank among the finite values, ties get the
  average of the ranks they span (``scipy.stats.rankdata(method="average")``); a non-finite input
  gives NaN.
- ``rolling_beta_corr``: for every bar ``t >= window - 1`` and symbol ``j``, the beta and Pearson
  correlation of ``returns[t-window+1 : t+1, j]`` on the benchmark column over the same bars (two-pass,
  population moments). Rows before the first full window, windows holding a non-finite value, and a
  benchmark with zero variance give NaN (and a symbol with zero variance has correlation NaN).
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

#: below this much work a kernel runs single-threaded: starting the thread team costs more than it
#: saves, and on a busy host a parallel region can wait milliseconds for a descheduled worker
PARALLEL_MIN_WORK = 1 << 16


def _two_builds(impl):
    """A parallel and a serial compiled kernel from one body (``prange`` is ``range`` in the serial one).

    The serial build is compiled from a renamed copy: numba names its cache files after the function,
    and both builds of one function would otherwise overwrite each other's cached code.
    """
    serial = types.FunctionType(impl.__code__, impl.__globals__, impl.__name__ + "_serial", impl.__defaults__, impl.__closure__)
    serial.__qualname__ = impl.__qualname__ + "_serial"
    serial.__module__ = impl.__module__
    return njit(cache=True, parallel=True)(impl), njit(cache=True)(serial)


def _zscore_columns(panel: np.ndarray, out: np.ndarray) -> None:
    n_symbols, n_features = panel.shape
    for f in prange(n_features):
        # anchor on the first finite value: sums of (x - anchor) keep the precision of the spread even
        # when the column sits at a large common level (prices, volumes)
        anchor = np.nan
        for i in range(n_symbols):
            if np.isfinite(panel[i, f]):
                anchor = panel[i, f]
                break
        if not np.isfinite(anchor):
            for i in range(n_symbols):
                out[i, f] = np.nan
            continue
        count = 0
        total = 0.0
        for i in range(n_symbols):
            x = panel[i, f]
            if np.isfinite(x):
                count += 1
                total += x - anchor
        mean = total / count  # relative to the anchor
        ss = 0.0
        for i in range(n_symbols):
            x = panel[i, f]
            if np.isfinite(x):
                d = (x - anchor) - mean
                ss += d * d
        std = np.sqrt(ss / count)
        for i in range(n_symbols):
            x = panel[i, f]
            if not np.isfinite(x):
                out[i, f] = np.nan
            elif std > 0.0:
                out[i, f] = ((x - anchor) - mean) / std
            else:
                out[i, f] = 0.0


_zscore_parallel, _zscore_serial = _two_builds(_zscore_columns)


def cross_sectional_zscore(panel: np.ndarray) -> np.ndarray:
    """Z-score of every symbol against the universe, per feature column: ``(symbols, features)`` float64."""
    panel = _as_panel(panel)
    out = np.empty_like(panel)
    (_zscore_parallel if panel.size >= PARALLEL_MIN_WORK else _zscore_serial)(panel, out)
    return out


#: up to this many symbols a column's finite values are insertion-sorted (a live universe's bar close:
#: no allocation and no quicksort set-up per column); larger columns use ``np.argsort``
INSERTION_SORT_MAX = 64


def _rank_columns(panel: np.ndarray, out: np.ndarray) -> None:
    n_symbols, n_features = panel.shape
    for f in prange(n_features):
        column = panel[:, f]
        # the finite entries' indices in ascending order of value: NaN and +-inf take no rank
        if n_symbols <= INSERTION_SORT_MAX:
            order = np.empty(n_symbols, dtype=np.int64)
            m = 0
            for i in range(n_symbols):
                x = column[i]
                if not np.isfinite(x):
                    out[i, f] = np.nan
                    continue
                j = m
                while j > 0 and column[order[j - 1]] > x:
                    order[j] = order[j - 1]
                    j -= 1
                order[j] = i
                m += 1
        else:
            ranked = np.argsort(column)
            order = np.empty(n_symbols, dtype=np.int64)
            m = 0
            for k in range(n_symbols):
                i = ranked[k]
                if np.isfinite(column[i]):
                    order[m] = i
                    m += 1
                else:
                    out[i, f] = np.nan
        pos = 0  # rank position among finite values (0-based)
        k = 0
        while k < m:
            # a run of ties starting at k: equal values are contiguous in sorted order
            x = column[order[k]]
            end = k + 1
            while end < m and column[order[end]] == x:
                end += 1
            rank = pos + (end - k + 1) / 2.0  # average of ranks pos+1 .. pos+run
            for q in range(k, end):
                out[order[q], f] = rank
            pos += end - k
            k = end


_rank_parallel, _rank_serial = _two_builds(_rank_columns)


def cross_sectional_rank(panel: np.ndarray) -> np.ndarray:
    """Average-tie 1-based rank of every symbol within the universe, per feature column."""
    panel = _as_panel(panel)
    out = np.empty_like(panel)
    (_rank_parallel if panel.size >= PARALLEL_MIN_WORK else _rank_serial)(panel, out)
    return out


def _beta_corr(returns: np.ndarray, bench_col: int, window: int, beta: np.ndarray, corr: np.ndarray) -> None:
    n_bars, n_symbols = returns.shape
    for j in prange(n_symbols):
        for t in range(n_bars):
            beta[t, j] = np.nan
            corr[t, j] = np.nan
            if t < window - 1:
                continue
            start = t - window + 1
            sx = 0.0
            sb = 0.0
            ok = True
            for k in range(start, t + 1):
                x = returns[k, j]
                b = returns[k, bench_col]
                if not (np.isfinite(x) and np.isfinite(b)):
                    ok = False
                    break
                sx += x
                sb += b
            if not ok:
                continue
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
                    corr[t, j] = cxb / np.sqrt(cxx * cbb)


_beta_parallel, _beta_serial = _two_builds(_beta_corr)


def rolling_beta_corr(returns: np.ndarray, bench_col: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling beta and correlation of every symbol to the benchmark column: two ``(bars, symbols)`` arrays."""
    returns = _as_panel(returns)
    bench_col, window = _check_beta_args(returns, bench_col, window)
    beta = np.empty_like(returns)
    corr = np.empty_like(returns)
    # only bars with a full window cost anything (the rest are NaN at once): a live step passes exactly
    # one window, which must not pay for waking the thread pool
    work = max(returns.shape[0] - window + 1, 0) * returns.shape[1] * window
    kernel = _beta_parallel if work >= PARALLEL_MIN_WORK else _beta_serial
    kernel(returns, bench_col, window, beta, corr)
    return beta, corr


def _as_panel(panel: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(panel, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D panel, got shape {arr.shape}")
    return arr


def _check_beta_args(returns: np.ndarray, bench_col: int, window: int) -> tuple[int, int]:
    n_symbols = returns.shape[1]
    if not 0 <= int(bench_col) < n_symbols:
        raise ValueError(f"benchmark column {bench_col} is outside 0..{n_symbols - 1}")
    if int(window) < 2:
        raise ValueError(f"window must be at least 2, got {window}")
    return int(bench_col), int(window)


__all__ = ["cross_sectional_rank", "cross_sectional_zscore", "rolling_beta_corr"]
