"""tickforge: a GPU-accelerated batch-and-stream compute engine for trading.

Importing ``engine`` is cheap: it imports neither cupy nor numba.cuda and compiles nothing.
Subsystems are imported where they are used (``engine.features``, ``engine.book``, ...).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
