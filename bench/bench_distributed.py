"""Benchmark: the features job in one process vs on a Dask LocalCluster of 2 workers, and the cost of a group.

Both sides run the same job (``engine.batch.compute_features`` / ``engine.distributed.run_job``) on the
same synthetic Parquet universe, CPU backend, end to end (read, validate, compute, write). The cluster is
started once and warmed up (each worker compiles or loads its kernels) before timing; its start-up time is
reported on its own. The per-group overhead is the slope of job time against the number of groups, from
a run cut into one group per symbol and a run cut into two groups.

    python bench/bench_distributed.py           # 1,000 symbols x 2,000 bars
    python bench/bench_distributed.py --quick   # seconds
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, machine, write_result  # noqa: E402
from engine.batch import compute_features, feature_names, panel_cell_bytes  # noqa: E402
from engine.distributed import run_job  # noqa: E402
from engine.sample import synthetic_bars  # noqa: E402

WINDOWS = (5, 10, 20, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small universe, one repeat")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n_symbols, n_bars, repeat = (120, 500, 1) if args.quick else (1_000, 2_000, 3)
    overhead_symbols, overhead_bars = (40, 200) if args.quick else (200, 300)

    from distributed import LocalCluster

    # Importing distributed sets its own log levels; the cluster narrates every start and stop at INFO.
    logging.getLogger("distributed").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="tickforge-bench-"))
    try:
        bars = synthetic_bars(n_symbols, n_bars, seed=1)
        src = work / "bars.parquet"
        pq.write_table(bars, src)
        small = synthetic_bars(overhead_symbols, overhead_bars, seed=2)
        small_src = work / "small.parquet"
        pq.write_table(small, small_src)
        names = feature_names(WINDOWS)
        cell_bytes = panel_cell_bytes(6, len(names), "float64")
        print(f"universe: {n_symbols} symbols, {bars.num_rows} bars, {len(names)} features; machine: {machine()}")

        def single() -> None:
            compute_features(src, work / "single.parquet", windows=WINDOWS, backend="cpu", progress=False)

        t_single = best_of(single, repeat=repeat, warmup=1)

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
        t_start = time.perf_counter() - t0
        try:
            address = cluster.scheduler_address
            counter = iter(range(10**6))

            def on_cluster(source: Path, budget_mb: float) -> int:
                out = work / f"dist-{next(counter)}"
                summary = run_job(
                    source, out, windows=WINDOWS, backend="cpu", dtype="float64", progress=False,
                    memory_budget_mb=budget_mb, scheduler=address,
                )
                shutil.rmtree(out)
                return summary.n_groups

            # Groups of a quarter of the universe: both workers busy, a few parts.
            quarter_mb = _budget_for(bars_lengths(src), cell_bytes, parts=4)
            groups = on_cluster(src, quarter_mb)
            t_dist = best_of(lambda: on_cluster(src, quarter_mb), repeat=repeat, warmup=1)

            many_groups = on_cluster(small_src, 1e-9)  # one symbol per group
            two_mb = _budget_for(bars_lengths(small_src), cell_bytes, parts=2)
            few_groups = on_cluster(small_src, two_mb)
            t_many = best_of(lambda: on_cluster(small_src, 1e-9), repeat=repeat, warmup=0)
            t_few = best_of(lambda: on_cluster(small_src, two_mb), repeat=repeat, warmup=0)
        finally:
            cluster.close()

        per_group_s = (t_many - t_few) / max(1, many_groups - few_groups)
        result = {
            "universe": {"symbols": n_symbols, "bars_max": n_bars, "rows": bars.num_rows, "features": len(names), "windows": list(WINDOWS)},
            "backend": "cpu",
            "single_process": {"seconds": t_single, "symbols_per_s": n_symbols / t_single, "rows_per_s": bars.num_rows / t_single},
            "local_cluster_2_workers": {
                "seconds": t_dist, "symbols_per_s": n_symbols / t_dist, "rows_per_s": bars.num_rows / t_dist,
                "groups": groups, "cluster_start_s": t_start,
            },
            "speedup_cluster_vs_single": t_single / t_dist,
            "per_group_overhead": {
                "symbols": overhead_symbols, "groups_many": many_groups, "groups_few": few_groups,
                "seconds_many": t_many, "seconds_few": t_few, "seconds_per_group": per_group_s,
            },
            "quick": args.quick,
        }
        print(f"single process     : {t_single:8.3f} s  {n_symbols / t_single:10.1f} symbols/s")
        print(f"LocalCluster x2    : {t_dist:8.3f} s  {n_symbols / t_dist:10.1f} symbols/s  ({groups} groups; start-up {t_start:.2f} s)")
        print(f"ratio cluster/single throughput: {t_single / t_dist:.2f}x")
        print(f"per-group overhead : {per_group_s * 1e3:.1f} ms ({many_groups} groups {t_many:.3f} s vs {few_groups} groups {t_few:.3f} s)")
        write_result("distributed" + ("-quick" if args.quick else ""), result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bars_lengths(path: Path) -> np.ndarray:
    import pyarrow.compute as pc

    counts = pc.value_counts(pq.read_table(path, columns=["symbol"])["symbol"])
    return counts.field("counts").to_numpy()


def _budget_for(lengths: np.ndarray, cell_bytes: int, parts: int) -> float:
    """A memory budget (MiB) that cuts the universe into about ``parts`` groups."""
    cells = int(lengths.max()) * -(-len(lengths) // parts)
    return cells * cell_bytes / 2**20


if __name__ == "__main__":
    main()
