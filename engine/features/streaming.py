"""Streaming features: O(1) state per (symbol, indicator) in numpy arrays, advanced bar by bar in numba.

The state is updated by the same numba step functions the batch CPU path loops over, so the row a
stream returns for a bar equals the batch output for that bar bit for bit (float64). Streaming always
runs on the CPU: one bar is far too little work to send to a GPU.

State per symbol: bar counters, ring buffers of the last ``max(windows) + 1`` closes, log closes, log
returns, volumes and price*volume (what rolling windows drop), 23 floats per window and 6 for MACD.
A NaN close after a symbol's first bar poisons its TA-Lib indicators exactly as in batch (SMA, EMA,
ATR, MACD stay NaN; RSI reads 0) until ``reset(symbol_id)``; feed carried-forward bars, not NaN.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from engine._jit import FixedTypes
from engine.backend import resolve_backend
from engine.errors import InputError
from engine.features.computer import feature_names


class StreamingFeatures:
    """Per-symbol streaming state; ``update`` / ``update_batch`` return feature rows in ``names`` order."""

    def __init__(self, windows: tuple[int, ...], macd: tuple[int, int, int], n_symbols: int) -> None:
        if isinstance(n_symbols, bool) or not isinstance(n_symbols, (int, np.integer)) or n_symbols < 1:
            raise InputError(f"n_symbols must be a positive integer, got {n_symbols!r}")
        self._kernels = importlib.import_module(f"{resolve_backend('cpu').kernels.__name__}.features")
        self.windows = tuple(windows)
        self.macd = tuple(macd)
        self.names = feature_names(self.windows)
        self.n_symbols = int(n_symbols)
        self._windows = np.asarray(self.windows, dtype=np.int64)
        ring_len = max(max(self.windows) + 1, self.macd[0])
        s = self.n_symbols
        self._counters = np.zeros((s, self._kernels.N_COUNTERS), dtype=np.int64)
        self._rings = np.full((self._kernels.N_RINGS, ring_len, s), np.nan)
        self._window_state = np.zeros((s, self._kernels.N_STATE, len(self.windows)))
        self._macd_state = np.zeros((s, self._kernels.N_MACD_STATE, 1))
        self._step = FixedTypes(self._kernels.stream_update)  # ``step``'s argument types never change

    def __repr__(self) -> str:
        return f"StreamingFeatures({self.n_symbols} symbols, windows={self.windows}, {len(self.names)} features)"

    def _ids(self, symbol_ids: object) -> np.ndarray:
        ids = np.asarray(symbol_ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise InputError(f"symbol_ids must be a 1-D integer array, got dtype {ids.dtype} shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_symbols):
            bad = ids[(ids < 0) | (ids >= self.n_symbols)][0]
            raise InputError(f"symbol id {int(bad)} is out of range 0..{self.n_symbols - 1}")
        return np.ascontiguousarray(ids, dtype=np.int64)

    def _column(self, name: str, values: object, k: int) -> np.ndarray:
        a = np.asarray(values)
        if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
            raise InputError(f"{name} must be numeric, got dtype {a.dtype}")
        if a.shape != (k,):
            raise InputError(f"{name} has shape {a.shape}; expected ({k},) like symbol_ids")
        return np.ascontiguousarray(a, dtype=np.float64)

    def update_batch(
        self,
        symbol_ids: object,
        open: object,  # noqa: A002 - the bar field's name
        high: object,
        low: object,
        close: object,
        volume: object,
        vwap: object | None = None,
    ) -> np.ndarray:
        """One bar for each listed symbol, applied in order in one numba call; returns ``(k, n_features)``."""
        ids = self._ids(symbol_ids)
        k = ids.shape[0]
        self._column("open", open, k)
        cols = [self._column(n, a, k) for n, a in (("high", high), ("low", low), ("close", close), ("volume", volume))]
        vw = self._column("vwap", vwap, k) if vwap is not None else np.full(k, np.nan)
        return self._advance(self._kernels.stream_update, ids, *cols, vw)

    def step(self, symbol_ids: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             volume: np.ndarray, vwap: np.ndarray) -> np.ndarray:
        """``update_batch`` without its checks or numba's type dispatch, for a caller whose arrays are
        always its own fresh ones (the live engine at a bar close): int64 ids in range, writable
        contiguous float64 columns of the same length."""
        return self._advance(self._step, symbol_ids, high, low, close, volume, vwap)

    def _advance(self, kernel, ids, high, low, close, volume, vwap) -> np.ndarray:  # noqa: ANN001
        out = np.empty((len(self.names), 1, ids.shape[0]))
        kernel(ids, high, low, close, volume, vwap, self._windows, *self.macd,
               self._counters, self._rings, self._window_state, self._macd_state, out)
        return np.ascontiguousarray(out[:, 0, :].T)

    def update(
        self,
        symbol_id: int,
        open: float,  # noqa: A002 - the bar field's name
        high: float,
        low: float,
        close: float,
        volume: float,
        vwap: float = math.nan,
    ) -> np.ndarray:
        """One bar of one symbol; returns its feature row (``n_features``,) in ``names`` order."""
        return self.update_batch([symbol_id], [open], [high], [low], [close], [volume], [vwap])[0]

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol's history (after a halt, a split, a corrupt bar): its next bar starts afresh."""
        sid = int(self._ids([symbol_id])[0])
        self._kernels.stream_reset(sid, self._counters, self._rings, self._window_state, self._macd_state)
