"""Seeded synthetic one-minute bars for a universe of symbols, in Alpaca's long historical-bars layout.

The universe is realistic enough to exercise the batch job the way real data does: symbols trade
during regular US hours only (so the series has overnight gaps), list late or stop early (different
lengths), and miss some minutes when nobody traded (intraday gaps). Prices follow a geometric random
walk with per-symbol volatility; volume has the intraday U shape. The same seed gives the same table.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

MINUTES_PER_SESSION = 390  # 09:30-16:00 New York
SESSION_OPEN_UTC_MIN = 14 * 60 + 30  # 09:30 EST; daylight saving is ignored, the clock is illustrative
FIRST_SESSION_NS = np.datetime64("2024-01-02T00:00:00", "ns").astype(np.int64)
DAY_NS = 86_400 * 1_000_000_000
MINUTE_NS = 60 * 1_000_000_000


def _symbol_names(n_symbols: int) -> list[str]:
    """Ticker-like names: AAA, AAB, ... (four letters once three run out)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    width = 3 if n_symbols <= 26**3 else 4
    names = []
    for k in range(n_symbols):
        chars = []
        for _ in range(width):
            k, r = divmod(k, 26)
            chars.append(letters[r])
        names.append("".join(reversed(chars)))
    return names


def _session_calendar(n_bars: int) -> np.ndarray:
    """Epoch-ns start times of ``n_bars`` consecutive regular-hours minutes, weekdays only."""
    n_sessions = -(-n_bars // MINUTES_PER_SESSION)
    days = []
    day = 0
    while len(days) < n_sessions:
        weekday = (1 + day) % 7  # 2024-01-02 is a Tuesday (Monday = 0)
        if weekday < 5:
            days.append(day)
        day += 1
    session_starts = FIRST_SESSION_NS + np.asarray(days, dtype=np.int64) * DAY_NS + SESSION_OPEN_UTC_MIN * MINUTE_NS
    minutes = np.arange(MINUTES_PER_SESSION, dtype=np.int64) * MINUTE_NS
    return (session_starts[:, None] + minutes[None, :]).ravel()[:n_bars]


def synthetic_bars(n_symbols: int = 200, n_bars: int = 2_000, seed: int = 7) -> pa.Table:
    """A long-format bars table: ``symbol, timestamp, open, high, low, close, volume, trade_count, vwap``.

    Each symbol has between half and all of ``n_bars`` bars (a contiguous span of the calendar with
    0-5 % of its minutes missing), sorted by symbol then time. Timestamps are UTC nanoseconds.
    """
    if n_symbols < 1 or n_bars < 1:
        raise ValueError("n_symbols and n_bars must be at least 1")
    rng = np.random.default_rng(seed)
    calendar = _session_calendar(n_bars)
    minute_of_session = np.arange(n_bars) % MINUTES_PER_SESSION
    # U-shaped intraday activity: busy at the open and the close, quiet at lunch.
    x = minute_of_session / (MINUTES_PER_SESSION - 1)
    activity = 1.0 + 2.5 * (2.0 * x - 1.0) ** 4

    symbols, stamps, opens, highs, lows, closes, volumes, counts, vwaps = ([] for _ in range(9))
    for name in _symbol_names(n_symbols):
        length = int(rng.integers(max(1, n_bars // 2), n_bars + 1))
        start = int(rng.integers(0, n_bars - length + 1))
        span = np.arange(start, start + length)
        missing_rate = rng.uniform(0.0, 0.05)
        kept = span[rng.random(length) >= missing_rate]
        if kept.size == 0:
            kept = span[:1]

        price0 = float(np.exp(rng.uniform(np.log(5.0), np.log(500.0))))
        sigma = rng.uniform(0.0005, 0.003)  # per-minute log-return volatility
        # Walk every calendar minute so a gap still moves the price (the open after a gap jumps).
        log_ret = rng.normal(0.0, sigma, n_bars)
        log_ret[minute_of_session == 0] += rng.normal(0.0, 6 * sigma, int((minute_of_session == 0).sum()))
        close_path = price0 * np.exp(np.cumsum(log_ret))
        open_path = np.concatenate(([price0], close_path[:-1])) * np.exp(rng.normal(0.0, sigma / 4, n_bars))
        wick = np.abs(rng.normal(0.0, sigma, (2, n_bars)))
        high_path = np.maximum(open_path, close_path) * (1.0 + wick[0])
        low_path = np.minimum(open_path, close_path) * (1.0 - wick[1])

        tick = 0.01 if price0 >= 1.0 else 0.0001
        o = np.round(open_path[kept] / tick) * tick
        c = np.round(close_path[kept] / tick) * tick
        h = np.maximum(np.round(high_path[kept] / tick) * tick, np.maximum(o, c))
        lo = np.minimum(np.round(low_path[kept] / tick) * tick, np.minimum(o, c))
        base_volume = rng.uniform(200.0, 20_000.0)
        v = np.round(base_volume * activity[kept] * rng.lognormal(0.0, 0.6, kept.size))
        v = np.maximum(v, 1.0)
        n = np.maximum(1, np.round(v / rng.uniform(50.0, 200.0))).astype(np.int64)
        # The bar's VWAP sits inside its range, near the typical price.
        w = rng.uniform(0.25, 0.75, kept.size)
        vw = np.round((lo + w * (h - lo) + (h + lo + c) / 3.0) / 2.0 / tick) * tick
        vw = np.clip(vw, lo, h)

        symbols.append(np.full(kept.size, name, dtype=object))
        stamps.append(calendar[kept])
        for acc, arr in ((opens, o), (highs, h), (lows, lo), (closes, c), (volumes, v), (counts, n), (vwaps, vw)):
            acc.append(arr)

    return pa.table(
        {
            "symbol": pa.array(np.concatenate(symbols), type=pa.string()),
            "timestamp": pa.array(np.concatenate(stamps), type=pa.timestamp("ns", tz="UTC")),
            "open": np.concatenate(opens),
            "high": np.concatenate(highs),
            "low": np.concatenate(lows),
            "close": np.concatenate(closes),
            "volume": np.concatenate(volumes),
            "trade_count": np.concatenate(counts),
            "vwap": np.concatenate(vwaps),
        }
    )
