"""Shared benchmark plumbing: machine description, timing, and the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, object] = {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        pass
    gpu = os.environ.get("TICKFORGE_BENCH_GPU_NAME")
    if gpu:
        info["gpu"] = gpu
    return info


def machine_tag() -> str:
    """Short file-name tag: the GPU model when one was used, else ``cpu<N>``."""
    gpu = os.environ.get("TICKFORGE_BENCH_GPU_NAME")
    if gpu:
        return gpu.lower().replace("nvidia", "").strip().replace(" ", "-")
    return f"cpu{os.cpu_count()}"


def best_of(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Best wall time in seconds over ``repeat`` runs (after ``warmup`` untimed runs)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def percentiles_ns(samples_ns: np.ndarray) -> dict[str, float]:
    s = np.asarray(samples_ns, dtype=np.float64)
    return {"p50_ns": float(np.percentile(s, 50)), "p99_ns": float(np.percentile(s, 99)), "max_ns": float(s.max())}


def write_result(name: str, result: dict[str, object]) -> Path:
    """Write ``bench/results/<name>-<machine>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{machine_tag()}.json"
    payload = {"benchmark": name, "machine": machine(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path}")
    return path
