"""Indicator features: one spec (windows, MACD triple), two modes — batch panels on the chosen backend, and
O(1)-per-bar streaming state that agrees with batch bit for bit.

    fc = FeatureComputer(windows=(5, 10, 20, 50), backend="auto", dtype="float64")
    frame = fc.batch(open, high, low, close, volume)      # name -> (bars, symbols) array
    state = fc.stream(n_symbols); row = state.update(0, o, h, l, c, v)
"""

from engine.features.computer import (
    DEFAULT_MACD,
    DEFAULT_WINDOWS,
    GLOBAL_FEATURES,
    WINDOWED_INDICATORS,
    FeatureComputer,
    FeatureFrame,
    feature_names,
)
from engine.features.streaming import StreamingFeatures

__all__ = [
    "DEFAULT_MACD",
    "DEFAULT_WINDOWS",
    "GLOBAL_FEATURES",
    "WINDOWED_INDICATORS",
    "FeatureComputer",
    "FeatureFrame",
    "StreamingFeatures",
    "feature_names",
]
