"""The features job end to end: Parquet bars in, features out, each symbol equal to TA-Lib on that symbol alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import talib

from engine.batch import JobSummary, PanelLayout, compute_features, order_bars, plan_groups
from engine.cli import main
from engine.sample import synthetic_bars

REPO = Path(__file__).resolve().parent.parent
JOB = ["--windows", "5,14,20", "--backend", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def bars() -> pa.Table:
    # 12 symbols of 60-400 bars with gaps; plus a symbol with one bar and one shorter than every window.
    table = synthetic_bars(12, 400, seed=11)
    tiny = synthetic_bars(1, 400, seed=3).slice(0, 8)
    tiny = tiny.set_column(0, "symbol", pa.array(["ZZA"] + ["ZZB"] * 7))
    return pa.concat_tables([table, tiny])


@pytest.fixture(scope="module")
def bars_file(bars: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "bars.parquet"
    # Interleave the symbols (rows in time order across the universe), as a merged download would be.
    order = np.lexsort((bars["symbol"].to_numpy(zero_copy_only=False), bars["timestamp"].to_numpy()))
    pq.write_table(bars.take(pa.array(order)), path)
    return path


@pytest.fixture(scope="module")
def features(bars_file: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    out = tmp_path_factory.mktemp("features") / "features.parquet"
    # A small budget forces several symbol groups.
    assert main(["features", "--input", str(bars_file), "--output", str(out), *JOB, "--memory-budget-mb", "0.2"]) == 0
    return pq.read_table(out)


def assert_same_table(actual: pa.Table, expected: pa.Table) -> None:
    """Equal schema and keys, and every feature value equal bit for bit (NaN included)."""
    assert actual.schema.remove_metadata() == expected.schema.remove_metadata()
    assert actual.select(["symbol", "timestamp"]).equals(expected.select(["symbol", "timestamp"]))
    for name in actual.column_names[2:]:
        a, e = actual[name].to_numpy(zero_copy_only=False), expected[name].to_numpy(zero_copy_only=False)
        uint = np.uint32 if a.dtype == np.float32 else np.uint64
        np.testing.assert_array_equal(a.view(uint), e.view(uint), err_msg=name)


def symbol_rows(table: pa.Table, symbol: str) -> pa.Table:
    return table.filter(pc.equal(table["symbol"], symbol))


def assert_matches(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-9, atol: float = 0.0) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(actual[ok], expected[ok], rtol=rtol, atol=atol)


TALIB_ORACLE = {
    "sma_20": lambda o, h, lo, c, v: talib.SMA(c, 20),
    "ema_5": lambda o, h, lo, c, v: talib.EMA(c, 5),
    "rsi_14": lambda o, h, lo, c, v: talib.RSI(c, 14),
    "atr_14": lambda o, h, lo, c, v: talib.ATR(h, lo, c, 14),
    "bb_upper_20": lambda o, h, lo, c, v: talib.BBANDS(c, 20, 2.0, 2.0)[0],
    "macd": lambda o, h, lo, c, v: talib.MACD(c)[0],
}


def test_output_keys_are_the_input_keys_ordered_by_symbol_then_time(bars: pa.Table, features: pa.Table) -> None:
    expected = bars.select(["symbol", "timestamp"]).sort_by([("symbol", "ascending"), ("timestamp", "ascending")])
    assert features.select(["symbol", "timestamp"]).equals(expected)
    assert features.schema.field("timestamp").type == bars.schema.field("timestamp").type
    assert {"sma_20", "ema_5", "rsi_14"} <= set(features.column_names)


def test_each_symbol_equals_talib_on_that_symbol_alone(bars: pa.Table, features: pa.Table) -> None:
    counts = {r["values"]: r["counts"] for r in pc.value_counts(bars["symbol"]).to_pylist()}
    shortest, longest = min(counts, key=counts.get), max(counts, key=counts.get)
    checked = 0
    for symbol in sorted({shortest, longest, "AAA", "AAF", "ZZB"}):
        src = symbol_rows(bars, symbol)
        ohlcv = [src[c].to_numpy().astype(np.float64) for c in ("open", "high", "low", "close", "volume")]
        out = symbol_rows(features, symbol)
        assert out.num_rows == src.num_rows
        for name, oracle in TALIB_ORACLE.items():
            if name in features.column_names:
                assert_matches(out[name].to_numpy(zero_copy_only=False), oracle(*ohlcv))
                checked += 1
    assert checked >= 15


def test_symbols_too_short_for_a_window_are_nan_not_dropped(features: pa.Table) -> None:
    single = symbol_rows(features, "ZZA")
    assert single.num_rows == 1
    assert np.isnan(single["sma_5"].to_numpy(zero_copy_only=False)).all()
    short = symbol_rows(features, "ZZB")  # 7 bars: sma_5 defined from its 5th bar, sma_20 never
    sma5 = short["sma_5"].to_numpy(zero_copy_only=False)
    assert np.isnan(sma5[:4]).all() and np.isfinite(sma5[4:]).all()
    assert np.isnan(short["sma_20"].to_numpy(zero_copy_only=False)).all()


def test_group_size_does_not_change_a_single_bit(bars_file: Path, features: pa.Table, tmp_path: Path) -> None:
    one_group = compute_features(bars_file, tmp_path / "one.parquet", windows="5,14,20", backend="cpu", progress=False)
    per_symbol = compute_features(
        bars_file, tmp_path / "many.parquet", windows=(20, 14, 5), backend="cpu", progress=False, memory_budget_mb=1e-6
    )
    assert isinstance(one_group, JobSummary) and one_group.n_groups == 1
    assert per_symbol.n_groups == per_symbol.n_symbols == 14
    assert one_group.n_rows == features.num_rows and one_group.feature_names == tuple(features.column_names[2:])
    assert_same_table(pq.read_table(tmp_path / "one.parquet"), features)
    assert_same_table(pq.read_table(tmp_path / "many.parquet"), features)


def test_directory_input_with_int_timestamps(bars: pa.Table, features: pa.Table, tmp_path: Path) -> None:
    src = tmp_path / "bars"
    src.mkdir()
    as_int = bars.set_column(1, "timestamp", bars["timestamp"].cast(pa.int64()))
    is_first_half = pc.less(as_int["symbol"], "AAG")
    pq.write_table(as_int.filter(is_first_half), src / "a.parquet")
    pq.write_table(as_int.filter(pc.invert(is_first_half)), src / "b.parquet")
    out = tmp_path / "features.parquet"
    assert main(["features", "--input", str(src), "--output", str(out), *JOB]) == 0
    result = pq.read_table(out)
    assert result.schema.field("timestamp").type == pa.int64()
    assert_same_table(result, features.set_column(1, "timestamp", features["timestamp"].cast(pa.int64())))


def test_hive_partitioned_by_symbol(bars: pa.Table, features: pa.Table, tmp_path: Path) -> None:
    src = tmp_path / "bars"
    pq.write_to_dataset(bars, src, partition_cols=["symbol"])  # symbol=AAA/....parquet, as a data lake keeps it
    out = tmp_path / "features.parquet"
    assert main(["features", "--input", str(src), "--output", str(out), *JOB]) == 0
    assert_same_table(pq.read_table(out), features)


def test_gpu_backend_matches_the_cpu_job(tmp_path: Path) -> None:
    """The job's GPU dispatch (the numba CUDA simulator in CI, a real device where there is one)."""
    from engine.backend import BackendError, resolve_backend

    try:
        resolve_backend("gpu")
    except BackendError as exc:
        pytest.skip(str(exc))
    src = tmp_path / "bars.parquet"
    pq.write_table(synthetic_bars(3, 40, seed=2), src)  # the simulator is slow: a tiny universe
    argv = ["features", "--input", str(src), "--windows", "5", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "gpu.parquet"), "--backend", "gpu"]) == 0
    assert main([*argv, "--output", str(tmp_path / "cpu.parquet"), "--backend", "cpu"]) == 0
    gpu, cpu = pq.read_table(tmp_path / "gpu.parquet"), pq.read_table(tmp_path / "cpu.parquet")
    assert gpu.select(["symbol", "timestamp"]).equals(cpu.select(["symbol", "timestamp"]))
    for name in cpu.column_names[2:]:
        assert_matches(gpu[name].to_numpy(zero_copy_only=False), cpu[name].to_numpy(zero_copy_only=False))


