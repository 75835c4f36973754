"""FeatureComputer.batch on the CPU: every TA-Lib indicator against TA-Lib, the others against numpy.

TA-Lib is the oracle for SMA, EMA, RSI, ATR, STDDEV, BBANDS, MOM, ROC and MACD: float64 values agree
to 1e-9 relative and NaN positions are identical (leading lookback, late starts, gaps).
"""

from __future__ import annotations

import numpy as np
import pytest
import talib
from numpy.lib.stride_tricks import sliding_window_view

from engine.errors import InputError
from engine.features import DEFAULT_WINDOWS, FeatureComputer, feature_names

RTOL = 1e-9


def random_walk(n_bars: int, n_symbols: int, seed: int, level: float = 100.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = level * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_symbols)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.002, close.shape))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.005, close.shape))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.005, close.shape))
    volume = rng.integers(1, 50_000, close.shape).astype(np.float64)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def assert_same(got: np.ndarray, want: np.ndarray, name: str, rtol: float = RTOL, atol: float = 0.0) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN positions of {name}")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def assert_matches_talib(frame, bars: dict[str, np.ndarray], windows, macd=(12, 26, 9)) -> None:
    close, high, low = bars["close"], bars["high"], bars["low"]
    for s in range(close.shape[1]):
        c, h, lo = close[:, s], high[:, s], low[:, s]
        for w in windows:
            upper, middle, lower = talib.BBANDS(c, w, 2.0, 2.0)
            expected = {
                f"sma_{w}": talib.SMA(c, w), f"ema_{w}": talib.EMA(c, w), f"rsi_{w}": talib.RSI(c, w),
                f"atr_{w}": talib.ATR(h, lo, c, w), f"stddev_{w}": talib.STDDEV(c, w),
                f"bb_upper_{w}": upper, f"bb_middle_{w}": middle, f"bb_lower_{w}": lower,
                f"mom_{w}": talib.MOM(c, w), f"roc_{w}": talib.ROC(c, w),
            }
            for name, want in expected.items():
                assert_same(frame[name][:, s], want, f"{name} (symbol {s})")
        line, signal, hist = talib.MACD(c, *macd)
        assert_same(frame["macd"][:, s], line, f"macd (symbol {s})")
        assert_same(frame["macd_signal"][:, s], signal, f"macd_signal (symbol {s})")
        assert_same(frame["macd_hist"][:, s], hist, f"macd_hist (symbol {s})")


@pytest.fixture(scope="module")
def cpu() -> FeatureComputer:
    return FeatureComputer(backend="cpu")


def test_default_names_cover_every_indicator_and_window(cpu):
    names = cpu.names
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert names == feature_names(DEFAULT_WINDOWS)
    for w in DEFAULT_WINDOWS:
        for kind in ("sma", "ema", "rsi", "atr", "stddev", "bb_upper", "bb_middle", "bb_lower", "mom", "roc",
                     "logret", "vol", "vwap", "volz"):
            assert f"{kind}_{w}" in names
    assert names[-4:] == ("macd", "macd_signal", "macd_hist", "range_bps")
    assert FeatureComputer((14, 3), backend="cpu").names[:2] == ("sma_14", "sma_3")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_walks_match_talib(seed):
    rng = np.random.default_rng(seed)
    windows = (2, 200, *sorted(rng.choice(np.arange(3, 200), size=3, replace=False).tolist()))
    bars = random_walk(700, 3, seed)
    frame = FeatureComputer(windows, backend="cpu").batch(**bars)
    assert frame.backend == "cpu" and frame["sma_2"].shape == (700, 3)
    assert_matches_talib(frame, bars, windows)


def test_flat_series_match_talib_rsi_zero_and_no_spread(cpu):
    n = 120
    flat = np.column_stack([np.full(n, 100.1), np.full(n, 0.3), np.r_[np.full(60, 42.5), np.linspace(42.5, 50, 60)]])
    bars = {"open": flat, "high": flat, "low": flat, "close": flat, "volume": np.full(flat.shape, 500.0)}
    frame = cpu.batch(**bars)
    assert_matches_talib(frame, bars, DEFAULT_WINDOWS)
    assert np.all(frame["rsi_10"][10:, 0] == 0.0)  # TA-Lib: RSI of a flat series is 0
    assert np.all(frame["stddev_20"][19:, :2] == 0.0)
    assert np.all(frame["volz_20"][19:, :] == 0.0)  # equal volumes: no surprise
    assert np.all(frame["vol_5"][5:, :2] == 0.0)


