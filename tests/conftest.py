"""Test-wide settings. Numba's bounds checking and the CUDA simulator are set by the test command
(README, .ci/run); they are defaulted here too so a bare ``pytest`` behaves the same."""

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("NUMBA_BOUNDSCHECK", "1")
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if os.environ["NUMBA_BOUNDSCHECK"] == "1":
    # numba's on-disk cache does not key on bounds checking: keep the checked builds apart, or a
    # benchmark run after the tests would load them and time the checks
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba-cache" / "boundscheck"))
sys.path.insert(0, str(Path(__file__).parent))

# Tests that capture DEBUG logs must not make numba log its own compiler passes (slow, huge).
logging.getLogger("numba").setLevel(logging.WARNING)