def test_float32_output(bars_file: Path, bars: pa.Table, tmp_path: Path) -> None:
    out = tmp_path / "f32.parquet"
    assert main(["features", "--input", str(bars_file), "--output", str(out), *JOB, "--dtype", "float32"]) == 0
    result = pq.read_table(out)
    assert all(result.schema.field(n).type == pa.float32() for n in result.column_names[2:])
    src, got = symbol_rows(bars, "AAA"), symbol_rows(result, "AAA")
    close = src["close"].to_numpy()
    assert_matches(got["sma_20"].to_numpy(zero_copy_only=False).astype(np.float64), talib.SMA(close, 20), rtol=1e-5)
    assert_matches(got["ema_5"].to_numpy(zero_copy_only=False).astype(np.float64), talib.EMA(close, 5), rtol=1e-5)
    assert_matches(got["rsi_14"].to_numpy(zero_copy_only=False).astype(np.float64), talib.RSI(close, 14), atol=1e-3)


def test_runs_as_a_module_in_a_subprocess(bars_file: Path, features: pa.Table, tmp_path: Path) -> None:
    out = tmp_path / "sub.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "engine", "features", "--input", str(bars_file), "--output", str(out), *JOB],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    assert_same_table(pq.read_table(out), features)

    bad = subprocess.run(
        [sys.executable, "-m", "engine", "features", "--input", str(tmp_path / "nope.parquet"), "--output", str(out), *JOB],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("tickforge features: error: input not found")
    assert "Traceback" not in bad.stderr


def test_sample_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "demo"
    argv = ["features", "--sample", "--output", str(out_dir), "--sample-symbols", "6", "--sample-bars", "120", *JOB]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out_dir / "bars.parquet") in printed and str(out_dir / "features.parquet") in printed
    assert "last 5 rows of AAA" in printed
    bars_table, result = pq.read_table(out_dir / "bars.parquet"), pq.read_table(out_dir / "features.parquet")
    assert bars_table.equals(synthetic_bars(6, 120, seed=7))
    assert result.num_rows == bars_table.num_rows
    assert main(argv) == 0  # a second run replaces the demo files