def test_late_starts_and_gaps_match_talib_nan_positions():
    bars = random_walk(400, 4, seed=9)
    bars["close"][:13, 1] = np.nan  # listed late: TA-Lib starts at the first value
    bars["close"][150, 2] = np.nan  # a gap: poisons running sums (SMA, EMA, MACD), RSI reads 0
    bars["high"][80, 3] = np.nan  # only ATR's inputs
    bars["close"][:5, 0] = np.nan
    bars["close"][390, 0] = np.nan
    windows = (3, 14, 30)
    frame = FeatureComputer(windows, backend="cpu").batch(**bars)
    assert_matches_talib(frame, bars, windows)
    assert np.isnan(frame["sma_14"][200, 2]) and frame["rsi_14"][200, 2] == 0.0
    assert not np.isnan(frame["stddev_3"][399, 2])  # TA-Lib's variance is rebuilt past the gap


def test_long_series_through_reseeds_matches_talib():
    bars = random_walk(10_000, 2, seed=4, level=5_000.0)  # > 2 re-seed periods of every running sum
    windows = (5, 77)
    frame = FeatureComputer(windows, backend="cpu").batch(**bars)
    assert_matches_talib(frame, bars, windows)


@pytest.mark.parametrize("macd", [(12, 26, 9), (5, 35, 5), (3, 10, 16), (2, 3, 1)])
def test_macd_triples_match_talib(macd):
    bars = random_walk(300, 2, seed=sum(macd))
    frame = FeatureComputer((10,), backend="cpu", macd=macd).batch(**bars)
    for s in range(2):
        line, signal, hist = talib.MACD(bars["close"][:, s], *macd)
        assert_same(frame["macd"][:, s], line, "macd")
        assert_same(frame["macd_signal"][:, s], signal, "macd_signal")
        assert_same(frame["macd_hist"][:, s], hist, "macd_hist")
        assert np.isnan(line[macd[1] + macd[2] - 3]) and not np.isnan(line[macd[1] + macd[2] - 2])


def _rolling(x: np.ndarray, w: int, fn) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    out[w - 1:] = fn(sliding_window_view(x, w))
    return out


def test_non_talib_features_match_numpy_reference():
    bars = random_walk(500, 3, seed=5)
    bars["volume"][100, 1] = np.nan
    bars["close"][:7, 2] = np.nan
    vwap = (bars["high"] + bars["low"] + 2 * bars["close"]) / 4.0
    vwap[::7, 0] = np.nan  # missing bar vwap: the typical price stands in
    windows = (2, 5, 20)
    with_vwap = FeatureComputer(windows, backend="cpu").batch(**bars, vwap=vwap)
    without = FeatureComputer(windows, backend="cpu").batch(**bars)
    for s in range(3):
        c, h, lo, v = (bars[k][:, s] for k in ("close", "high", "low", "volume"))
        log_close = np.log(c)
        one_bar = np.r_[np.nan, np.diff(log_close)]
        typical = (h + lo + c) / 3.0
        price = np.where(np.isnan(vwap[:, s]), typical, vwap[:, s])
        assert_same(with_vwap["range_bps"][:, s], (h - lo) / c * 1e4, "range_bps")
        for w in windows:
            logret = np.r_[np.full(w, np.nan), log_close[w:] - log_close[:-w]]
            assert_same(with_vwap[f"logret_{w}"][:, s], logret, f"logret_{w}", atol=1e-13)
            assert_same(with_vwap[f"vol_{w}"][:, s], _rolling(one_bar, w, lambda x: x.std(axis=1)), f"vol_{w}")
            vw = _rolling(price * v, w, lambda x: x.sum(axis=1)) / _rolling(v, w, lambda x: x.sum(axis=1))
            assert_same(with_vwap[f"vwap_{w}"][:, s], vw, f"vwap_{w}")
            vw_typ = _rolling(typical * v, w, lambda x: x.sum(axis=1)) / _rolling(v, w, lambda x: x.sum(axis=1))
            assert_same(without[f"vwap_{w}"][:, s], vw_typ, f"vwap_{w} (typical price)")
            mean = _rolling(v, w, lambda x: x.mean(axis=1))
            sd = _rolling(v, w, lambda x: x.std(axis=1))
            z = np.where(sd > 0, (v - mean) / np.where(sd > 0, sd, 1.0), 0.0)
            assert_same(with_vwap[f"volz_{w}"][:, s], np.where(np.isnan(mean), np.nan, z), f"volz_{w}", atol=1e-12)


