"""The features job on a real Dask LocalCluster: same bits as one machine, survives a dead worker, resumes."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from engine.batch import compute_features
from engine.cli import main
from engine.distributed import MANIFEST, ClusterError, read_dataset, run_job
from engine.errors import InputError
from engine.sample import synthetic_bars
from test_batch import assert_same_table

WINDOWS = (5, 14, 20)
SMALL_BUDGET_MB = "0.15"  # several groups out of 16 symbols


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dbars") / "bars.parquet"
    pq.write_table(synthetic_bars(16, 300, seed=23), path)
    return path


@pytest.fixture(scope="module")
def single_machine(bars_file: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    out = tmp_path_factory.mktemp("single") / "features.parquet"
    compute_features(bars_file, out, windows=WINDOWS, backend="cpu", progress=False)
    return pq.read_table(out)


def distributed_job(bars_file: Path, out: Path, cluster: object, *extra: str) -> int:
    return main([
        "features", "--input", str(bars_file), "--output", str(out), "--windows", "5,14,20", "--backend", "cpu",
        "--no-progress", "--memory-budget-mb", SMALL_BUDGET_MB, "--scheduler", cluster.scheduler_address, *extra,  # type: ignore[attr-defined]
    ])


def exit_worker_once(marker: str, index: int, tmp_part: Path) -> None:
    """Part hook: the first time group 1 has written its temporary part, its worker process dies."""
    if index == 1 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)


def fail_group(index: int, tmp_part: Path, bad: int = 2) -> None:
    if index == bad:
        raise RuntimeError("disk full (injected)")


def assert_each_symbol_once(out: Path, bars_file: Path) -> None:
    table = read_dataset(out)
    expected = pc.value_counts(pq.read_table(bars_file)["symbol"]).to_pylist()
    assert pc.value_counts(table["symbol"]).to_pylist() == expected
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_same_bits_as_the_single_machine_job(
    cluster: object, bars_file: Path, single_machine: pa.Table, tmp_path: Path
) -> None:
    out = tmp_path / "features"
    assert distributed_job(bars_file, out, cluster) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    groups = manifest["groups"]
    assert manifest["complete"] and len(groups) > 2
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [g["part"] for g in groups]
    symbols = [s for g in groups for s in g["symbols"]]
    assert symbols == sorted(set(symbols)) and len(symbols) == 16
    assert sum(g["rows"] for g in groups) == manifest["n_rows"] == single_machine.num_rows
    assert {g["backend"] for g in groups} == {"cpu"}
    assert manifest["feature_names"] == single_machine.column_names[2:]
    assert_same_table(read_dataset(out), single_machine)
    assert_same_table(pq.read_table(out), single_machine)  # any Parquet reader, parts in name order


def test_a_worker_dying_mid_write_reruns_its_group_once(
    cluster: object, bars_file: Path, single_machine: pa.Table, tmp_path: Path
) -> None:
    marker = tmp_path / "worker-died"
    out = tmp_path / "features"
    summary = run_job(
        bars_file, out, windows=WINDOWS, backend="cpu", dtype="float64", progress=False, memory_budget_mb=float(SMALL_BUDGET_MB),
        scheduler=cluster.scheduler_address, part_hook=functools.partial(exit_worker_once, str(marker)),  # type: ignore[attr-defined]
    )
    assert marker.exists()  # the worker really died
    assert summary.n_groups > 2 and summary.n_symbols == 16
    assert_each_symbol_once(out, bars_file)
    assert_same_table(read_dataset(out), single_machine)


def test_resume_skips_written_groups_and_redoes_missing_or_broken_ones(
    cluster: object, bars_file: Path, single_machine: pa.Table, tmp_path: Path
) -> None:
    out = tmp_path / "features"
    assert distributed_job(bars_file, out, cluster) == 0
    parts = sorted(out.glob("part-*.parquet"))
    parts[1].unlink()
    parts[2].write_bytes(parts[2].read_bytes()[:100])  # truncated: not a valid part any more
    untouched = {p.name: p.stat().st_mtime_ns for p in parts[3:]}

    summary = run_job(
        bars_file, out, windows=WINDOWS, backend="cpu", dtype="float64", progress=False,
        memory_budget_mb=float(SMALL_BUDGET_MB), scheduler=cluster.scheduler_address, resume=True,  # type: ignore[attr-defined]
    )
    assert summary.groups_skipped == len(parts) - 2
    assert {p.name: p.stat().st_mtime_ns for p in parts[3:]} == untouched
    assert_each_symbol_once(out, bars_file)
    assert_same_table(read_dataset(out), single_machine)


def test_a_failing_group_keeps_finished_parts_for_resume(
    cluster: object, bars_file: Path, single_machine: pa.Table, tmp_path: Path
) -> None:
    out = tmp_path / "features"
    with pytest.raises(ClusterError, match="group 2 failed on the cluster .*disk full.*--resume"):
        run_job(
            bars_file, out, windows=WINDOWS, backend="cpu", dtype="float64", progress=False,
            memory_budget_mb=float(SMALL_BUDGET_MB), scheduler=cluster.scheduler_address, part_hook=fail_group,  # type: ignore[attr-defined]
        )
    manifest = json.loads((out / MANIFEST).read_text())
    assert not manifest["complete"] and not manifest["groups"][2]["done"]
    with pytest.raises(InputError, match="incomplete"):
        read_dataset(out)
    assert distributed_job(bars_file, out, cluster, "--resume") == 0
    assert_each_symbol_once(out, bars_file)
    assert_same_table(read_dataset(out), single_machine)


def test_refusals(cluster: object, bars_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "features"
    assert distributed_job(bars_file, out, cluster) == 0
    capsys.readouterr()

    assert distributed_job(bars_file, out, cluster) == 2  # would overwrite without --resume
    assert "already exists and is not empty; pass --resume" in capsys.readouterr().err
    assert main([
        "features", "--input", str(bars_file), "--output", str(out), "--windows", "5,20", "--backend", "cpu",
        "--no-progress", "--scheduler", cluster.scheduler_address, "--resume",  # type: ignore[attr-defined]
    ]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert distributed_job(bars_file, tmp_path / "x", cluster, "--cluster", "local:2") == 2
    assert "either --scheduler or --cluster" in capsys.readouterr().err
    assert main(["features", "--input", str(bars_file), "--output", str(tmp_path / "y"), "--cluster", "local:0"]) == 2
    assert "--cluster must look like local:N" in capsys.readouterr().err


def test_bad_input_on_the_cluster_leaves_nothing(cluster: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = synthetic_bars(6, 80, seed=4)
    ts = table["timestamp"].to_numpy().copy()
    last_of_aac = int(np.flatnonzero(table["symbol"].to_numpy(zero_copy_only=False) == "AAC")[-1])
    ts[last_of_aac] = ts[last_of_aac - 1]  # a duplicate bar deep inside one symbol: only its worker sees it
    bad = tmp_path / "bars.parquet"
    pq.write_table(table.set_column(1, "timestamp", pa.array(ts, type=table.schema.field("timestamp").type)), bad)
    out = tmp_path / "features"
    assert distributed_job(bad, out, cluster) == 2
    err = capsys.readouterr().err
    assert "duplicate timestamp" in err and "symbol 'AAC'" in err
    assert not out.exists()
