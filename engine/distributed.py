"""Runs the features job on a Dask cluster: one symbol group per task, one Parquet part per group.

The client plans from the symbol column alone: symbols sorted by name, cut into contiguous groups
sized for the smallest worker's memory (a symbol is never split, so rolling windows stay exact). Each
worker reads only its group's symbols from the shared input path, computes with its own backend
(``auto`` takes the worker's GPU when it has one) and writes ``part-NNNNN.parquet`` through a hidden
temporary file and a rename, so a task re-run after a worker died replaces the part instead of adding
a second copy. Every part carries its group's identity in its footer; ``_manifest.json`` records the
plan and each finished group, which is what ``--resume`` checks before skipping a group.

Reading the directory back (``read_dataset`` or any Parquet reader, parts in name order) gives the
same table as the single-machine job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.backend import BACKENDS
from engine.batch import (
    JobSummary,
    FeatureEngine,
    feature_names,
    feature_tables,
    open_bars_dataset,
    output_schema,
    panel_cell_bytes,
    plan_groups,
    read_bars,
    temporary_sibling,
    writer_options,
    _progress_bar,
    _first_line,
)
from engine.errors import InputError, TickforgeError

log = logging.getLogger("tickforge.distributed")

MANIFEST = "_manifest.json"
PART_METADATA_KEY = b"tickforge.group"
MANIFEST_VERSION = 1
# A worker's budget per group: its memory per thread over this, leaving room for the input columns,
# the long-format output table and Dask's own copies next to the panels.
WORKER_MEMORY_SHARE = 4
CONNECT_TIMEOUT_S = 15
MANIFEST_FLUSH_S = 1.0  # at most one manifest rewrite a second while groups finish
TASK_RETRIES = 1  # for exceptions raised by a task; worker deaths are retried by the scheduler itself

PartHook = Callable[[int, Path], None]


class ClusterError(TickforgeError):
    """The cluster could not be reached, or a group kept failing on it."""


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# --------------------------------------------------------------------------- worker side

_engines: dict[tuple[tuple[int, ...], str | None, str], FeatureEngine] = {}


def _engine_for(windows: tuple[int, ...], backend: str | None, dtype: str) -> FeatureEngine:
    """One FeatureEngine per worker process and job shape: kernels compile (or load) once."""
    key = (windows, backend, dtype)
    if key not in _engines:
        _engines[key] = FeatureEngine(windows, backend, dtype)
    return _engines[key]


def compute_group_part(
    input_path: str,
    output_dir: str,
    index: int,
    symbols: Sequence[str],
    windows: tuple[int, ...],
    backend: str | None,
    dtype: str,
    budget_bytes: int,
    job_id: str,
    workers_per_host: dict[str, int] | None = None,
    part_hook: PartHook | None = None,
) -> dict[str, Any]:
    """Worker task: features for one symbol group, written atomically to its part file.

    Bad input comes back as ``{"error": message}`` rather than an exception, so Dask does not retry
    a group whose data will never be valid.
    """
    t0 = time.perf_counter()
    _share_cores(workers_per_host)
    try:
        bars = read_bars(input_path, symbols=symbols)
    except InputError as exc:
        return {"index": index, "error": str(exc)}
    if list(bars.symbols) != list(symbols):
        return {"index": index, "error": f"group {index}: the input's symbols changed since the job was planned"}
    try:
        engine = _engine_for(windows, backend, dtype)
    except TickforgeError as exc:  # e.g. --backend gpu on a worker without one: retrying cannot help
        return {"index": index, "error": f"worker cannot compute group {index}: {exc}"}
    groups = plan_groups(bars.lengths, engine.bytes_per_cell(len(bars.columns)), budget_bytes)
    schema = output_schema(bars.timestamps.type, engine.names, engine.dtype)
    identity = {"job": job_id, "index": index, "symbols": _digest(symbols), "rows": bars.n_rows, "backend": engine.backend.name}
    schema = schema.with_metadata({PART_METADATA_KEY: json.dumps(identity).encode()})
    part = Path(output_dir) / part_name(index)
    tmp = temporary_sibling(part)
    try:
        with pq.ParquetWriter(str(tmp), schema, **writer_options(engine.names)) as writer:
            for _, table in feature_tables(bars, engine, groups):
                writer.write_table(table.replace_schema_metadata(schema.metadata))
        if part_hook is not None:
            part_hook(index, tmp)
        os.replace(tmp, part)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "index": index,
        "rows": bars.n_rows,
        "backend": engine.backend.name,
        "seconds": time.perf_counter() - t0,
    }


def _share_cores(workers_per_host: dict[str, int] | None) -> None:
    """Give this task's numba kernels the host's cores divided by the workers on the host.

    Each worker process would otherwise start one numba thread per core, so N workers on one host
    would run N x cores threads fighting over the same cores.
    """
    if not workers_per_host:
        return
    try:
        from urllib.parse import urlparse  # noqa: PLC0415

        import numba  # noqa: PLC0415
        from distributed import get_worker  # noqa: PLC0415

        host = urlparse(get_worker().address).hostname or ""
    except (ImportError, ValueError):
        return  # not running inside a Dask worker
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, workers_per_host.get(host, 1)))
    numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))


def part_is_valid(part: Path, job_id: str, index: int, symbols: Sequence[str], rows: int) -> bool:
    """A part counts as written when its footer names this job, group, symbol set and row count."""
    try:
        meta = pq.read_metadata(str(part))
        identity = json.loads((meta.metadata or {}).get(PART_METADATA_KEY, b"{}"))
    except (OSError, pa.ArrowException, ValueError):
        return False
    return (
        meta.num_rows == rows
        and identity.get("job") == job_id
        and identity.get("index") == index
        and identity.get("symbols") == _digest(symbols)
        and identity.get("rows") == rows
    )


# --------------------------------------------------------------------------- client side


def run_job(
    src: Path,
    dst: Path,
    *,
    windows: tuple[int, ...],
    backend: str | None,
    dtype: str,
    progress: bool,
    memory_budget_mb: float,
    scheduler: str | None = None,
    cluster: str | None = None,
    resume: bool = False,
    part_hook: PartHook | None = None,
) -> JobSummary:
    """Plan, fan out over the cluster, collect; see the module docstring. ``part_hook`` is for fault tests."""
    t0 = time.perf_counter()
    if scheduler and cluster:
        raise InputError("give either --scheduler or --cluster, not both")
    n_local = _parse_cluster(cluster) if cluster else 0
    if backend is not None and str(backend).strip().lower() not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    src = src.resolve()
    _check_output_dir(dst, src, resume)

    symbols, lengths = _symbol_lengths(src)
    names = feature_names(windows)
    bytes_per_cell = panel_cell_bytes(6 if "vwap" in open_bars_dataset(src).schema.names else 5, len(names), dtype)
    job_id = _job_id(src, windows, dtype, names)

    created_dir = not dst.exists()
    manifest_path = dst / MANIFEST
    previous = _load_manifest(manifest_path) if resume else None
    if previous is not None and previous.get("job") != job_id:
        raise InputError(
            f"cannot resume {dst}: it was written for a different input, windows or dtype "
            "(remove it or write to a new path)"
        )

    with _connect(scheduler, n_local) as client:
        budget = _group_budget(client, memory_budget_mb)
        if previous is not None:
            groups = [(g["start"], g["stop"]) for g in previous["groups"]]
        else:
            groups = plan_groups(lengths, bytes_per_cell, budget)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        plan = [
            {
                "index": g,
                "part": part_name(g),
                "start": start,
                "stop": stop,
                "symbols": symbols[start:stop],
                "rows": int(offsets[stop] - offsets[start]),
                "backend": None,
                "done": False,
            }
            for g, (start, stop) in enumerate(groups)
        ]
        dst.mkdir(exist_ok=True)
        _remove_stale_temporaries(dst)
        skipped = 0
        if previous is not None:
            for group in plan:
                if part_is_valid(dst / group["part"], job_id, group["index"], group["symbols"], group["rows"]):
                    old = previous["groups"][group["index"]]
                    group["done"], group["backend"] = True, old.get("backend")
                    skipped += 1
        manifest = {
            "version": MANIFEST_VERSION,
            "job": job_id,
            "input": str(src),
            "windows": list(windows),
            "dtype": dtype,
            "backend_requested": backend or os.environ.get("ENGINE_BACKEND", "auto"),
            "feature_names": list(names),
            "n_symbols": len(symbols),
            "n_rows": int(offsets[-1]),
            "complete": False,
            "groups": plan,
        }
        _write_manifest(manifest_path, manifest)
        log.info(
            "features on %s: %d symbols in %d group(s), %d already written, budget %.0f MiB per group",
            client.scheduler.address, len(symbols), len(plan), skipped, budget / 2**20,
        )
        try:
            _run_groups(client, src, dst, plan, manifest, manifest_path, windows, backend, dtype, budget, job_id, progress, part_hook)
        except InputError:
            if created_dir:
                shutil.rmtree(dst, ignore_errors=True)  # bad input: leave nothing behind
            raise
        address = client.scheduler.address

    manifest["complete"] = True
    _write_manifest(manifest_path, manifest)
    _remove_stale_temporaries(dst)
    backends_used: dict[str, int] = {}
    for group in plan:
        backends_used[group["backend"] or "unknown"] = backends_used.get(group["backend"] or "unknown", 0) + 1
    seconds = time.perf_counter() - t0
    log.info("features: wrote %s (%d parts, %d rows) in %.2fs", dst, len(plan), manifest["n_rows"], seconds)
    return JobSummary(
        input_path=str(src), output_path=str(dst), n_symbols=len(symbols), n_rows=manifest["n_rows"],
        n_groups=len(plan), feature_names=tuple(names), backend=",".join(sorted(backends_used)), dtype=dtype,
        seconds=seconds, scheduler=address, groups_skipped=skipped, backends_used=backends_used,
    )


def _run_groups(
    client: Any, src: Path, dst: Path, plan: list[dict[str, Any]], manifest: dict[str, Any], manifest_path: Path,
    windows: tuple[int, ...], backend: str | None, dtype: str, budget: int, job_id: str, progress: bool,
    part_hook: PartHook | None,
) -> None:
    from distributed import as_completed  # noqa: PLC0415

    todo = [g for g in plan if not g["done"]]
    per_host = _workers_per_host(client)
    run_token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            compute_group_part, str(src), str(dst), g["index"], g["symbols"], windows, backend, dtype, budget,
            job_id, per_host, part_hook, key=f"tickforge-features-{run_token}-{g['index']:05d}", pure=False,
            retries=TASK_RETRIES,
        )
        for g in todo
    ]
    total = sum(len(g["symbols"]) for g in plan)
    with _progress_bar(progress, total, "features (dask)") as advance:
        advance(sum(len(g["symbols"]) for g in plan if g["done"]))
        last_flush = time.monotonic()
        try:
            for future in as_completed(futures):
                index = int(str(future.key).rsplit("-", 1)[1])
                try:
                    result = future.result()
                except TickforgeError:
                    raise
                except Exception as exc:
                    raise ClusterError(
                        f"group {index} failed on the cluster ({type(exc).__name__}: {_first_line(exc)}); "
                        f"finished groups are kept in {dst}, re-run with --resume"
                    ) from None
                if "error" in result:
                    raise InputError(result["error"])
                group = plan[index]
                group["done"], group["backend"] = True, result["backend"]
                if result["rows"] != group["rows"]:
                    raise ClusterError(f"group {index} wrote {result['rows']} rows, expected {group['rows']}")
                now = time.monotonic()
                if now - last_flush >= MANIFEST_FLUSH_S:
                    # Throttled: resume trusts each part's own footer, the manifest is the human-readable log.
                    _write_manifest(manifest_path, manifest)
                    last_flush = now
                advance(len(group["symbols"]))
        except BaseException:
            client.cancel(futures)
            _write_manifest(manifest_path, manifest)
            raise


def _parse_cluster(spec: str) -> int:
    kind, _, count = spec.partition(":")
    if kind != "local" or not count.isdigit() or int(count) < 1:
        raise InputError(f"--cluster must look like local:N with N >= 1 worker processes, got {spec!r}")
    return int(count)


class _connect:  # noqa: N801 - a context manager that reads like a call
    """A Dask client for an existing scheduler, or a LocalCluster on loopback started (and stopped) here."""

    def __init__(self, scheduler: str | None, n_local: int) -> None:
        self.scheduler, self.n_local = scheduler, n_local
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster  # noqa: PLC0415

        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ClusterError(f"cannot reach the Dask scheduler at {self.scheduler}: {_first_line(exc)}") from None
        else:
            if not log.isEnabledFor(logging.DEBUG):
                # The scheduler and nannies narrate every start and stop at INFO; keep the job's own lines readable.
                logging.getLogger("distributed").setLevel(logging.WARNING)
            self.cluster = LocalCluster(
                n_workers=self.n_local, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            )
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _group_budget(client: Any, memory_budget_mb: float) -> int:
    """The user's budget, cut down to what the smallest worker can hold per thread."""
    budget = int(memory_budget_mb * 2**20)
    workers = _workers(client)
    per_thread = [
        int(w["memory_limit"]) // max(1, int(w.get("nthreads", 1)))
        for w in workers.values()
        if w.get("memory_limit")
    ]
    if per_thread:
        budget = min(budget, min(per_thread) // WORKER_MEMORY_SHARE)
    return max(1, budget)


def _workers(client: Any) -> dict[str, dict[str, Any]]:
    try:
        info = client.scheduler_info(n_workers=-1)  # newer Dask lists only a few workers by default
    except TypeError:
        info = client.scheduler_info()
    return dict(info.get("workers", {}))


def _workers_per_host(client: Any) -> dict[str, int]:
    from urllib.parse import urlparse  # noqa: PLC0415

    counts: dict[str, int] = {}
    for address in _workers(client):
        host = urlparse(address).hostname or ""
        counts[host] = counts.get(host, 0) + 1
    return counts


def _symbol_lengths(src: Path) -> tuple[list[str], np.ndarray]:
    """Sorted symbols and their bar counts, from the symbol column alone."""
    dataset = open_bars_dataset(src)
    column = dataset.to_table(columns=["symbol"]).column("symbol")
    if len(column) == 0:
        raise InputError(f"{src}: input holds no bars (0 rows)")
    if column.null_count:
        raise InputError(f"{src}: column 'symbol' has {column.null_count} null value(s)")
    counts = pc.value_counts(column.cast(pa.string()))
    names = counts.field("values").to_numpy(zero_copy_only=False)
    order = np.argsort(names, kind="stable")
    return [str(s) for s in names[order]], counts.field("counts").to_numpy()[order].astype(np.int64)


def _check_output_dir(dst: Path, src: Path, resume: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise InputError(f"output {dst} is a file; a distributed run writes a directory of parts")
    parent = dst.resolve().parent
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory {parent} is not writable")
    if dst.resolve() == src or (src.is_dir() and src in dst.resolve().parents):
        raise InputError(f"output {dst} must not be the input or inside it")
    if dst.is_dir() and any(dst.iterdir()):
        if not resume:
            raise InputError(f"output {dst} already exists and is not empty; pass --resume to continue it, or remove it")
        if not (dst / MANIFEST).is_file():
            raise InputError(f"cannot resume {dst}: it has no {MANIFEST}")


def _job_id(src: Path, windows: tuple[int, ...], dtype: str, names: Sequence[str]) -> str:
    """Fingerprint of what the output depends on: input files (path, size, mtime), windows, dtype, features."""
    files = sorted(str(p) for p in (src.rglob("*") if src.is_dir() else [src]) if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(json.dumps([list(windows), dtype, list(names)]).encode())
    return h.hexdigest()[:16]


def _digest(symbols: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(symbols).encode()).hexdigest()[:16]


def _load_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot resume: {path} is unreadable ({_first_line(exc)})") from None
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("groups"), list):
        raise InputError(f"cannot resume: {path} is not a tickforge manifest (version {MANIFEST_VERSION})")
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = temporary_sibling(path)
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)


def _remove_stale_temporaries(dst: Path) -> None:
    """Temp parts left by a worker that died mid-write (hidden, so readers never saw them)."""
    for stale in dst.glob(".part-*.tmp-*"):
        stale.unlink(missing_ok=True)


def read_dataset(path: str | os.PathLike[str]) -> pa.Table:
    """A finished distributed output as one table, parts in group order (the single-machine table)."""
    root = Path(path)
    manifest = _load_manifest(root / MANIFEST)
    if manifest is None:
        raise InputError(f"{root} has no {MANIFEST}; not a distributed features output")
    if not manifest.get("complete"):
        raise InputError(f"{root} is incomplete; finish it with --resume")
    tables = [pq.read_table(str(root / g["part"])).replace_schema_metadata(None) for g in manifest["groups"]]
    return pa.concat_tables(tables)
