"""The batch feature job: long-format Parquet bars in, long-format Parquet features out (``tickforge features``).

Each symbol's features are computed over its own bar sequence, so every value equals TA-Lib run on
that symbol alone: symbols are laid side by side in time-major ``(bars, symbols)`` panels, left-aligned
(row i is the symbol's i-th bar, calendar gaps are not filled) and NaN-padded after a shorter symbol
ends. Symbols are processed in contiguous groups sized to a memory budget and scattered back to long
format, so the output is ordered by symbol, then timestamp, whatever the input order was.

Bad input is an ``InputError`` raised before anything is written; the output is written to a hidden
temporary file next to the destination and renamed into place only when the whole job succeeded.
``--scheduler`` / ``--cluster`` hand the same job to ``engine.distributed`` (one Parquet part per group).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.backend import Backend, resolve_backend
from engine.errors import InputError

log = logging.getLogger("tickforge.batch")

KEY_COLUMNS = ("symbol", "timestamp")
PRICE_VOLUME_COLUMNS = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS = ("vwap", "trade_count")
DEFAULT_WINDOWS = (5, 14, 20)
DTYPES = ("float64", "float32")
DEFAULT_MEMORY_BUDGET_MB = 1024
# Per panel cell: the input panels, every feature panel, and room for the kernels' temporaries.
SCRATCH_PANELS = 4
SAMPLE_DIR = Path("tickforge-out")


@dataclass(frozen=True)
class JobSummary:
    """What a finished job did: where, how much, with what."""

    input_path: str
    output_path: str
    n_symbols: int
    n_rows: int
    n_groups: int
    feature_names: tuple[str, ...]
    backend: str
    dtype: str
    seconds: float
    scheduler: str | None = None          # the Dask scheduler address for a distributed run
    groups_skipped: int = 0               # groups a --resume found already written
    backends_used: dict[str, int] = field(default_factory=dict)  # distributed: groups per backend
    stage_seconds: dict[str, float] = field(default_factory=dict)  # local: read, compute (panels in and out), write

    @property
    def symbols_per_s(self) -> float:
        return self.n_symbols / self.seconds if self.seconds > 0 else float("inf")


# --------------------------------------------------------------------------- arguments


def parse_windows(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"5,14,20"`` (or a sequence) -> ``(5, 14, 20)``; sorted, unique, each at least 2."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            windows = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"--windows must be comma-separated integers, got {text!r}") from None
    else:
        windows = [int(w) for w in text]
    if not windows:
        raise InputError("--windows must name at least one window")
    bad = [w for w in windows if w < 2]
    if bad:
        raise InputError(f"every window must be at least 2 bars, got {bad[0]}")
    return tuple(sorted(set(windows)))


def check_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return np.dtype(dtype)


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class BarsUniverse:
    """Validated bars, ordered by symbol then time: symbol ``k`` owns rows ``offsets[k]:offsets[k+1]``."""

    symbols: np.ndarray                 # sorted unique symbol names (object array of str)
    offsets: np.ndarray                 # int64, len(symbols) + 1
    timestamps: pa.Array                # the input's timestamp type, in output order
    columns: dict[str, np.ndarray]      # open/high/low/close/volume (+ vwap) as float64, in output order

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def open_bars_dataset(path: str | os.PathLike[str]) -> ds.Dataset:
    """The input as a pyarrow dataset (one file or a directory of files), with its schema checked."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    try:
        dataset = ds.dataset(str(p), format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {p} as Parquet: {_first_line(exc)}") from None
    if p.is_dir() and not dataset.files:
        raise InputError(f"input directory {p} holds no Parquet files")
    check_bars_schema(dataset.schema, p)
    return dataset


def check_bars_schema(schema: pa.Schema, where: Path | str) -> None:
    """Required columns present with usable types; raises ``InputError`` naming the first problem."""
    names = set(schema.names)
    missing = [c for c in (*KEY_COLUMNS, *PRICE_VOLUME_COLUMNS) if c not in names]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(missing)}; bars need symbol, timestamp, open, high, low, close, volume")
    sym = schema.field("symbol").type
    if pa.types.is_dictionary(sym):
        sym = sym.value_type
    if not (pa.types.is_string(sym) or pa.types.is_large_string(sym) or pa.types.is_string_view(sym)):
        raise InputError(f"{where}: column 'symbol' must be a string column, got {schema.field('symbol').type}")
    ts = schema.field("timestamp").type
    if not (pa.types.is_timestamp(ts) or pa.types.is_date(ts) or pa.types.is_integer(ts)):
        raise InputError(f"{where}: column 'timestamp' must be a timestamp, date or integer column, got {ts}")
    for name in (*PRICE_VOLUME_COLUMNS, *OPTIONAL_COLUMNS):
        if name in names:
            t = schema.field(name).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                raise InputError(f"{where}: column '{name}' must be numeric, got {t}")


