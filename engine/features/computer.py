"""``FeatureComputer``: one feature spec (windows, MACD triple, dtype), computed in batch on the chosen backend.

Column names are ``{indicator}_{window}`` for every windowed indicator and window, then ``macd``,
``macd_signal``, ``macd_hist``, ``range_bps``. The TA-Lib indicators follow TA-Lib exactly (see
``cpu_fallback.indicator_steps``); the others are defined here:

- ``logret_w`` = ln(close_t) - ln(close_{t-w}), from the natural log of each close taken once (absolute
  error ~1e-15 for prices below 1e6); NaN for the first w bars.
- ``vol_w`` = population standard deviation of the last w one-bar log returns ln(close_t) - ln(close_{t-1});
  NaN while any of them is NaN (so the first value is at bar w).
- ``vwap_w`` = sum(price * volume) / sum(volume) over the last w bars, price = the bar's own vwap
  when given and not NaN, else the typical price (high + low + close) / 3; NaN while any of the w
  bars lacks a price or volume, or when the w volumes sum to 0.
- ``volz_w`` = (volume_t - mean_w) / sigma_w over the last w volumes including the current one,
  population sigma; 0.0 when the w volumes are all equal; NaN while any of them is NaN.
- ``range_bps`` = (high - low) / close * 1e4.

Accuracy: float64 output agrees with TA-Lib to 1e-9 relative, NaN positions included (in practice to
a few ulp: SMA, EMA, RSI, STDDEV, MOM, ROC and MACD are usually bit for bit; ATR differs in the last
bits because TA-Lib fuses its Wilder step). The GPU agrees with the CPU to 1e-9 relative (the device's
``log`` and fused multiply-adds may round differently). ``dtype="float32"`` computes in float64 and
rounds each stored value once: within 6e-8 relative (half a float32 ulp) of the float64 result, at
half the output bytes (memory, device-to-host copies, Parquet).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from engine.backend import BACKENDS, Backend, resolve_backend
from engine.errors import InputError

if TYPE_CHECKING:
    from engine.features.streaming import StreamingFeatures

log = logging.getLogger("tickforge.features")

WINDOWED_INDICATORS = (
    "sma", "ema", "rsi", "atr", "stddev", "bb_upper", "bb_middle", "bb_lower",
    "mom", "roc", "logret", "vol", "vwap", "volz",
)
GLOBAL_FEATURES = ("macd", "macd_signal", "macd_hist", "range_bps")
DEFAULT_WINDOWS = (5, 10, 20, 50)
DEFAULT_MACD = (12, 26, 9)
MAX_WINDOW = 100_000
DTYPES = {"float64": np.float64, "float32": np.float32}


def feature_names(windows: Iterable[int] = DEFAULT_WINDOWS) -> tuple[str, ...]:
    """Column names in output order: indicator-major, windows in the given order, then the window-free ones."""
    ws = tuple(windows)
    return tuple(f"{kind}_{w}" for kind in WINDOWED_INDICATORS for w in ws) + GLOBAL_FEATURES


def check_windows(windows: object) -> tuple[int, ...]:
    try:
        ws = tuple(windows)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"windows must be a sequence of integers, got {windows!r}") from None
    if not ws:
        raise InputError("windows must not be empty")
    out = []
    for w in ws:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise InputError(f"window {w!r} is not an integer")
        if not 2 <= int(w) <= MAX_WINDOW:
            raise InputError(f"window {int(w)} is out of range: windows must be from 2 to {MAX_WINDOW}")
        out.append(int(w))
    if len(set(out)) != len(out):
        raise InputError(f"windows contain duplicates: {out}")
    return tuple(out)


def check_dtype(dtype: object) -> np.dtype:
    try:
        name = np.dtype(dtype).name  # type: ignore[call-overload]
    except TypeError:
        name = repr(dtype)
    if name not in DTYPES:
        raise InputError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return np.dtype(DTYPES[name])


def check_macd(macd: object) -> tuple[int, int, int]:
    try:
        fast, slow, signal = (int(p) for p in macd)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"macd must be a (fast, slow, signal) triple of integers, got {macd!r}") from None
    if not (2 <= fast < slow <= MAX_WINDOW and 1 <= signal <= MAX_WINDOW):
        raise InputError(f"macd periods must satisfy 2 <= fast < slow and signal >= 1, got {(fast, slow, signal)}")
    return fast, slow, signal


class FeatureFrame(Mapping[str, np.ndarray]):
    """Features of one batch: name -> ``(bars, symbols)`` array (``(bars,)`` for 1-D input).

    ``values`` is the whole ``(n_features, bars, symbols)`` block the columns are views of (a cupy array
    when the GPU path was asked to keep results on the device).
    """

    def __init__(self, names: tuple[str, ...], values: object, backend: str, squeeze: bool) -> None:
        self.names = names
        self.values = values
        self.backend = backend
        self._index = {n: i for i, n in enumerate(names)}
        self._squeeze = squeeze

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            i = self._index[name]
        except KeyError:
            raise KeyError(f"no feature named {name!r}; features are {', '.join(self.names)}") from None
        column = self.values[i]  # type: ignore[index]
        return column[:, 0] if self._squeeze else column

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        shape = tuple(self.values.shape[1:])  # type: ignore[attr-defined]
        return f"FeatureFrame({len(self.names)} features, shape={shape}, backend={self.backend!r})"


def _panel(name: str, array: object, shape: tuple[int, ...] | None) -> np.ndarray:
    """A float64 C-contiguous ``(bars, symbols)`` copy of one input (numeric dtypes only)."""
    a = np.asarray(array)
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise InputError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise InputError(f"{name} must be 1-D (bars,) or 2-D (bars, symbols), got {a.ndim}-D shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise InputError(f"{name} has shape {a.shape} but close has shape {shape}; all inputs must match")
    a2 = a.reshape(a.shape[0], 1) if a.ndim == 1 else a
    return np.ascontiguousarray(a2, dtype=np.float64)


class FeatureComputer:
    """Computes the feature set for given windows: ``batch`` over panels, ``stream`` bar by bar.

    ``backend`` is ``"auto" | "gpu" | "cpu"`` (resolved once by ``engine.backend.resolve_backend``);
    ``dtype`` is ``"float64"`` or ``"float32"`` for batch outputs (streaming is always float64).
    """

    def __init__(
        self,
        windows: Iterable[int] = DEFAULT_WINDOWS,
        backend: str | Backend = "auto",
        dtype: str = "float64",
        macd: tuple[int, int, int] = DEFAULT_MACD,
    ) -> None:
        self.windows = check_windows(windows)
        self.macd = check_macd(macd)
        self.dtype = check_dtype(dtype)
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            if str(backend).strip().lower() not in BACKENDS:
                raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
            self.backend = resolve_backend(backend)
        self.names = feature_names(self.windows)
        self._kernels: ModuleType = importlib.import_module(f"{self.backend.kernels.__name__}.features")

    def __repr__(self) -> str:
        return (
            f"FeatureComputer(windows={self.windows}, macd={self.macd}, backend={self.backend.name!r}, "
            f"dtype={self.dtype.name!r}, {len(self.names)} features)"
        )

    def batch(
        self,
        open: object,  # noqa: A002 - the bar field's name
        high: object,
        low: object,
        close: object,
        volume: object,
        vwap: object | None = None,
        *,
        out: np.ndarray | None = None,
        device: bool = False,
    ) -> FeatureFrame:
        """Every feature over ``(bars, symbols)`` panels (or ``(bars,)`` for one symbol).

        ``out``: an optional ``(n_features, bars, symbols)`` array of this computer's dtype to fill
        (``new_output`` makes one); reusing it across calls saves the page faults of a fresh multi-GB
        allocation. ``device=True`` on a real GPU keeps the results in device memory (cupy arrays);
        otherwise the columns are numpy arrays.
        """
        c = _panel("close", close, None)
        shape = np.shape(close)
        _panel("open", open, shape)  # validated for the caller's sake; no feature reads the open
        h = _panel("high", high, shape)
        lo = _panel("low", low, shape)
        v = _panel("volume", volume, shape)
        vw = _panel("vwap", vwap, shape) if vwap is not None else None
        windows = np.asarray(self.windows, dtype=np.int64)
        if out is not None:
            expected = (len(self.names), *c.shape)
            if not isinstance(out, np.ndarray) or out.shape != expected or out.dtype != self.dtype or not out.flags.c_contiguous:
                got = (getattr(out, "shape", None), getattr(out, "dtype", None))
                raise InputError(f"out must be a C-contiguous {self.dtype.name} array of shape {expected}, got {got}")
        log.debug("features: %s bars x %s symbols, %d features on %s", *c.shape, len(self.names), self.backend.name)
        if self.backend.is_gpu:
            values = self._kernels.compute_feature_panel(h, lo, c, v, vw, windows, self.macd, self.dtype, out=out, device=device)
        else:
            values = self._kernels.compute_feature_panel(h, lo, c, v, vw, windows, self.macd, self.dtype, out=out)
        return FeatureFrame(self.names, values, self.backend.name, squeeze=len(shape) == 1)

    def new_output(self, n_bars: int, n_symbols: int = 1) -> np.ndarray:
        """An empty ``(n_features, bars, symbols)`` array to pass as ``batch(..., out=...)``."""
        return np.empty((len(self.names), n_bars, n_symbols), dtype=self.dtype)

    def stream(self, n_symbols: int) -> StreamingFeatures:
        """Streaming state for ``n_symbols`` symbols (ids 0..n-1), equal to ``batch`` bit for bit in float64."""
        from engine.features.streaming import StreamingFeatures  # noqa: PLC0415 - avoids a cycle

        return StreamingFeatures(self.windows, self.macd, n_symbols)
