"""Test-wide settings. Numba's bounds checking and the CUDA simulator are set by the test command
(README, .ci/run); they are defaulted here too so a bare ``pytest`` behaves the same."""

import os
import sys
from pathlib import Path

os.environ.setdefault("NUMBA_BOUNDSCHECK", "1")
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
sys.path.insert(0, str(Path(__file__).parent))