def test_drift_two_million_bars_agree_with_fresh_computation_at_the_end():
    n = 2_000_000
    rng = np.random.default_rng(12)
    # a high, wandering price level makes running sums of squares lose digits fastest
    close = 20_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    volume = rng.integers(1, 1_000_000, n).astype(np.float64)
    bars = {"open": close, "high": close * 1.001, "low": close * 0.999, "close": close, "volume": volume}
    fc = FeatureComputer((50,), backend="cpu")
    full = fc.batch(**bars)
    tail = 1_000
    fresh = fc.batch(**{k: v[-tail:] for k, v in bars.items()})
    for name in ("sma_50", "stddev_50", "bb_upper_50", "bb_lower_50", "vol_50", "vwap_50", "volz_50", "mom_50"):
        np.testing.assert_allclose(full[name][-100:], fresh[name][-100:], rtol=RTOL, atol=1e-9, err_msg=name)
    window = close[-50:]
    np.testing.assert_allclose(full["stddev_50"][-1], window.std(), rtol=RTOL)
    np.testing.assert_allclose(full["sma_50"][-1], window.mean(), rtol=RTOL)


def test_float32_output_is_the_float64_result_rounded_once():
    bars = random_walk(200, 2, seed=8)
    f64 = FeatureComputer((4, 9), backend="cpu").batch(**bars)
    f32 = FeatureComputer((4, 9), backend="cpu", dtype="float32").batch(**bars)
    for name in f64.names:
        assert f32[name].dtype == np.float32
        np.testing.assert_array_equal(f32[name], f64[name].astype(np.float32), err_msg=name)


def test_one_symbol_input_gives_one_dimensional_columns_and_out_is_reused(cpu):
    bars = random_walk(120, 3, seed=6)
    panel = cpu.batch(**bars)
    one = cpu.batch(**{k: v[:, 1] for k, v in bars.items()})
    assert one["rsi_20"].shape == (120,) and len(one) == len(cpu.names)
    for name in cpu.names:
        np.testing.assert_array_equal(one[name], panel[name][:, 1], err_msg=name)
    out = cpu.new_output(120, 3)
    again = cpu.batch(**bars, out=out)
    assert again.values is out
    np.testing.assert_array_equal(again["ema_50"], panel["ema_50"])
    ints = cpu.batch(**{k: np.round(v).astype(np.int64) for k, v in bars.items()})  # integer prices are fine
    assert ints["sma_5"].dtype == np.float64


def test_fewer_bars_than_the_window_give_all_nan_and_empty_panels_work():
    bars = random_walk(6, 2, seed=1)
    frame = FeatureComputer((10,), backend="cpu").batch(**bars)
    assert np.isnan(frame["sma_10"]).all() and np.isnan(frame["macd"]).all()
    assert not np.isnan(frame["range_bps"]).any()
    empty = FeatureComputer((10,), backend="cpu").batch(*(np.empty((0, 3)),) * 5)
    assert empty["sma_10"].shape == (0, 3)


def test_bad_input_is_a_clear_input_error(cpu):
    bars = random_walk(30, 2, seed=1)
    with pytest.raises(InputError, match="shape"):
        cpu.batch(bars["open"], bars["high"][:, :1], bars["low"], bars["close"], bars["volume"])
    with pytest.raises(InputError, match="shape"):
        cpu.batch(bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"][:-1])
    with pytest.raises(InputError, match="numeric"):
        cpu.batch(bars["open"], bars["high"], bars["low"], bars["close"].astype(str), bars["volume"])
    with pytest.raises(InputError, match="numeric"):
        cpu.batch(bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"].astype(object))
    with pytest.raises(InputError, match="1-D"):
        cpu.batch(*(np.ones((2, 2, 2)),) * 5)
    with pytest.raises(InputError, match="vwap"):
        cpu.batch(**bars, vwap=bars["close"][:, :1])
    with pytest.raises(InputError, match="out"):
        cpu.batch(**bars, out=np.empty((3, 30, 2)))
    assert issubclass(InputError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"windows": (1, 5)}, "out of range"),
        ({"windows": (0,)}, "out of range"),
        ({"windows": (5, 5)}, "duplicates"),
        ({"windows": ()}, "empty"),
        ({"windows": (2.5,)}, "not an integer"),
        ({"windows": (True,)}, "not an integer"),
        ({"windows": 5}, "sequence"),
        ({"backend": "tpu"}, "unknown backend"),
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": "nonsense"}, "dtype"),
        ({"macd": (26, 12, 9)}, "macd"),
        ({"macd": (12, 26)}, "macd"),
    ],
)
def test_bad_spec_is_a_clear_input_error(kwargs, message):
    with pytest.raises(InputError, match=message):
        FeatureComputer(**{"backend": "cpu", **kwargs})


def test_smallest_and_largest_windows_are_accepted():
    assert FeatureComputer((2, 100_000), backend="cpu").windows == (2, 100_000)
    with pytest.raises(InputError):
        FeatureComputer((100_001,), backend="cpu")
