"""Bars against a pandas resample of the same trades at every timeframe, the window-boundary and quiet-feed
cases, late and bad trades, activity bars, and microstructure sampled from the book at close."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from engine.bars import DEFAULT_TIMEFRAMES, MICRO_DTYPE, BarAggregator, timeframe_seconds
from engine.book import BookManager
from engine.errors import InputError
from engine.events import BAR_DTYPE, FLAG_CORRECTION, SIDE_ASK, SIDE_BID, TRADE_DTYPE

S = 1_000_000_000
DAY = 86_400 * S
T0 = 19_700 * DAY  # a UTC midnight in 2023


def trades(rows: list[tuple]) -> np.ndarray:
    """(ts_ns, symbol, price, size[, flags]) rows -> TRADE_DTYPE (recv_ns = ts_ns + 1)."""
    out = np.zeros(len(rows), dtype=TRADE_DTYPE)
    for i, row in enumerate(rows):
        ts, s, price, size = row[:4]
        out[i]["ts_ns"] = ts
        out[i]["recv_ns"] = ts + 1
        out[i]["symbol_id"] = s
        out[i]["price"] = price
        out[i]["size"] = size
        out[i]["flags"] = row[4] if len(row) > 4 else 0
        out[i]["trade_id"] = i
    return out


def random_trades(rng: np.random.Generator, n: int, n_sym: int) -> np.ndarray:
    """Bursts and long quiet gaps over ~2.5 days, some trades exactly on boundaries, equal timestamps."""
    gaps = rng.exponential(0.3 * S, n)
    quiet = rng.random(n) < 0.002
    gaps[quiet] = rng.uniform(10 * 60 * S, 6 * 3600 * S, quiet.sum())  # quiet hours: empty windows
    ts = T0 + np.cumsum(gaps).astype(np.int64)
    same = rng.random(n) < 0.05
    ts[1:][same[1:]] = ts[:-1][same[1:]]  # equal timestamps
    ts = np.maximum.accumulate(ts)
    on_edge = rng.random(n) < 0.02
    for unit in (S, 60 * S, 3600 * S):
        snap = on_edge & (rng.random(n) < 0.5)
        ts[snap] = ts[snap] - ts[snap] % unit  # exactly on a boundary (after the previous trade? re-sort below)
    ts = np.sort(ts, kind="stable")
    out = np.zeros(n, dtype=TRADE_DTYPE)
    out["ts_ns"] = ts
    out["recv_ns"] = ts + rng.integers(1_000, 100_000, n)
    out["symbol_id"] = rng.integers(0, n_sym, n)
    out["price"] = np.round(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))), 2)
    out["size"] = rng.integers(0, 500, n) / 4.0  # includes zero-size prints
    out["trade_id"] = np.arange(n)
    return out


def pandas_bars(t: np.ndarray, symbol: int, seconds: int) -> pd.DataFrame:
    df = pd.DataFrame({"price": t["price"], "size": t["size"]}, index=pd.to_datetime(t["ts_ns"], unit="ns", utc=True))
    df = df[t["symbol_id"] == symbol]
    df["pv"] = df["price"] * df["size"]
    r = df.resample(f"{seconds}s", origin="epoch", closed="left", label="left")
    out = pd.DataFrame({
        "open": r["price"].first(), "high": r["price"].max(), "low": r["price"].min(), "close": r["price"].last(),
        "volume": r["size"].sum(), "pv": r["pv"].sum(), "count": r["price"].count(),
    })
    return out[out["count"] > 0]


@pytest.mark.parametrize("timeframes, n_trades", [
    (DEFAULT_TIMEFRAMES, 25_000),
    (("1m", "3m", "5m", "15m", "45m", "1h", "2h", "1d"), 8_000),  # siblings: 3m and 5m both feed from 1m
])
def test_every_timeframe_matches_pandas_resample(timeframes: tuple[str, ...], n_trades: int) -> None:
    rng = np.random.default_rng(3)
    n_sym = 3
    t = random_trades(rng, n_trades, n_sym)
    assert (t["ts_ns"] % (60 * S) == 0).any()
    bad = trades([(int(t["ts_ns"][100]), 0, math.nan, 1.0), (int(t["ts_ns"][200]), 1, -5.0, 1.0),
                  (int(t["ts_ns"][300]), 2, 10.0, -1.0), (int(t["ts_ns"][400]), 7, 10.0, 1.0),
                  (int(t["ts_ns"][500]), 0, 10.0, 1.0, FLAG_CORRECTION)])
    stream = np.concatenate([t[:100], bad[:1], t[100:200], bad[1:2], t[200:300], bad[2:3], t[300:400], bad[3:], t[400:]])
    agg = BarAggregator(n_sym, timeframes)
    pieces = [agg.add_trades(chunk) for chunk in np.array_split(stream, 37)]
    pieces.append(agg.close_all())
    bars = np.concatenate([p.bars for p in pieces])
    tf = np.concatenate([p.timeframe for p in pieces])
    assert agg.stats()["dropped_bad_price"] == 2 and agg.stats()["dropped_bad_size"] == 1
    assert agg.stats()["dropped_unknown_symbol"] == 1 and agg.stats()["skipped_corrections"] == 1
    assert agg.stats()["trades"] == len(t) and agg.stats()["late_trades"] == 0
    assert np.all(np.isnan(np.concatenate([p.micro for p in pieces])["mid"]))  # no book attached
    for k, name in enumerate(timeframes):
        seconds = timeframe_seconds(name)
        for s in range(n_sym):
            got = bars[(tf == k) & (bars["symbol_id"] == s)]
            exp = pandas_bars(t, s, seconds)
            where = f"{name} symbol {s}"
            assert len(got) == len(exp), where
            assert np.array_equal(got["ts_ns"], exp.index.as_unit("ns").asi8), where
            for col in ("open", "high", "low", "close"):
                assert np.array_equal(got[col], exp[col].to_numpy()), f"{where} {col}"
            assert np.array_equal(got["trade_count"], exp["count"].to_numpy()), where
            np.testing.assert_allclose(got["volume"], exp["volume"].to_numpy(), rtol=1e-12, err_msg=where)
            with np.errstate(invalid="ignore", divide="ignore"):
                vwap = np.where(exp["volume"] > 0, exp["pv"] / exp["volume"], np.nan)
            np.testing.assert_allclose(got["vwap"], vwap, rtol=1e-12, err_msg=where)
    assert len(bars[tf == timeframes.index("1d")]) >= 2 * n_sym


def test_window_boundaries_and_empty_windows() -> None:
    agg = BarAggregator(1, ("1s", "1m"))
    out = agg.add_trades(trades([
        (T0 + 999_999_999, 0, 10.0, 1.0),   # last ns of the first second
        (T0 + S, 0, 11.0, 2.0),             # exactly on the boundary: opens the next bar
        (T0 + 5 * S, 0, 12.0, 1.0),         # seconds 2-4 had no trades: no bars for them
        (T0 + 60 * S, 0, 13.0, 1.0),        # exactly on the minute
    ]))
    one_s = out.select("1s")
    assert one_s["ts_ns"].tolist() == [T0, T0 + S, T0 + 5 * S]
    assert one_s["close"].tolist() == [10.0, 11.0, 12.0]
    minute = out.select("1m")
    assert minute["ts_ns"].tolist() == [T0] and minute["trade_count"].tolist() == [3]
    assert minute["open"][0] == 10.0 and minute["close"][0] == 12.0 and minute["volume"][0] == 4.0
    assert minute["vwap"][0] == pytest.approx((10 + 22 + 12) / 4)
    assert minute["recv_ns"][0] == T0 + 5 * S + 1
    assert out.bars.dtype == BAR_DTYPE and out.micro.dtype == MICRO_DTYPE


def test_flush_closes_bars_on_a_quiet_feed() -> None:
    agg = BarAggregator(2, ("1s", "5s", "1m"))
    agg.add_trades(trades([(T0 + 200_000_000, 0, 10.0, 1.0), (T0 + 3 * S + 5, 1, 20.0, 1.0)]))
    assert agg.next_close_ns() == T0 + S
    assert len(agg.flush(T0 + S - 1)) == 0              # no window ended yet
    first = agg.flush(T0 + S)                          # symbol 0's first second ended exactly now
    assert [(first.names[k], int(b["symbol_id"])) for b, k in zip(first.bars, first.timeframe)] == [("1s", 0)]
    assert agg.next_close_ns() == T0 + 4 * S
    second = agg.flush(T0 + 5 * S)
    assert sorted((second.names[k], int(b["symbol_id"])) for b, k in zip(second.bars, second.timeframe)) == [
        ("1s", 1), ("5s", 0), ("5s", 1)]
    assert len(agg.flush(T0 + 5 * S)) == 0            # idempotent
    minute = agg.flush(T0 + 60 * S)
    assert sorted(int(b["symbol_id"]) for b in minute.select("1m")) == [0, 1]
    assert agg.next_close_ns() is None
    # a trade inside a minute a flush already emitted: its 1s and 5s bars never existed, so they come out;
    # the minute bar does not come out twice, and the trade is counted late for it
    late = agg.add_trades(trades([(T0 + 30 * S, 0, 99.0, 1.0)]))
    assert len(late) == 0
    rest = agg.close_all()
    assert [rest.names[k] for k in rest.timeframe] == ["1s", "5s"] and rest.bars["close"].tolist() == [99.0, 99.0]
    assert agg.stats()["late_trades"] == 1
    # a trade older than the last closed second is late at once
    agg.add_trades(trades([(T0 + 29 * S, 0, 98.0, 1.0)]))
    assert agg.stats()["late_trades"] == 2 and len(agg.close_all()) == 0


def test_late_and_reordered_trades() -> None:
    agg = BarAggregator(1, ("1s", "1m"))
    out = agg.add_trades(trades([
        (T0 + 500_000_000, 0, 10.0, 1.0),
        (T0 + 100_000_000, 0, 9.0, 1.0),    # earlier, same second: becomes the open
        (T0 + 900_000_000, 0, 11.0, 1.0),
        (T0 + 800_000_000, 0, 12.0, 1.0),   # earlier than the close: not the close, but the high
        (T0 + 2 * S, 0, 13.0, 1.0),
        (T0 + 700_000_000, 0, 8.0, 2.0),    # late: its second is closed; the open minute still takes it
    ]))
    first = out.select("1s")[0]
    assert (first["open"], first["high"], first["low"], first["close"], first["trade_count"]) == (9.0, 12.0, 9.0, 11.0, 4)
    assert agg.stats()["late_trades"] == 1
    minute = agg.close_all().select("1m")[0]
    assert (minute["open"], minute["high"], minute["low"], minute["close"]) == (9.0, 13.0, 8.0, 13.0)
    assert minute["trade_count"] == 6 and minute["volume"] == 7.0
    # sibling timeframes (3m and 5m both fed by 1m): a late trade reaches both, and 15m through 5m
    agg = BarAggregator(1, ("1m", "3m", "5m", "15m"))
    first = agg.add_trades(trades([(T0 + 10 * S, 0, 10.0, 1.0), (T0 + 70 * S, 0, 11.0, 1.0), (T0 + 20 * S, 0, 7.0, 1.0)]))
    assert first.select("1m")["low"].tolist() == [10.0]  # the late 7.0 missed its minute
    out = agg.close_all()
    assert out.select("1m")["low"].tolist() == [11.0]
    for name in ("3m", "5m", "15m"):
        bar = out.select(name)[0]
        assert (bar["low"], bar["trade_count"], bar["close"]) == (7.0, 3, 11.0), name


def test_activity_bars_match_a_python_reference() -> None:
    rng = np.random.default_rng(9)
    t = random_trades(rng, 4_000, 2)
    value_thresholds = np.array([40_000.0, 90_000.0])
    agg = BarAggregator(2, ("1m",), tick_bars=[7], volume_bars=[250.0], value_bars=[value_thresholds])
    assert agg.names == ("1m", "tick:7", "volume:250", "value:per-symbol-0")
    pieces = [agg.add_trades(c) for c in np.array_split(t, 5)] + [agg.close_all()]
    names = agg.names
    got = {name: np.concatenate([p.select(name) for p in pieces]) for name in names[1:]}
    for name, measure, threshold in [
        ("tick:7", lambda p, q: 1.0, lambda s: 7.0),
        ("volume:250", lambda p, q: q, lambda s: 250.0),
        ("value:per-symbol-0", lambda p, q: p * q, lambda s: value_thresholds[s]),
    ]:
        for s in range(2):
            mine = t[t["symbol_id"] == s]
            expected, cur = [], None
            for row in mine:
                p, q, ts = float(row["price"]), float(row["size"]), int(row["ts_ns"])
                if cur is None:
                    cur = {"ts": ts, "o": p, "h": p, "l": p, "c": p, "v": 0.0, "n": 0, "m": 0.0}
                cur["h"], cur["l"], cur["c"] = max(cur["h"], p), min(cur["l"], p), p
                cur["v"] += q
                cur["n"] += 1
                cur["m"] += measure(p, q)
                if cur["m"] >= threshold(s):
                    expected.append(cur)
                    cur = None
            if cur is not None:
                expected.append(cur)  # close_all emits the open remainder
            bars = got[name][got[name]["symbol_id"] == s]
            assert len(bars) == len(expected), f"{name} {s}"
            assert bars["ts_ns"].tolist() == [e["ts"] for e in expected]
            assert bars["open"].tolist() == [e["o"] for e in expected]
            assert bars["high"].tolist() == [e["h"] for e in expected]
            assert bars["low"].tolist() == [e["l"] for e in expected]
            assert bars["close"].tolist() == [e["c"] for e in expected]
            assert bars["trade_count"].tolist() == [e["n"] for e in expected]
            np.testing.assert_allclose(bars["volume"], [e["v"] for e in expected], rtol=1e-12)


def test_microstructure_is_sampled_from_the_book_when_the_bar_closes() -> None:
    book = BookManager(2, 0.01, depth_levels=2)
    agg = BarAggregator(2, ("1s", "5s"), book=book)
    for side, price, size in [(SIDE_BID, 99.99, 2.0), (SIDE_BID, 99.98, 6.0), (SIDE_ASK, 100.01, 1.0), (SIDE_ASK, 100.03, 3.0)]:
        book.update(0, side, price, size)
    agg.add_trades(trades([(T0 + 10, 0, 100.0, 1.0), (T0 + 20, 1, 50.0, 1.0)]))
    book.update(0, SIDE_ASK, 100.01, 0.0)  # the book moves before the bar closes: the close state counts
    out = agg.flush(T0 + S)
    assert [int(b["symbol_id"]) for b in out.bars] == [0, 1]
    m = out.micro[0]
    assert m["mid"] == pytest.approx(100.01) and m["spread"] == pytest.approx(0.04)
    assert m["spread_bps"] == pytest.approx(0.04 / 100.01 * 1e4)
    assert (m["bid_depth"], m["ask_depth"]) == (8.0, 3.0) and m["imbalance"] == pytest.approx(5.0 / 11.0)
    assert m["microprice"] == pytest.approx((99.99 * 3.0 + 100.03 * 2.0) / 5.0)
    assert math.isnan(out.micro[1]["mid"]) and out.micro[1]["bid_depth"] == 0.0  # symbol 1 has an empty book
    assert len(out.select_micro("1s")) == 2


def test_output_grows_when_one_batch_closes_many_bars() -> None:
    agg = BarAggregator(1, initial_capacity=1)
    rows = [(T0 + k * DAY + k, 0, 10.0 + k, 1.0) for k in range(300)]  # every trade closes all 11 bars
    out = agg.add_trades(trades(rows))
    assert len(out) == 299 * 11
    assert out.select("1d")["close"].tolist() == [10.0 + k for k in range(299)]
    # a batch past the copy limit hands its buffers over; the next batch must not overwrite them
    big = agg.add_trades(trades([(T0 + k * DAY, 0, 1.0 + k, 1.0) for k in range(300, 6_400)]))
    assert len(big) == 6_100 * 11
    after = agg.add_trades(trades([(T0 + 7_000 * DAY, 0, 5.0, 1.0)]))
    assert len(after) == 11 and big.select("1d")["close"][-1] == 6_399.0 and big.select("1d")["close"][0] == 309.0


def test_bad_configuration_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="multiple"):
        BarAggregator(1, ("2s", "5s"))
    with pytest.raises(InputError, match="ascending"):
        BarAggregator(1, ("1m", "1s"))
    with pytest.raises(InputError, match="bad timeframe"):
        BarAggregator(1, ("1w",))
    with pytest.raises(InputError, match="threshold"):
        BarAggregator(1, tick_bars=[0])
    with pytest.raises(InputError, match="book holds"):
        BarAggregator(3, book=BookManager(2, 0.01))
    agg = BarAggregator(1)
    with pytest.raises(InputError, match="trades must be"):
        agg.add_trades(np.zeros(2, dtype=BAR_DTYPE))
    with pytest.raises(InputError, match="unknown timeframe"):
        agg.close_all().select("2m")
