"""Cross-section kernels: GPU (numba CUDA simulator) == CPU fallback == a plain numpy reference."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from engine.backend import resolve_backend

cpu = importlib.import_module("cpu_fallback.cross_section")


@pytest.fixture(scope="module")
def gpu():
    backend = resolve_backend("gpu")  # the simulator counts as a device when asked for explicitly
    return importlib.import_module(backend.kernels.__name__ + ".cross_section")


# --- numpy references, written from the definitions ----------------------------------------------
def ref_zscore(panel: np.ndarray) -> np.ndarray:
    out = np.full_like(panel, np.nan)
    for f in range(panel.shape[1]):
        col = panel[:, f]
        ok = np.isfinite(col)
        if not ok.any():
            continue
        centred = col[ok] - col[ok][0]  # exact for nearby values; keeps the spread's precision
        centred = centred - centred.mean()
        std = np.sqrt(np.mean(centred**2))
        out[ok, f] = centred / std if std > 0 else 0.0
    return out


def ref_rank(panel: np.ndarray) -> np.ndarray:
    out = np.full_like(panel, np.nan)
    for f in range(panel.shape[1]):
        col = panel[:, f]
        ok = np.isfinite(col)
        vals = col[ok]
        ranks = np.array([np.sum(vals < v) + (np.sum(vals == v) + 1) / 2.0 for v in vals])
        out[ok, f] = ranks
    return out


def ref_beta_corr(returns: np.ndarray, bench: int, window: int):
    n_bars, n_symbols = returns.shape
    beta = np.full_like(returns, np.nan)
    corr = np.full_like(returns, np.nan)
    for t in range(window - 1, n_bars):
        b = returns[t - window + 1 : t + 1, bench]
        for j in range(n_symbols):
            x = returns[t - window + 1 : t + 1, j]
            if not (np.isfinite(x).all() and np.isfinite(b).all()):
                continue
            cov = np.mean((x - x.mean()) * (b - b.mean()))
            vb, vx = np.var(b), np.var(x)
            if vb > 0:
                beta[t, j] = cov / vb
                if vx > 0:
                    corr[t, j] = cov / np.sqrt(vx * vb)
    return beta, corr


def _panel(rng: np.random.Generator, n_symbols: int, n_features: int) -> np.ndarray:
    panel = rng.normal(50.0, 10.0, size=(n_symbols, n_features))
    panel[:, 0] = np.round(panel[:, 0])             # many ties
    panel[3, 1] = np.nan                            # a symbol still inside its lookback
    panel[5, 1] = np.inf                            # and a broken value: both excluded
    panel[:, 2] = 1e9 + rng.normal(0, 1e-3, n_symbols)  # large common level, tiny spread
    panel[:, 3] = 7.0                               # no spread at all
    panel[:, 4] = np.nan                            # nothing valid
    return panel


@pytest.mark.parametrize("n_symbols", [1, 300])
def test_zscore_gpu_cpu_reference_agree(gpu, n_symbols):
    panel = _panel(np.random.default_rng(n_symbols), n_symbols, 5) if n_symbols > 5 else np.random.default_rng(1).normal(size=(n_symbols, 2))
    ref = ref_zscore(panel)
    got_cpu = cpu.cross_sectional_zscore(panel)
    got_gpu = gpu.cross_sectional_zscore(panel)
    np.testing.assert_allclose(got_cpu, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got_gpu, got_cpu, rtol=1e-12, atol=1e-12, equal_nan=True)
    if n_symbols > 5:
        assert np.all(got_cpu[:, 3] == 0.0)          # zero spread -> 0, not NaN
        assert np.isnan(got_cpu[:, 4]).all()
        assert np.isnan(got_cpu[3, 1]) and np.isnan(got_cpu[5, 1])
        ok = np.isfinite(got_cpu[:, 0])
        assert abs(got_cpu[ok, 0].mean()) < 1e-12 and abs(got_cpu[ok, 0].std() - 1.0) < 1e-12


@pytest.mark.parametrize("n_symbols", [1, 37, 300])
def test_rank_gpu_cpu_reference_agree_exactly(gpu, n_symbols):
    panel = _panel(np.random.default_rng(n_symbols + 1), n_symbols, 5) if n_symbols > 5 else np.random.default_rng(2).normal(size=(n_symbols, 5))
    ref = ref_rank(panel)
    got_cpu = cpu.cross_sectional_rank(panel)
    got_gpu = gpu.cross_sectional_rank(panel)
    np.testing.assert_array_equal(got_cpu, ref)
    np.testing.assert_array_equal(got_gpu, ref)
    if n_symbols > 5:
        assert np.all(got_cpu[:, 3] == (n_symbols + 1) / 2.0)  # all tied: everyone gets the middle rank
        n_valid = n_symbols - 2
        assert np.nansum(got_cpu[:, 1]) == n_valid * (n_valid + 1) / 2


def test_rank_of_a_known_column():
    col = np.array([[3.0], [1.0], [np.nan], [3.0], [2.0], [-np.inf]])
    np.testing.assert_array_equal(cpu.cross_sectional_rank(col)[:, 0], [3.5, 1.0, np.nan, 3.5, 2.0, np.nan])


@pytest.mark.parametrize("window", [2, 5, 20])
def test_rolling_beta_corr_gpu_cpu_reference_agree(gpu, window):
    rng = np.random.default_rng(window)
    n_bars, n_symbols = 40, 9
    bench = rng.normal(0, 0.01, n_bars)
    returns = np.empty((n_bars, n_symbols))
    for j in range(n_symbols):
        returns[:, j] = (j - 3) * 0.5 * bench + rng.normal(0, 0.002 * (j + 1), n_bars)
    returns[:, 2] = bench
    returns[:, 7] = 0.25                     # constant series: beta 0, correlation undefined
    returns[11, 4] = np.nan                  # a gap poisons the windows that cover it
    ref_b, ref_c = ref_beta_corr(returns, 2, window)
    b_cpu, c_cpu = cpu.rolling_beta_corr(returns, 2, window)
    b_gpu, c_gpu = gpu.rolling_beta_corr(returns, 2, window)
    for got, ref in ((b_cpu, ref_b), (c_cpu, ref_c)):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(b_gpu, b_cpu, rtol=1e-12, atol=1e-15, equal_nan=True)
    np.testing.assert_allclose(c_gpu, c_cpu, rtol=1e-12, atol=1e-15, equal_nan=True)
    assert np.isnan(b_cpu[: window - 1]).all()
    np.testing.assert_allclose(b_cpu[window - 1 :, 2], 1.0)   # the benchmark against itself
    np.testing.assert_allclose(c_cpu[window - 1 :, 2], 1.0)
    assert np.all(b_cpu[window - 1 :, 7] == 0.0) and np.isnan(c_cpu[:, 7]).all()
    assert np.isnan(b_cpu[11 : 11 + window, 4]).all()
    if 11 + window < n_bars:
        assert np.isfinite(b_cpu[11 + window, 4])
    if window == 20:
        assert abs(b_cpu[-1, 0] - (-1.5)) < 0.2  # planted beta recovered


def test_rolling_beta_corr_rejects_bad_arguments(gpu):
    returns = np.zeros((10, 3))
    for mod in (cpu, gpu):
        with pytest.raises(ValueError, match="benchmark column"):
            mod.rolling_beta_corr(returns, 3, 5)
        with pytest.raises(ValueError, match="benchmark column"):
            mod.rolling_beta_corr(returns, -1, 5)
        with pytest.raises(ValueError, match="window"):
            mod.rolling_beta_corr(returns, 0, 1)
        with pytest.raises(ValueError, match="2-D"):
            mod.cross_sectional_zscore(np.zeros(4))
    # the edges that are allowed: last column, smallest window, window longer than the data
    b, c = cpu.rolling_beta_corr(returns, 2, 2)
    assert b.shape == (10, 3)
    b, c = cpu.rolling_beta_corr(returns, 0, 11)
    assert np.isnan(b).all()


def test_cpu_backend_resolves_to_the_fallback_module():
    backend = resolve_backend("cpu")
    assert importlib.import_module(backend.kernels.__name__ + ".cross_section") is cpu


def test_parallel_and_serial_builds_agree(monkeypatch):
    rng = np.random.default_rng(9)
    panel = _panel(rng, 64, 5)
    returns = rng.normal(0, 0.01, (30, 8))
    serial = (cpu.cross_sectional_zscore(panel), cpu.cross_sectional_rank(panel), *cpu.rolling_beta_corr(returns, 0, 10))
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0)  # every call takes the parallel build
    parallel = (cpu.cross_sectional_zscore(panel), cpu.cross_sectional_rank(panel), *cpu.rolling_beta_corr(returns, 0, 10))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
