"""Every bad input to the features job exits 2 with one clear line and leaves no output behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.sample import synthetic_bars

JOB = ["--backend", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def good() -> pa.Table:
    return synthetic_bars(3, 60, seed=2)


def with_value(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    return table.set_column(table.column_names.index(column), column, pa.array(values, type=table.schema.field(column).type))


def swap_rows(table: pa.Table, i: int, j: int) -> pa.Table:
    order = np.arange(table.num_rows)
    order[[i, j]] = order[[j, i]]
    return table.take(pa.array(order))


# name -> (make the input file in a directory, expected message fragment)
BAD_INPUTS: dict[str, tuple[Callable[[pa.Table, Path], Path], str]] = {
    "missing column": (lambda t, d: _write(t.drop_columns(["close"]), d), "missing column(s) close"),
    "non-numeric column": (
        lambda t, d: _write(t.set_column(5, "close", t["close"].cast(pa.string())), d),
        "column 'close' must be numeric, got string",
    ),
    "string timestamps": (
        lambda t, d: _write(t.set_column(1, "timestamp", t["timestamp"].cast(pa.string())), d),
        "column 'timestamp' must be a timestamp",
    ),
    "unsorted timestamps": (lambda t, d: _write(swap_rows(t, 10, 11), d), "timestamps not sorted for symbol 'AAA'"),
    "duplicate timestamp": (
        lambda t, d: _write(with_value(t, "timestamp", 11, t["timestamp"][10].as_py()), d),
        "duplicate timestamp",
    ),
    "null price": (lambda t, d: _write(with_value(t, "high", 7, None), d), "column 'high' has 1 null value(s), the first at row 7"),
    "NaN price": (lambda t, d: _write(with_value(t, "low", 3, float("nan")), d), "column 'low' has a non-finite value nan (row 3"),
    "null symbol": (lambda t, d: _write(with_value(t, "symbol", 0, None), d), "column 'symbol' has 1 null value(s)"),
    "no rows": (lambda t, d: _write(t.slice(0, 0), d), "input holds no bars (0 rows)"),
    "zero-byte file": (lambda t, d: _touch(d / "bars.parquet", b""), "cannot read"),
    "not Parquet": (lambda t, d: _touch(d / "bars.parquet", b"symbol,timestamp\nAAA,1\n"), "cannot read"),
    "missing input": (lambda t, d: d / "absent.parquet", "input not found"),
    "empty directory": (lambda t, d: _mkdir(d / "bars"), "holds no Parquet files"),
}


def _write(table: pa.Table, d: Path) -> Path:
    pq.write_table(table, d / "bars.parquet")
    return d / "bars.parquet"


def _touch(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def run_failing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["features", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("tickforge features: error: ")
    return err[-1]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.name == "features.parquet")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_its_message_and_writes_nothing(
    case: str, good: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_INPUTS[case]
    src = make(good, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    line = run_failing(["--input", str(src), "--output", str(out_dir / "features.parquet"), *JOB], capsys)
    assert message in line
    assert leftovers(out_dir) == []


def test_a_failed_run_leaves_an_existing_output_untouched(good: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "features.parquet"
    out.write_bytes(b"previous results")
    src = _write(swap_rows(good, 20, 21), tmp_path)
    run_failing(["--input", str(src), "--output", str(out), *JOB], capsys)
    assert out.read_bytes() == b"previous results"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


ARGUMENT_ERRORS = {
    "unknown backend": (["--backend", "tpu"], "unknown backend 'tpu'"),
    "unknown dtype": (["--dtype", "float16"], "unknown dtype 'float16'"),
    "window not a number": (["--windows", "5,x"], "--windows must be comma-separated integers"),
    "window of 1 bar": (["--windows", "1,5"], "every window must be at least 2 bars, got 1"),
    "no windows": (["--windows", ","], "--windows must name at least one window"),
    "zero memory budget": (["--memory-budget-mb", "0"], "--memory-budget-mb must be positive"),
    "resume without a cluster": (["--resume"], "--resume applies to distributed runs"),
}


@pytest.mark.parametrize("case", list(ARGUMENT_ERRORS))
def test_bad_arguments_exit_2(case: str, good: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra, message = ARGUMENT_ERRORS[case]
    src = _write(good, tmp_path)
    out = tmp_path / "features.parquet"
    argv = ["--input", str(src), "--output", str(out), "--no-progress"]
    argv += extra if "--backend" in extra else ["--backend", "cpu", *extra]
    assert message in run_failing(argv, capsys)
    assert not out.exists()


def test_smallest_valid_arguments_run(good: pa.Table, tmp_path: Path) -> None:
    # The other side of the limits above: a window of 2 bars and a one-byte budget are accepted.
    src = _write(good, tmp_path)
    out = tmp_path / "features.parquet"
    argv = ["features", "--input", str(src), "--output", str(out), *JOB, "--windows", "2", "--memory-budget-mb", "0.000001"]
    assert main(argv) == 0
    assert "sma_2" in pq.read_table(out).column_names


def test_output_path_problems(good: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(good, tmp_path)
    cases = {
        str(tmp_path / "missing" / "features.parquet"): "does not exist",
        str(tmp_path): "is a directory",
        str(src): "must not be the input file",
        str(src / "features.parquet"): "is not a directory",
    }
    for output, message in cases.items():
        assert message in run_failing(["--input", str(src), "--output", output, *JOB], capsys), output
    data_dir = tmp_path / "bars_dir"
    data_dir.mkdir()
    _write(good, data_dir)
    assert "inside the input directory" in run_failing(
        ["--input", str(data_dir), "--output", str(data_dir / "features.parquet"), *JOB], capsys
    )
    assert "--input and --output are required" in run_failing(["--input", str(src), *JOB], capsys)
    assert "--sample generates its own input" in run_failing(["--sample", "--input", str(src), *JOB], capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_unwritable_output_directory(good: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(good, tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "is not writable" in run_failing(["--input", str(src), "--output", str(locked / "f.parquet"), *JOB], capsys)
    finally:
        locked.chmod(0o700)
