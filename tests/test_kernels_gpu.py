"""GPU feature kernels against the CPU fallback on the same panels (CUDA simulator in CI, a real GPU when present).

The simulator runs the kernels thread by thread in Python, so panels here are tiny (40 bars x 3
symbols); every feature, every bar is compared, NaN positions included.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from engine.backend import cuda_simulator_enabled, probe_gpu
from engine.features import FeatureComputer

pytestmark = pytest.mark.skipif(
    not (cuda_simulator_enabled() or probe_gpu()[0]), reason="needs the CUDA simulator or a GPU"
)

WINDOWS = (2, 5, 7)
MACD = (3, 6, 4)


def _bars(n_bars: int, n_symbols: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_symbols)), axis=0))
    high = close * (1.0 + rng.uniform(0.0, 0.01, close.shape))
    low = close * (1.0 - rng.uniform(0.0, 0.01, close.shape))
    volume = rng.integers(100, 10_000, close.shape).astype(np.float64)
    vwap = (high + low + close) / 3.0
    vwap[rng.random(close.shape) < 0.2] = np.nan  # missing bar vwap: typical price is used
    close[:3, -1] = np.nan  # a symbol that starts late
    close[17, 0] = np.nan  # a gap: TA-Lib-style poisoning after the start
    volume[9, 0] = np.nan
    return {"open": close.copy(), "high": high, "low": low, "close": close, "volume": volume, "vwap": vwap}


def _rtol() -> float:
    # the simulator runs the CPU-compiled steps (bit-equal); a device's log and fused multiply-adds
    # may round the last bit differently
    return 1e-13 if cuda_simulator_enabled() else 1e-9


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_kernels_equal_cpu_fallback(dtype):
    bars = _bars(40, 3, seed=11)
    gpu = FeatureComputer(WINDOWS, backend="gpu", dtype=dtype, macd=MACD)
    cpu = FeatureComputer(WINDOWS, backend="cpu", dtype=dtype, macd=MACD)
    assert gpu.backend.is_gpu and gpu.names == cpu.names
    got = gpu.batch(**bars)
    want = cpu.batch(**bars)
    assert got.backend == "gpu" and want.backend == "cpu"
    rtol = _rtol() if dtype == "float64" else 1e-6
    for name in cpu.names:
        g, w = np.asarray(got[name]), np.asarray(want[name])
        assert g.dtype == np.dtype(dtype) and g.shape == (40, 3)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"NaN positions of {name}")
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-12 if dtype == "float64" else 1e-5, err_msg=name)


def test_gpu_one_symbol_and_no_vwap():
    bars = _bars(40, 1, seed=3)
    del bars["vwap"]
    one = {k: v[:, 0] for k, v in bars.items()}
    got = FeatureComputer((4,), backend="gpu", macd=MACD).batch(**one)
    want = FeatureComputer((4,), backend="cpu", macd=MACD).batch(**one)
    for name in want.names:
        assert got[name].shape == (40,)
        np.testing.assert_allclose(got[name], want[name], rtol=_rtol(), atol=1e-12, err_msg=name)


def test_importing_features_loads_no_gpu_library():
    code = (
        "import sys, engine.features;"
        "from engine.features import FeatureComputer; FeatureComputer(backend='cpu');"
        "print(any(m.startswith(('cupy', 'numba.cuda')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "NUMBA_ENABLE_CUDASIM": "0"})
    assert out.stdout.strip() == "False"
