"""Backend selection: explicit, logged, never a silent fallback; `import engine` stays light."""

import json
import logging
import subprocess
import sys

import pytest

from engine.backend import BackendError, probe_gpu, resolve_backend


def test_import_engine_imports_no_gpu_library_and_compiles_nothing():
    code = (
        "import sys, json, engine, engine.config, engine.events, engine.backend, engine.cli;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'numba') and "
        "(m.startswith('cupy') or m.startswith('numba.cuda') or m == 'numba'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_cpu_is_chosen_explicitly_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="tickforge.backend"):
        b = resolve_backend("cpu")
    assert b.name == "cpu" and not b.is_gpu
    assert b.kernels.__name__ == "cpu_fallback"
    assert "backend=cpu" in caplog.text


def test_environment_variable_picks_backend(monkeypatch):
    monkeypatch.setenv("ENGINE_BACKEND", "CPU")
    assert resolve_backend().name == "cpu"


def test_unknown_backend_is_a_clear_error(monkeypatch):
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        resolve_backend("tpu")
    monkeypatch.setenv("ENGINE_BACKEND", "quantum")
    with pytest.raises(BackendError, match="ENGINE_BACKEND"):
        resolve_backend()


def test_gpu_without_device_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    if probe_gpu()[0]:
        pytest.skip("a real GPU is present")
    with pytest.raises(BackendError, match="no GPU is usable"):
        resolve_backend("gpu")


def test_auto_without_device_takes_cpu_and_says_why(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    if probe_gpu()[0]:
        pytest.skip("a real GPU is present")
    b = resolve_backend("auto")
    assert b.name == "cpu" and "no GPU" in b.reason


def test_simulator_counts_as_gpu_only_when_asked(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert resolve_backend("gpu").simulator
    assert resolve_backend("auto").name == "cpu"
