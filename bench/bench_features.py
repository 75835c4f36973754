"""Benchmark: the full default feature set over a (bars, symbols) panel against TA-Lib and pandas.

    python bench/bench_features.py                       # 500 symbols x 10,000 bars on the auto backend
    python bench/bench_features.py --quick               # seconds
    python bench/bench_features.py --backend gpu         # on a GPU host: also 5,000 x 10,000

Peers, measured in the same run on the same panel:

- TA-Lib called per symbol for every indicator it has (SMA, EMA, RSI, ATR, STDDEV, BBANDS, MOM, ROC
  per window, MACD): once leaving its per-symbol arrays as they come, once writing them into the same
  ``(bars, symbols)`` panels our batch returns.
- pandas rolling/ewm on the whole DataFrame for what pandas can do (everything except RSI, ATR and
  TA-Lib's MACD seeding).

Figures are ns per output value (wall time / values produced). Ours is timed with a reused output
array (a fresh multi-GB allocation costs page faults that are not the kernels' work). On the GPU the
kernel time is synchronised and excludes the first call's compilation; transfers are reported apart,
and the kernel time is compared with the time the output bytes take at the card's memory bandwidth
(memory clock x bus width x 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_of, machine, write_result  # noqa: E402

from engine.features import FeatureComputer  # noqa: E402

WINDOWS = (5, 10, 20, 50)


def make_panel(n_bars: int, n_symbols: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Random-walk bars: positive prices, high >= max(open, close), volume > 0."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_symbols)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.002, (n_bars, n_symbols)))
    spread = close * rng.uniform(0.0, 0.01, (n_bars, n_symbols))
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.integers(100, 100_000, (n_bars, n_symbols)).astype(np.float64)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def talib_loop(panel: dict[str, np.ndarray], out: np.ndarray | None) -> int:
    """TA-Lib per symbol for every TA-Lib indicator of the set; returns the number of values."""
    import talib  # noqa: PLC0415

    n_bars, n_symbols = panel["close"].shape
    cols = {k: np.ascontiguousarray(panel[k].T) for k in ("high", "low", "close")}  # one row per symbol
    n = 0
    for s in range(n_symbols):
        c, h, lo = cols["close"][s], cols["high"][s], cols["low"][s]
        results = []
        for w in WINDOWS:
            upper, middle, lower = talib.BBANDS(c, w, 2.0, 2.0)
            results += [talib.SMA(c, w), talib.EMA(c, w), talib.RSI(c, w), talib.ATR(h, lo, c, w),
                        talib.STDDEV(c, w), upper, middle, lower, talib.MOM(c, w), talib.ROC(c, w)]
        results += list(talib.MACD(c, 12, 26, 9))
        if out is not None:
            for f, r in enumerate(results):
                out[f, :, s] = r
        n += len(results) * n_bars
    return n


def pandas_features(panel: dict[str, np.ndarray]) -> int:
    """pandas on the whole (bars, symbols) frame for every feature it can express; returns the value count."""
    import pandas as pd  # noqa: PLC0415

    close = pd.DataFrame(panel["close"])
    high = pd.DataFrame(panel["high"])
    low = pd.DataFrame(panel["low"])
    volume = pd.DataFrame(panel["volume"])
    log_return = np.log(close).diff()
    pv = (high + low + close) / 3.0 * volume
    n_values = 0
    for w in WINDOWS:
        mean = close.rolling(w).mean()
        sd = close.rolling(w).std(ddof=0)
        outs = [mean, close.ewm(span=w, adjust=False).mean(), sd, mean + 2 * sd, mean - 2 * sd,
                close.diff(w), close.pct_change(w) * 100.0, np.log(close).diff(w),
                log_return.rolling(w).std(ddof=0), pv.rolling(w).sum() / volume.rolling(w).sum(),
                (volume - volume.rolling(w).mean()) / volume.rolling(w).std(ddof=0)]
        n_values += sum(o.size for o in outs)
    n_values += ((high - low) / close * 1e4).size
    return n_values


def gpu_bandwidth() -> tuple[str, float]:
    """(device name, peak memory bandwidth in bytes/s) from cupy's device attributes."""
    import cupy  # noqa: PLC0415

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    clock_khz = props.get("memoryClockRate", 0)
    bus_bits = props.get("memoryBusWidth", 0)
    if not clock_khz:  # CUDA 13 dropped the field from the properties struct; ask the attribute API
        clock_khz = cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMemoryClockRate, 0)
    if not bus_bits:
        bus_bits = cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrGlobalMemoryBusWidth, 0)
    return name, clock_khz * 1e3 * (bus_bits / 8) * 2


