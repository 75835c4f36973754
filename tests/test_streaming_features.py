"""Streaming features equal the batch features bit for bit, every feature, every bar."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.features import FeatureComputer

WINDOWS = (2, 5, 21)
MACD = (3, 8, 4)


def _bars(n_bars: int, n_symbols: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_symbols)), axis=0))
    high = close * (1.0 + rng.uniform(0.0, 0.01, close.shape))
    low = close * (1.0 - rng.uniform(0.0, 0.01, close.shape))
    volume = rng.integers(1, 5_000, close.shape).astype(np.float64)
    vwap = (high + low + close) / 3.0
    vwap[rng.random(close.shape) < 0.1] = np.nan
    return {"open": close.copy(), "high": high, "low": low, "close": close, "volume": volume, "vwap": vwap}


def _batch_rows(fc: FeatureComputer, bars: dict[str, np.ndarray]) -> np.ndarray:
    frame = fc.batch(**bars)
    return np.stack([frame[n] for n in fc.names], axis=-1)  # (bars, symbols, features)


def _stream_rows(fc: FeatureComputer, bars: dict[str, np.ndarray], seed: int) -> np.ndarray:
    n_bars, n_symbols = bars["close"].shape
    state = fc.stream(n_symbols)
    rows = np.empty((n_bars, n_symbols, len(fc.names)))
    rng = np.random.default_rng(seed)
    for t in range(n_bars):
        order = rng.permutation(n_symbols)  # symbols arrive in any order within a bar
        got = state.update_batch(order, *(bars[k][t, order] for k in ("open", "high", "low", "close", "volume")),
                                 vwap=bars["vwap"][t, order])
        rows[t, order] = got
    return rows


def test_stream_equals_batch_bit_for_bit_with_gaps_and_late_starts():
    bars = _bars(300, 4, seed=1)
    bars["close"][:9, 1] = np.nan  # late start
    bars["close"][120, 2] = np.nan  # TA-Lib poisoning must be the same in both modes
    bars["volume"][50:53, 3] = np.nan  # window-local features restart after the gap
    bars["high"][60, 0] = np.nan
    fc = FeatureComputer(WINDOWS, backend="cpu", macd=MACD)
    want = _batch_rows(fc, bars)
    got = _stream_rows(fc, bars, seed=2)
    for f, name in enumerate(fc.names):
        np.testing.assert_array_equal(got[:, :, f], want[:, :, f], err_msg=name)


def test_stream_equals_batch_through_reseeds_and_variance_rebuilds():
    bars = _bars(9_000, 2, seed=3)  # more than 2 re-seed periods (4096 bars); rebuilds every 32 windows
    bars["volume"][::500] = 7.0  # flat-ish stretches trigger collapse rebuilds
    fc = FeatureComputer((3, 40), backend="cpu", macd=MACD)
    want = _batch_rows(fc, bars)
    got = _stream_rows(fc, bars, seed=4)
    np.testing.assert_array_equal(got, want)


def test_update_one_symbol_returns_the_row_in_names_order():
    bars = _bars(60, 1, seed=5)
    fc = FeatureComputer(WINDOWS, backend="cpu", macd=MACD)
    want = _batch_rows(fc, bars)[:, 0]
    state = fc.stream(3)
    for t in range(60):
        row = state.update(2, *(float(bars[k][t, 0]) for k in ("open", "high", "low", "close", "volume")),
                           vwap=float(bars["vwap"][t, 0]))
        assert row.shape == (len(fc.names),)
        np.testing.assert_array_equal(row, want[t])
    assert row[fc.names.index("sma_5")] == pytest.approx(bars["close"][-5:, 0].mean(), rel=1e-12)


def test_repeated_symbol_in_one_batch_is_applied_in_order():
    bars = _bars(10, 1, seed=6)
    fc = FeatureComputer(WINDOWS, backend="cpu", macd=MACD)
    want = _batch_rows(fc, bars)[:, 0]
    state = fc.stream(1)
    cols = [bars[k][:, 0] for k in ("open", "high", "low", "close", "volume")]
    got = state.update_batch(np.zeros(10, dtype=np.int64), *cols, vwap=bars["vwap"][:, 0])
    np.testing.assert_array_equal(got, want)


def test_reset_starts_a_symbol_afresh_and_leaves_the_others():
    bars = _bars(80, 2, seed=7)
    fc = FeatureComputer(WINDOWS, backend="cpu", macd=MACD)
    state = fc.stream(2)
    cols = ("open", "high", "low", "close", "volume")
    for t in range(40):
        state.update_batch([0, 1], *(bars[k][t] for k in cols), vwap=bars["vwap"][t])
    state.reset(0)
    rows = np.stack([state.update_batch([0, 1], *(bars[k][t] for k in cols), vwap=bars["vwap"][t]) for t in range(40, 80)])
    tail = _batch_rows(fc, {k: v[40:, :1] for k, v in bars.items()})[:, 0]
    np.testing.assert_array_equal(rows[:, 0], tail)  # symbol 0: as if its history began at bar 40
    np.testing.assert_array_equal(rows[:, 1], _batch_rows(fc, bars)[40:, 1])  # symbol 1 untouched


def test_bad_streaming_input_is_a_clear_error():
    fc = FeatureComputer(WINDOWS, backend="cpu", macd=MACD)
    with pytest.raises(InputError, match="n_symbols"):
        fc.stream(0)
    state = fc.stream(2)
    with pytest.raises(InputError, match="out of range"):
        state.update(2, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="out of range"):
        state.update_batch([0, -1], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1])
    with pytest.raises(InputError, match="shape"):
        state.update_batch([0, 1], [1, 1], [1, 1], [1, 1], [1.0], [1, 1])
    with pytest.raises(InputError, match="integer"):
        state.update_batch([0.5], [1], [1], [1], [1], [1])
    with pytest.raises(InputError, match="numeric"):
        state.update_batch([0], [1], [1], [1], ["x"], [1])
    # nothing was applied by the refused calls: the first real bar is still bar 0
    row = state.update(0, 10.0, 11.0, 9.0, 10.0, 100.0)
    assert row[fc.names.index("range_bps")] == pytest.approx(2_000.0)
    assert np.isnan(row[fc.names.index("sma_2")])
