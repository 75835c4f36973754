"""Picks the compute backend (gpu | cpu) for panel kernels; the only place that does.

``auto`` takes the GPU when cupy imports and a CUDA device answers, else the CPU fallback.
``gpu`` without a usable device is an error, never a silent fallback. The numba CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) counts as a device only when asked for explicitly, so CI can run
the GPU kernels on numpy arrays; ``auto`` never picks the simulator.
The choice is logged once per resolution.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from types import ModuleType

from engine.errors import TickforgeError

log = logging.getLogger("tickforge.backend")

BACKENDS = ("auto", "gpu", "cpu")
ENV_VAR = "ENGINE_BACKEND"


class BackendError(TickforgeError):
    """The requested backend cannot be used (unknown name, or no GPU for ``gpu``)."""


@dataclass(frozen=True)
class Backend:
    """A resolved backend: its name, the kernel module to call, and why it was chosen."""

    name: str            # "gpu" or "cpu"
    kernels: ModuleType  # gpu_kernels or cpu_fallback: same function names and signatures
    reason: str
    simulator: bool = False

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"


def cuda_simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def probe_gpu() -> tuple[bool, str]:
    """Whether a real CUDA device answers through cupy; never raises, never imports on CPU hosts."""
    if importlib.util.find_spec("cupy") is None:
        return False, "cupy is not installed (pip install 'tickforge[gpu]')"
    try:
        import cupy  # noqa: PLC0415 - imported only when probing

        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return False, "cupy found no CUDA device"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return True, f"CUDA device 0: {name}"
    except Exception as exc:  # driver missing, no device, broken install
        return False, f"cupy could not reach a CUDA device: {type(exc).__name__}: {exc}"


def resolve_backend(requested: str | None = None) -> Backend:
    """Resolve ``auto | gpu | cpu`` (argument, else ``ENGINE_BACKEND``, else ``auto``)."""
    source = "argument"
    if requested is None:
        requested, source = os.environ.get(ENV_VAR, "auto"), ENV_VAR
    name = str(requested).strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r} (from {source}); expected one of {', '.join(BACKENDS)}")

    if name == "cpu":
        chosen = Backend("cpu", importlib.import_module("cpu_fallback"), "requested cpu")
    elif name == "gpu":
        if cuda_simulator_enabled():
            chosen = Backend("gpu", importlib.import_module("gpu_kernels"), "requested gpu; numba CUDA simulator", True)
        else:
            ok, why = probe_gpu()
            if not ok:
                raise BackendError(f"backend 'gpu' requested but no GPU is usable: {why}")
            chosen = Backend("gpu", importlib.import_module("gpu_kernels"), f"requested gpu; {why}")
    else:
        ok, why = (False, "CUDA simulator is not used by auto") if cuda_simulator_enabled() else probe_gpu()
        if ok:
            chosen = Backend("gpu", importlib.import_module("gpu_kernels"), f"auto: {why}")
        else:
            chosen = Backend("cpu", importlib.import_module("cpu_fallback"), f"auto: no GPU ({why})")
    log.info("backend=%s (%s)", chosen.name, chosen.reason)
    return chosen