def test_synthetic_bars_look_like_minute_bars() -> None:
    table = synthetic_bars(30, 800, seed=5)
    assert table.equals(synthetic_bars(30, 800, seed=5))
    assert not table.equals(synthetic_bars(30, 800, seed=6))
    o, h, lo, c = (table[n].to_numpy() for n in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all()
    vw = table["vwap"].to_numpy()
    assert ((vw >= lo) & (vw <= h)).all() and (table["volume"].to_numpy() > 0).all()
    universe = order_bars(table)  # validation passes: sorted, no duplicates, all finite
    lengths = universe.lengths
    assert len(lengths) == 30 and lengths.min() >= 400 - 40 and lengths.max() <= 800 and lengths.min() < lengths.max()
    steps = np.diff(table["timestamp"].cast(pa.int64()).to_numpy())
    minute = 60 * 10**9
    assert (steps[steps > 0] % minute == 0).all()
    assert ((steps > minute) & (steps < 3600 * 10**9)).any()  # intraday gaps
    assert (steps > 12 * 3600 * 10**9).any()  # overnight gaps


def test_panel_layout_round_trip() -> None:
    offsets = np.array([0, 3, 3 + 1, 3 + 1 + 5], dtype=np.int64)
    values = np.arange(9, dtype=np.float64) + 1
    layout = PanelLayout.for_group(offsets, 0, 3)
    panel = layout.panel(values, np.dtype("float64"))
    assert panel.shape == (5, 3)
    np.testing.assert_array_equal(panel[:, 0], [1, 2, 3, np.nan, np.nan])
    np.testing.assert_array_equal(panel[:, 1], [4, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(panel[:, 2], [5, 6, 7, 8, 9])
    np.testing.assert_array_equal(layout.long(panel), values)
    tail = PanelLayout.for_group(offsets, 1, 3)
    np.testing.assert_array_equal(tail.long(tail.panel(values, np.dtype("float32"))), values[3:])


def test_plan_groups_respects_the_budget_on_both_sides() -> None:
    lengths = np.array([10, 40, 20, 5, 30, 30, 100], dtype=np.int64)
    cells_for_two = 2 * 40
    groups = plan_groups(lengths, bytes_per_cell=8, budget_bytes=8 * cells_for_two)
    assert groups[0] == (0, 2)  # 2 x 40 cells fit exactly; a third symbol would not
    assert groups[-1] == (6, 7)  # longer than the whole budget: a group of its own
    covered = [k for start, stop in groups for k in range(start, stop)]
    assert covered == list(range(len(lengths)))
    for start, stop in groups:
        if stop - start > 1:
            assert lengths[start:stop].max() * (stop - start) <= cells_for_two
    assert plan_groups(lengths, 8, 8 * cells_for_two - 1)[0] == (0, 1)
    assert plan_groups(lengths, 8, 10**12) == [(0, 7)]