def read_bars(path: str | os.PathLike[str], symbols: Sequence[str] | None = None) -> BarsUniverse:
    """Read and validate the bars at ``path`` (only ``symbols`` when given) into a ``BarsUniverse``."""
    dataset = open_bars_dataset(path)
    value_columns = [*PRICE_VOLUME_COLUMNS] + (["vwap"] if "vwap" in dataset.schema.names else [])
    flt = pc.field("symbol").isin(list(symbols)) if symbols is not None else None
    try:
        table = dataset.to_table(columns=[*KEY_COLUMNS, *value_columns], filter=flt)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {path}: {_first_line(exc)}") from None
    return order_bars(table, where=str(path))


def order_bars(table: pa.Table, where: str = "input") -> BarsUniverse:
    """Validate a long bars table and order it by symbol (stable: each symbol keeps its row order)."""
    if table.num_rows == 0:
        raise InputError(f"{where}: input holds no bars (0 rows)")
    for name in table.column_names:
        nulls = table.column(name).null_count
        if nulls:
            first = int(np.flatnonzero(pc.is_null(table.column(name)).to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{where}: column '{name}' has {nulls} null value(s), the first at row {first}")

    encoded = table.column("symbol").combine_chunks()
    if pa.types.is_dictionary(encoded.type):
        encoded = encoded.cast(pa.dictionary(encoded.type.index_type, pa.string()))
    else:
        encoded = pc.dictionary_encode(encoded.cast(pa.string()))
    names = encoded.dictionary.to_numpy(zero_copy_only=False)
    # Dictionary codes -> rank of the name, so symbols come out in sorted order.
    by_name = np.argsort(names, kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[by_name] = np.arange(len(names))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    order = None if bool(np.all(codes[1:] >= codes[:-1])) else np.argsort(codes, kind="stable")
    sorted_codes = codes if order is None else codes[order]
    present = np.unique(sorted_codes)  # a dictionary can hold names that no row uses
    counts = np.bincount(sorted_codes, minlength=len(names))[present]
    offsets = np.zeros(len(present) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    symbols = names[by_name][present]

    ts_column = table.column("timestamp").combine_chunks()
    ts_ns = _timestamp_ints(ts_column)
    if order is not None:
        ts_ns = ts_ns[order]
    step = np.diff(ts_ns)
    same_symbol = sorted_codes[1:] == sorted_codes[:-1]
    bad = np.flatnonzero(same_symbol & (step <= 0))
    if bad.size:
        i = int(bad[0])
        row = int(order[i + 1]) if order is not None else i + 1
        sym = names[int(encoded.indices[row].as_py())]
        prev, this = ts_column[int(order[i]) if order is not None else i].as_py(), ts_column[row].as_py()
        if step[i] == 0:
            raise InputError(f"{where}: duplicate timestamp {this} for symbol {sym!r} (row {row})")
        raise InputError(f"{where}: timestamps not sorted for symbol {sym!r}: {this} (row {row}) comes after {prev}")

    columns: dict[str, np.ndarray] = {}
    for name in table.column_names:
        if name in KEY_COLUMNS:
            continue
        values = _float_values(table.column(name), name, where)
        bad_rows = np.flatnonzero(~np.isfinite(values))
        if bad_rows.size:
            row = int(bad_rows[0])
            sym = names[int(encoded.indices[row].as_py())]
            raise InputError(f"{where}: column '{name}' has a non-finite value {values[row]} (row {row}, symbol {sym!r})")
        columns[name] = values if order is None else values[order]
    timestamps = ts_column if order is None else ts_column.take(pa.array(order))
    return BarsUniverse(symbols=symbols, offsets=offsets, timestamps=timestamps, columns=columns)


def _timestamp_ints(column: pa.Array) -> np.ndarray:
    t = column.type
    if pa.types.is_timestamp(t) or pa.types.is_date64(t):
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_date32(t):
        return column.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    return column.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _float_values(column: pa.ChunkedArray, name: str, where: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{where}: column '{name}' cannot be read as numbers: {_first_line(exc)}") from None


# --------------------------------------------------------------------------- panels


def plan_groups(lengths: np.ndarray, bytes_per_cell: int, budget_bytes: int) -> list[tuple[int, int]]:
    """Split symbols ``0..n`` into contiguous ``[start, stop)`` groups whose padded panels fit the budget.

    A group's panel is ``max(length) x n_symbols`` cells; a symbol longer than the whole budget still
    gets a group of its own (its features cannot be split without changing them).
    """
    cells = max(1, budget_bytes // max(1, bytes_per_cell))
    groups: list[tuple[int, int]] = []
    start, longest = 0, 0
    for k, length in enumerate(lengths.tolist()):
        widened = max(longest, length)
        if k > start and widened * (k - start + 1) > cells:
            groups.append((start, k))
            start, widened = k, length
        longest = widened
    if len(lengths):
        groups.append((start, len(lengths)))
    return groups


@dataclass(frozen=True)
class PanelLayout:
    """Where each long-format row of a symbol group sits in its ``(bars, symbols)`` panel."""

    row_start: int          # first long row of the group
    row_stop: int
    n_bars: int             # panel rows: the group's longest symbol
    n_symbols: int
    flat_index: np.ndarray  # long row -> flat panel cell (C order)

    @classmethod
    def for_group(cls, offsets: np.ndarray, start: int, stop: int) -> PanelLayout:
        first = offsets[start:stop]
        lengths = offsets[start + 1 : stop + 1] - first
        n = stop - start
        row_start, row_stop = int(offsets[start]), int(offsets[stop])
        column = np.repeat(np.arange(n, dtype=np.int64), lengths)
        bar = np.arange(row_stop - row_start, dtype=np.int64) - np.repeat(first - row_start, lengths)
        n_bars = int(lengths.max()) if n else 0
        return cls(row_start, row_stop, n_bars, n, bar * n + column)

    def panel(self, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The group's slice of a long column as a NaN-padded, left-aligned panel."""
        out = np.full((self.n_bars, self.n_symbols), np.nan, dtype=dtype)
        out.reshape(-1)[self.flat_index] = values[self.row_start : self.row_stop]
        return out

    def long(self, panel: np.ndarray) -> np.ndarray:
        """A panel back to the group's long rows."""
        return np.take(panel.reshape(-1), self.flat_index)


def panel_cell_bytes(n_inputs: int, n_features: int, dtype: np.dtype | str) -> int:
    """Memory one (bar, symbol) cell of a group costs: float64 input panels (the kernels accumulate in
    float64), the feature panels in the job's dtype, and the kernels' temporaries."""
    return 8 * n_inputs + np.dtype(dtype).itemsize * (n_features + SCRATCH_PANELS)


def feature_names(windows: Sequence[int]) -> tuple[str, ...]:
    """The job's feature columns for ``windows``, without choosing a backend."""
    from engine.features import feature_names as names  # noqa: PLC0415

    return tuple(names(tuple(windows)))


class FeatureEngine:
    """A ``FeatureComputer`` plus the knowledge of what one panel cell costs."""

    def __init__(self, windows: Sequence[int], backend: Backend | str | None, dtype: str) -> None:
        from engine.features import FeatureComputer  # noqa: PLC0415 - keeps `import engine.batch` light

        self.dtype = check_dtype(dtype)
        self.backend = backend if isinstance(backend, Backend) else resolve_backend(backend)
        self.computer = FeatureComputer(windows=tuple(windows), backend=self.backend.name, dtype=str(self.dtype))
        self.names: tuple[str, ...] = tuple(self.computer.names)

    def bytes_per_cell(self, n_inputs: int) -> int:
        return panel_cell_bytes(n_inputs, len(self.names), self.dtype)

    def compute(self, panels: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self.computer.batch(
            panels["open"], panels["high"], panels["low"], panels["close"], panels["volume"], vwap=panels.get("vwap")
        )


def feature_tables(
    bars: BarsUniverse, engine: FeatureEngine, groups: Sequence[tuple[int, int]]
) -> Iterator[tuple[tuple[int, int], pa.Table]]:
    """For each symbol group, the long-format feature table of its rows (keys + one column per feature)."""
    out_type = pa.float32() if engine.dtype == np.float32 else pa.float64()
    for start, stop in groups:
        layout = PanelLayout.for_group(bars.offsets, start, stop)
        panels = {name: layout.panel(values, np.dtype(np.float64)) for name, values in bars.columns.items()}
        results = engine.compute(panels)
        del panels
        counts = layout.row_stop - layout.row_start
        symbol_keys = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(stop - start, dtype=np.int32), bars.lengths[start:stop])),
            pa.array(bars.symbols[start:stop], type=pa.string()),
        ).cast(pa.string())
        arrays: list[pa.Array] = [symbol_keys, bars.timestamps.slice(layout.row_start, counts)]
        for name in engine.names:
            arrays.append(pa.array(layout.long(_to_host(results[name])).astype(engine.dtype, copy=False), type=out_type))
        yield (start, stop), pa.Table.from_arrays(arrays, names=[*KEY_COLUMNS, *engine.names])


def _to_host(array: object) -> np.ndarray:
    """A device array (cupy) comes back to host memory; numpy passes through."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return np.asarray(get() if callable(get) else array)


def writer_options(feature_names: Sequence[str]) -> dict[str, object]:
    """Parquet settings for feature tables: dictionary-encode only the symbol (float features have
    nearly as many distinct values as rows, so trying a dictionary on them only costs time) and split
    float bytes into streams, which compresses market data far better than plain encoding."""
    return {"compression": "snappy", "use_dictionary": ["symbol"], "use_byte_stream_split": list(feature_names)}


def output_schema(timestamp_type: pa.DataType, names: Sequence[str], dtype: np.dtype) -> pa.Schema:
    value = pa.float32() if dtype == np.float32 else pa.float64()
    return pa.schema([("symbol", pa.string()), ("timestamp", timestamp_type), *((n, value) for n in names)])


# --------------------------------------------------------------------------- output


def check_output_path(output: Path, input_path: Path) -> None:
    """Refuse outputs that cannot be written or would clobber the input, before any work is done."""
    if output.exists() and output.is_dir():
        raise InputError(f"output {output} is a directory; give a file path such as {output / 'features.parquet'}")
    parent = output.parent
    if not parent.exists():
        raise InputError(f"output directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"output parent {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory {parent} is not writable")
    src, dst = input_path.resolve(), output.resolve()
    if src == dst:
        raise InputError("output must not be the input file")
    if src.is_dir() and src in dst.parents:
        raise InputError(f"output {output} must not be inside the input directory {input_path}")


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique path next to ``path``: same filesystem, so the final rename is atomic."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- the job


def compute_features(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    windows: str | Sequence[int] = DEFAULT_WINDOWS,
    backend: str | None = None,
    dtype: str = "float64",
    progress: bool = True,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    scheduler: str | None = None,
    cluster: str | None = None,
    resume: bool = False,
) -> JobSummary:
    """Run the features job; returns what it did. Raises ``InputError`` on bad input, writing nothing.

    With ``scheduler`` (``tcp://host:port``) or ``cluster`` (``local:N``) the job runs on Dask and
    ``output_path`` is a directory of Parquet parts plus ``_manifest.json`` (see ``engine.distributed``).
    """
    windows = parse_windows(windows)
    check_dtype(dtype)
    if memory_budget_mb <= 0:
        raise InputError(f"--memory-budget-mb must be positive, got {memory_budget_mb}")
    src, dst = Path(input_path), Path(output_path)
    if scheduler or cluster:
        from engine import distributed  # noqa: PLC0415 - dask is imported only for distributed runs

        return distributed.run_job(
            src, dst, windows=windows, backend=backend, dtype=dtype, progress=progress,
            memory_budget_mb=memory_budget_mb, scheduler=scheduler, cluster=cluster, resume=resume,
        )
    if resume:
        raise InputError("--resume applies to distributed runs (--scheduler or --cluster); a local run writes one file atomically")

    t0 = time.perf_counter()
    check_output_path(dst, src)
    chosen = resolve_backend(backend)
    bars = read_bars(src)
    read_s = time.perf_counter() - t0
    engine = FeatureEngine(windows, chosen, dtype)
    budget = int(memory_budget_mb * 2**20)
    groups = plan_groups(bars.lengths, engine.bytes_per_cell(len(bars.columns)), budget)
    log.info(
        "features: %d symbols, %d bars, %d features, %d group(s), backend=%s, dtype=%s",
        len(bars.symbols), bars.n_rows, len(engine.names), len(groups), engine.backend.name, dtype,
    )
    schema = output_schema(bars.timestamps.type, engine.names, engine.dtype)
    tmp = temporary_sibling(dst)
    compute_s = write_s = 0.0
    try:
        with _progress_bar(progress, len(bars.symbols), "features") as advance, pq.ParquetWriter(
            str(tmp), schema, **writer_options(engine.names)
        ) as writer:
            tables = feature_tables(bars, engine, groups)
            while True:
                t1 = time.perf_counter()
                (start, stop), table = next(tables, ((0, 0), None))
                t2 = time.perf_counter()
                compute_s += t2 - t1
                if table is None:
                    break
                writer.write_table(table)
                write_s += time.perf_counter() - t2
                advance(stop - start)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    summary = JobSummary(
        input_path=str(src), output_path=str(dst), n_symbols=len(bars.symbols), n_rows=bars.n_rows,
        n_groups=len(groups), feature_names=engine.names, backend=engine.backend.name, dtype=dtype, seconds=seconds,
        stage_seconds={"read": read_s, "compute": compute_s, "write": write_s},
    )
    log.info(
        "features: wrote %s (%d rows) in %.2fs (read %.2fs, compute %.2fs, write %.2fs)",
        dst, bars.n_rows, seconds, read_s, compute_s, write_s,
    )
    return summary


class _progress_bar:  # noqa: N801 - used as a context manager, reads like a function
    """A rich progress bar over symbols on stderr, or a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self._progress = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("symbols"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
        )
        self._progress.__enter__()
        task = self._progress.add_task(self.label, total=self.total)
        progress = self._progress
        return lambda n: progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


# --------------------------------------------------------------------------- sample


def run_sample(
    output_dir: str | os.PathLike[str] = SAMPLE_DIR,
    n_symbols: int = 200,
    n_bars: int = 2_000,
    seed: int = 7,
    **job: object,
) -> JobSummary:
    """Generate a synthetic universe into ``output_dir/bars.parquet`` and run the job on it."""
    from engine.sample import synthetic_bars  # noqa: PLC0415

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"sample output {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create sample output directory {out}: {exc.strerror}") from None
    distributed = bool(job.get("scheduler") or job.get("cluster"))
    bars_path = out / "bars.parquet"
    features_path = out / ("features" if distributed else "features.parquet")
    tmp = temporary_sibling(bars_path)
    try:
        pq.write_table(synthetic_bars(n_symbols, n_bars, seed), str(tmp), compression="zstd")
        os.replace(tmp, bars_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return compute_features(bars_path, features_path, **job)  # type: ignore[arg-type]


def print_preview(summary: JobSummary, n_rows: int = 5) -> None:
    """Where things went, and the last few rows of the first symbol (past the indicators' warm-up)."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    console.print(f"input bars : {summary.input_path}")
    console.print(f"features   : {summary.output_path}")
    console.print(
        f"{summary.n_symbols} symbols, {summary.n_rows} rows, {len(summary.feature_names)} features, "
        f"backend {summary.backend}, {summary.dtype}, {summary.seconds:.2f}s"
    )
    dataset = ds.dataset(summary.output_path, format="parquet")
    # One column per indicator family, so the preview shows a spread rather than five SMAs.
    picked: dict[str, str] = {}
    for name in summary.feature_names:
        picked.setdefault(name.split("_")[0], name)
    shown = [*KEY_COLUMNS, *list(picked.values())[:5]]
    first_symbol = dataset.head(1, columns=["symbol"]).column(0)[0].as_py()
    rows = dataset.to_table(columns=shown, filter=pc.field("symbol") == first_symbol)
    rows = rows.slice(max(0, rows.num_rows - n_rows))
    table = Table(title=f"last {rows.num_rows} rows of {first_symbol}")
    for name in shown:
        table.add_column(name, justify="left" if name in KEY_COLUMNS else "right", no_wrap=True)
    for record in rows.to_pylist():
        stamp = record["timestamp"]
        when = stamp.strftime("%Y-%m-%d %H:%M") if hasattr(stamp, "strftime") else str(stamp)
        table.add_row(record["symbol"], when, *(f"{record[n]:.6g}" for n in shown[2:]))
    console.print(table)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="bars: a Parquet file or directory (symbol, timestamp, open, high, low, close, volume[, vwap, trade_count])")
    parser.add_argument("--output", help="features Parquet file (a directory of parts for distributed runs; the sample's directory with --sample)")
    parser.add_argument("--windows", default=",".join(map(str, DEFAULT_WINDOWS)), help="comma-separated look-back windows (default %(default)s)")
    parser.add_argument("--backend", default=None, help="auto | gpu | cpu (default: $ENGINE_BACKEND, else auto)")
    parser.add_argument("--dtype", default="float64", help="float64 | float32 (default %(default)s)")
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULT_MEMORY_BUDGET_MB, help="panel memory per symbol group, MiB (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--sample", action="store_true", help=f"demo: generate a synthetic universe into --output (default ./{SAMPLE_DIR}/) and run the job on it")
    parser.add_argument("--sample-symbols", type=int, default=200, help="symbols in the --sample universe (default %(default)s)")
    parser.add_argument("--sample-bars", type=int, default=2_000, help="longest symbol's bars in the --sample universe (default %(default)s)")
    parser.add_argument("--scheduler", default=None, help="run on an existing Dask cluster: tcp://host:port")
    parser.add_argument("--cluster", default=None, help="run on a Dask LocalCluster started for the job: local:N (N worker processes)")
    parser.add_argument("--resume", action="store_true", help="distributed: skip groups already written to --output")


def run(args: argparse.Namespace) -> int:
    job = dict(
        windows=args.windows, backend=args.backend, dtype=args.dtype, progress=not args.no_progress,
        memory_budget_mb=args.memory_budget_mb, scheduler=args.scheduler, cluster=args.cluster, resume=args.resume,
    )
    if args.sample:
        if args.input:
            raise InputError("--sample generates its own input; drop --input")
        if args.sample_symbols < 1 or args.sample_bars < 1:
            raise InputError("--sample-symbols and --sample-bars must be at least 1")
        summary = run_sample(args.output or SAMPLE_DIR, n_symbols=args.sample_symbols, n_bars=args.sample_bars, **job)
        print_preview(summary)
        return 0
    if not args.input or not args.output:
        raise InputError("--input and --output are required (or --sample for the demo)")
    summary = compute_features(args.input, args.output, **job)
    print(
        f"wrote {summary.output_path}: {summary.n_symbols} symbols, {summary.n_rows} rows, "
        f"{len(summary.feature_names)} features, backend {summary.backend}, {summary.seconds:.2f}s"
    )
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
