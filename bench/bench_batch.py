"""Benchmark: the single-machine features job vs the usual pandas + TA-Lib loop over symbols.

Both sides go end to end on the same synthetic Parquet universe: read the bars, compute the same
feature set per symbol (TA-Lib for what it has, pandas rolling windows for the rest), write Parquet.
The peer is what a user writes without tickforge: ``groupby("symbol")`` and one TA-Lib call per
indicator and symbol. Spot checks confirm both sides computed the same numbers.

    python bench/bench_batch.py           # 1,000 symbols x 2,000 one-minute bars
    python bench/bench_batch.py --quick   # seconds
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import talib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, machine, write_result  # noqa: E402
from engine.batch import compute_features  # noqa: E402
from engine.sample import synthetic_bars  # noqa: E402

WINDOWS = (5, 10, 20, 50)


def peer_features(bars: pd.DataFrame, windows: tuple[int, ...]) -> pd.DataFrame:
    """The per-symbol loop: TA-Lib for the classic indicators, pandas rolling for the rest."""
    frames = []
    for _, g in bars.groupby("symbol", sort=True):
        o, h, lo, c, v = (g[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume"))
        vw = g["vwap"].to_numpy(np.float64)
        out: dict[str, np.ndarray] = {"symbol": g["symbol"].to_numpy(), "timestamp": g["timestamp"].to_numpy()}
        log_ret = pd.Series(np.log(c)).diff()
        pv, vol = pd.Series(vw * v), pd.Series(v)
        for w in windows:
            out[f"sma_{w}"] = talib.SMA(c, w)
            out[f"ema_{w}"] = talib.EMA(c, w)
            out[f"rsi_{w}"] = talib.RSI(c, w)
            out[f"atr_{w}"] = talib.ATR(h, lo, c, w)
            out[f"stddev_{w}"] = talib.STDDEV(c, w)
            out[f"bb_upper_{w}"], out[f"bb_middle_{w}"], out[f"bb_lower_{w}"] = talib.BBANDS(c, w, 2.0, 2.0)
            out[f"mom_{w}"] = talib.MOM(c, w)
            out[f"roc_{w}"] = talib.ROC(c, w)
            out[f"logret_{w}"] = np.log(c / pd.Series(c).shift(w).to_numpy())
            out[f"vol_{w}"] = log_ret.rolling(w).std(ddof=0).to_numpy()
            out[f"vwap_{w}"] = (pv.rolling(w).sum() / vol.rolling(w).sum()).to_numpy()
            out[f"volz_{w}"] = ((vol - vol.rolling(w).mean()) / vol.rolling(w).std(ddof=0)).to_numpy()
        out["macd"], out["macd_signal"], out["macd_hist"] = talib.MACD(c)
        out["range_bps"] = (h - lo) / c * 1e4
        frames.append(pd.DataFrame(out))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small universe, one repeat")
    parser.add_argument("--backend", default="cpu", help="the job's backend: cpu | gpu | auto (default cpu)")
    parser.add_argument("--symbols", type=int, default=None, help="override the universe's symbol count")
    parser.add_argument("--bars", type=int, default=None, help="override the longest symbol's bar count")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n_symbols, n_bars, repeat = (100, 500, 1) if args.quick else (1_000, 2_000, 3)
    n_symbols, n_bars = args.symbols or n_symbols, args.bars or n_bars
    stages: dict[str, float] = {}  # of the fastest run
    used_backend = [args.backend]

    work = Path(tempfile.mkdtemp(prefix="tickforge-bench-"))
    try:
        bars = synthetic_bars(n_symbols, n_bars, seed=1)
        src = work / "bars.parquet"
        pq.write_table(bars, src)
        print(f"universe: {n_symbols} symbols, {bars.num_rows} bars; machine: {machine()}")

        def ours() -> None:
            summary = compute_features(src, work / "ours.parquet", windows=WINDOWS, backend=args.backend, progress=False)
            if not stages or summary.seconds < stages["total"]:
                stages.clear()
                stages.update(summary.stage_seconds, total=summary.seconds)
                used_backend[0] = summary.backend

        def peer() -> None:
            frame = pd.read_parquet(src)
            peer_features(frame, WINDOWS).to_parquet(work / "peer.parquet", index=False)

        t_ours = best_of(ours, repeat=repeat, warmup=1)
        t_peer = best_of(peer, repeat=repeat, warmup=0)

        ours_table, peer_table = pq.read_table(work / "ours.parquet"), pq.read_table(work / "peer.parquet")
        names = ours_table.column_names[2:]
        same_names = sorted(names) == sorted(peer_table.column_names[2:])
        checked = {}
        for name in ("sma_20", "ema_10", "rsi_14" if "rsi_14" in names else "rsi_20", "atr_20", "bb_upper_50", "macd"):
            if name in names and name in peer_table.column_names:
                a, b = ours_table[name].to_numpy(zero_copy_only=False), peer_table[name].to_numpy(zero_copy_only=False)
                ok = ~np.isnan(b)
                checked[name] = bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(a[ok], b[ok], rtol=1e-9))

        result = {
            "universe": {"symbols": n_symbols, "bars_max": n_bars, "rows": bars.num_rows, "features": len(names), "windows": list(WINDOWS)},
            "backend": used_backend[0],
            "tickforge_job": {
                "seconds": t_ours, "rows_per_s": bars.num_rows / t_ours, "symbols_per_s": n_symbols / t_ours,
                "stages_s": dict(stages),
            },
            "peer_pandas_talib_loop": {"seconds": t_peer, "rows_per_s": bars.num_rows / t_peer, "symbols_per_s": n_symbols / t_peer},
            "speedup_vs_peer": t_peer / t_ours,
            "same_feature_names": same_names,
            "talib_agreement": checked,
            "quick": args.quick,
        }
        stage_text = ", ".join(f"{k} {v:.3f} s" for k, v in stages.items())
        print(f"tickforge features job : {t_ours:8.3f} s  {bars.num_rows / t_ours / 1e6:6.2f} M rows/s  "
              f"[{used_backend[0]}: {stage_text}]")
        print(f"pandas + TA-Lib loop   : {t_peer:8.3f} s  {bars.num_rows / t_peer / 1e6:6.2f} M rows/s")
        print(f"speed-up vs peer: {t_peer / t_ours:.1f}x   same feature set: {same_names}   agreement: {checked}")
        write_result("batch" + ("-quick" if args.quick else ""), result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
