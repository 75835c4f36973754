"""Benchmark: trades per second into all 11 time bars (1s .. 1d) at once on one core, ours (numba) against
pandas (a groupby over (symbol, window) per timeframe, the fast pandas idiom) on the same trades in the
same run.

Two streams: "dense" (100 symbols, 1 hour: ~28 trades/s per symbol, most trades land in an open 1s bar)
and "sparse" (1,000 symbols over 6.5 hours: ~0.4 trades/s per symbol, most trades open a new 1s bar).

    python bench/bench_bars.py            # 5,000,000 trades per stream
    python bench/bench_bars.py --quick    # 500,000 trades per stream, a few seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, machine, write_result  # noqa: E402
from engine.bars import DEFAULT_TIMEFRAMES, BarAggregator, timeframe_seconds  # noqa: E402
from engine.events import TRADE_DTYPE  # noqa: E402

S = 1_000_000_000
T0 = 19_700 * 86_400 * S + 13 * 3600 * S + 30 * 60 * S  # 13:30 UTC


def make_trades(n: int, n_symbols: int, span_s: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=TRADE_DTYPE)
    ts = T0 + np.sort(rng.integers(0, int(span_s * S), n))
    out["ts_ns"] = ts
    out["recv_ns"] = ts + 50_000
    out["symbol_id"] = rng.integers(0, n_symbols, n)
    base = rng.uniform(10, 500, n_symbols)
    out["price"] = np.round(base[out["symbol_id"]] * np.exp(np.cumsum(rng.normal(0, 2e-5, n))), 2)
    out["size"] = rng.integers(1, 1_000, n).astype(np.float64)
    out["trade_id"] = np.arange(n)
    return out


def ours(trades: np.ndarray, n_symbols: int, activity: bool = False) -> int:
    extra = {"tick_bars": [500], "volume_bars": [50_000.0], "value_bars": [5e6]} if activity else {}
    agg = BarAggregator(n_symbols, **extra)
    return len(agg.add_trades(trades))


def ours_frames(trades: np.ndarray, n_symbols: int, frame: int = 1_000) -> int:
    agg = BarAggregator(n_symbols)
    return sum(len(agg.add_trades(trades[j : j + frame])) for j in range(0, len(trades), frame))


def pandas_peer(trades: np.ndarray) -> dict[int, object]:
    import pandas as pd

    df = pd.DataFrame({"symbol": trades["symbol_id"], "ts": trades["ts_ns"], "price": trades["price"], "size": trades["size"]})
    df["pv"] = df["price"] * df["size"]
    out = {}
    for name in DEFAULT_TIMEFRAMES:
        tf = timeframe_seconds(name) * S
        g = df.groupby([df["symbol"], df["ts"] // tf], sort=False)
        bars = g.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                     volume=("size", "sum"), pv=("pv", "sum"), count=("price", "size"))
        bars["vwap"] = bars["pv"] / bars["volume"]
        out[tf] = bars
    return out


def check_against_pandas(trades: np.ndarray, n_symbols: int) -> None:
    agg = BarAggregator(n_symbols)
    got = np.concatenate([agg.add_trades(trades).bars, agg.close_all().bars])
    want = pandas_peer(trades)
    assert len(got) == sum(len(b) for b in want.values()), "bar counts differ from pandas"


def run_stream(label: str, trades: np.ndarray, n_symbols: int, repeat: int) -> dict[str, float]:
    n = len(trades)
    ours(trades[:1000], n_symbols, activity=True)  # compile / load before timing
    t_ours = best_of(lambda: ours(trades, n_symbols), repeat)
    t_act = best_of(lambda: ours(trades, n_symbols, activity=True), repeat)
    t_frames = best_of(lambda: ours_frames(trades, n_symbols), max(1, repeat - 2))
    t_pandas = best_of(lambda: pandas_peer(trades), 1, warmup=0)
    bars = ours(trades, n_symbols)
    row = {
        "trades": n,
        "symbols": n_symbols,
        "bars_emitted": bars,
        "tickforge_trades_per_s": n / t_ours,
        "tickforge_with_tick_volume_value_bars_trades_per_s": n / t_act,
        "tickforge_frames_of_1000_trades_per_s": n / t_frames,
        "pandas_trades_per_s": n / t_pandas,
        "ratio_ours_over_pandas": t_pandas / t_ours,
    }
    print(f"{label}: {n:,} trades, {n_symbols} symbols, {bars:,} bars emitted")
    for key in ("tickforge_trades_per_s", "tickforge_with_tick_volume_value_bars_trades_per_s",
                "tickforge_frames_of_1000_trades_per_s", "pandas_trades_per_s"):
        print(f"  {key:<56}{row[key] / 1e6:>9.2f} M/s")
    print(f"  ours / pandas: {row['ratio_ours_over_pandas']:.1f}x")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500k trades per stream: a few seconds")
    args = parser.parse_args()
    n = 500_000 if args.quick else 5_000_000
    repeat = 3 if args.quick else 5
    print(f"machine: {machine()}")
    t0 = time.perf_counter()
    dense = make_trades(n, 100, 3600)
    sparse = make_trades(n, 1_000, 6.5 * 3600, seed=2)
    check_against_pandas(dense[:200_000], 100)
    print(f"streams generated and checked in {time.perf_counter() - t0:.1f}s")
    result = {
        "timeframes": list(DEFAULT_TIMEFRAMES),
        "dense": run_stream("dense", dense, 100, repeat),
        "sparse": run_stream("sparse", sparse, 1_000, repeat),
    }
    print(f"target: >= 20 M trades/s into all 11 timeframes on one core -> dense "
          f"{result['dense']['tickforge_trades_per_s'] / 1e6:.1f} M/s, sparse {result['sparse']['tickforge_trades_per_s'] / 1e6:.1f} M/s")
    write_result("bars" + ("-quick" if args.quick else ""), result)


if __name__ == "__main__":
    main()