def bench_size(n_symbols: int, n_bars: int, backend: str, dtype: str, repeat: int, peers: bool) -> dict[str, object]:
    panel = make_panel(n_bars, n_symbols)
    fc = FeatureComputer(WINDOWS, backend=backend, dtype=dtype)
    n_values = len(fc.names) * n_bars * n_symbols
    result: dict[str, object] = {
        "symbols": n_symbols, "bars": n_bars, "features": len(fc.names), "values": n_values,
        "backend": fc.backend.name, "dtype": dtype,
    }
    args = (panel["open"], panel["high"], panel["low"], panel["close"], panel["volume"])
    print(f"\n{n_symbols} symbols x {n_bars} bars, {len(fc.names)} features = {n_values:,} values "
          f"({fc.backend.name}, {dtype})")
    t0 = time.perf_counter()
    if fc.backend.is_gpu:
        from gpu_kernels.features import GpuTimings  # noqa: PLC0415

        fc.batch(*(a[:64, : min(8, n_symbols)] for a in args))  # compile outside the timing
        result["compile_s"] = time.perf_counter() - t0
        host_out = fc.new_output(n_bars, n_symbols)
        host_out.fill(0.0)  # touch the pages once, outside the timing
        timings = GpuTimings()
        runs = []
        for _ in range(repeat):
            fc._kernels.compute_feature_panel(  # noqa: SLF001 - the bench needs the phase timings
                panel["high"], panel["low"], panel["close"], panel["volume"], None, np.asarray(WINDOWS),
                fc.macd, fc.dtype, out=host_out, timings=timings)
            runs.append((timings.to_device_s, timings.kernels_s, timings.to_host_s))
        to_dev, kern, to_host = (min(r[i] for r in runs) for i in range(3))
        name, bandwidth = gpu_bandwidth()
        bytes_out = n_values * np.dtype(dtype).itemsize
        bytes_time = bytes_out / bandwidth
        ours = kern
        result.update({
            "gpu": name, "kernel_s": kern, "to_device_s": to_dev, "to_host_s": to_host,
            "end_to_end_s": to_dev + kern + to_host, "output_bytes": bytes_out,
            "peak_bandwidth_GBps": bandwidth / 1e9, "output_bytes_time_s": bytes_time,
            "kernel_over_bytes_time": kern / bytes_time,
        })
        print(f"  GPU {name}: kernels {kern * 1e3:.1f} ms ({kern / n_values * 1e9:.3f} ns/value), "
              f"to device {to_dev * 1e3:.1f} ms, to host {to_host * 1e3:.1f} ms")
        print(f"  output {bytes_out / 1e9:.2f} GB at {bandwidth / 1e9:.0f} GB/s = {bytes_time * 1e3:.1f} ms; "
              f"kernels / bytes time = {kern / bytes_time:.2f}x")
    else:
        fc.batch(*(a[:64, : min(8, n_symbols)] for a in args))  # compile (or load the cache) outside the timing
        result["compile_s"] = time.perf_counter() - t0
        out = fc.new_output(n_bars, n_symbols)
        ours = best_of(lambda: fc.batch(*args, out=out), repeat=repeat, warmup=1)
        del out
    result["ours_s"] = ours
    result["ours_ns_per_value"] = ours / n_values * 1e9
    print(f"  tickforge {fc.backend.name}: {ours:.3f} s, {ours / n_values * 1e9:.3f} ns/value")
    if not peers:
        return result
    try:
        import talib  # noqa: F401, PLC0415

        talib_values = talib_loop(panel, None)  # warm-up and count
        t_bare = best_of(lambda: talib_loop(panel, None), repeat=max(1, repeat - 1), warmup=0)
        panels = np.empty((talib_values // (n_bars * n_symbols), n_bars, n_symbols))
        panels.fill(0.0)
        t_panel = best_of(lambda: talib_loop(panel, panels), repeat=1, warmup=0)
        del panels
        ns_bare = t_bare / talib_values * 1e9
        ns_panel = t_panel / talib_values * 1e9
        ours_ns = ours / n_values * 1e9
        result.update({
            "talib_values": talib_values, "talib_s": t_bare, "talib_ns_per_value": ns_bare,
            "talib_into_panels_s": t_panel, "talib_into_panels_ns_per_value": ns_panel,
            "speedup_vs_talib": ns_bare / ours_ns, "speedup_vs_talib_into_panels": ns_panel / ours_ns,
        })
        print(f"  TA-Lib per symbol: {t_bare:.3f} s for {talib_values:,} values, {ns_bare:.3f} ns/value "
              f"-> tickforge is {ns_bare / ours_ns:.2f}x faster per value")
        print(f"  TA-Lib into (bars, symbols) panels: {t_panel:.3f} s, {ns_panel:.3f} ns/value "
              f"-> tickforge is {ns_panel / ours_ns:.2f}x faster per value")
    except ImportError:
        print("  TA-Lib is not installed: no TA-Lib figure")
    try:
        pandas_values = pandas_features(panel)
        t_pd = best_of(lambda: pandas_features(panel), repeat=1, warmup=0)
        ns_pd = t_pd / pandas_values * 1e9
        result.update({"pandas_values": pandas_values, "pandas_s": t_pd, "pandas_ns_per_value": ns_pd,
                       "speedup_vs_pandas": ns_pd / (ours / n_values * 1e9)})
        print(f"  pandas rolling: {t_pd:.3f} s for {pandas_values:,} values, {ns_pd:.3f} ns/value "
              f"-> tickforge is {ns_pd / (ours / n_values * 1e9):.2f}x faster per value")
    except ImportError:
        print("  pandas is not installed: no pandas figure")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=10_000)
    parser.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a seconds-long run (50 x 2,000, one repeat)")
    parser.add_argument("--no-peers", action="store_true", help="time tickforge only")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.symbols, args.bars, args.repeat = min(args.symbols, 50), min(args.bars, 2_000), 1
    info = machine()
    print(f"machine: {info}")
    fc = FeatureComputer(WINDOWS, backend=args.backend)
    sizes = [(args.symbols, args.bars)]
    if fc.backend.is_gpu and not fc.backend.simulator:
        name, _ = gpu_bandwidth()
        os.environ.setdefault("TICKFORGE_BENCH_GPU_NAME", name)
        if not args.quick and (5_000, 10_000) not in sizes:
            sizes.append((5_000, 10_000))
    runs = [bench_size(s, b, args.backend, args.dtype, args.repeat, not args.no_peers) for s, b in sizes]
    if not args.no_write:
        write_result("features", {"windows": list(WINDOWS), "quick": args.quick, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
