"""The command line: help, version, unknown commands and arguments fail clearly."""

import subprocess
import sys

import pytest

from engine import __version__
from engine.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "features" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["launch-rockets"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_engine_works():
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("run", "features", "sim", "record", "replay"):
        assert command in out.stdout
