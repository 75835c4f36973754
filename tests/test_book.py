"""The numba order book against a plain-Python reference book on long random delta streams, plus the
hand-checked cases: depth, imbalance, microprice, overflow walk-back, crossing, bad input, quotes."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from engine.book import (
    EMPTY_ASK_TICK,
    EMPTY_BID_TICK,
    TOB_DTYPE,
    UPDATE_CROSSED,
    UPDATE_DROPPED,
    UPDATE_OK,
    BookManager,
)
from engine.errors import InputError
from engine.events import BOOK_DELTA_DTYPE, FLAG_LAST_IN_BATCH, FLAG_RESET, QUOTE_DTYPE, SIDE_ASK, SIDE_BID

DEPTH_N = 5


def price_of(tick: int, tick_size: float) -> float:
    """The documented price rule: tick / ticks_per_unit when 1/tick_size is an integer, else tick * tick_size."""
    inverse = round(1.0 / tick_size)
    if abs(1.0 / tick_size - inverse) <= 1e-9 / tick_size:
        return tick / inverse
    return tick * tick_size


class RefBook:
    """Dict-per-side reference with the documented semantics, written for clarity, not speed."""

    def __init__(self, tick_sizes: list[float]) -> None:
        self.tick_sizes = tick_sizes
        self.bids: list[dict[int, float]] = [{} for _ in tick_sizes]
        self.asks: list[dict[int, float]] = [{} for _ in tick_sizes]
        self.last_ts = [0] * len(tick_sizes)
        self.crossed = [False] * len(tick_sizes)
        self.dropped = 0
        self.crossed_count = 0

    def tick(self, s: int, price: float) -> int | None:
        if not (math.isfinite(price) and price > 0):
            return None
        t = round(price / self.tick_sizes[s])
        return t if 1 <= t < 2**53 else None

    def apply(self, s: int, side: int, price: float, size: float, ts: int, flags: int) -> None:
        if not 0 <= s < len(self.tick_sizes):
            self.dropped += 1
            return
        if flags & FLAG_RESET:
            self.bids[s].clear()
            self.asks[s].clear()
        t = self.tick(s, price)
        if side not in (SIDE_BID, SIDE_ASK) or not (math.isfinite(size) and size >= 0) or t is None:
            if flags & FLAG_RESET and size == 0 and side in (SIDE_BID, SIDE_ASK) and t is None:
                self.last_ts[s] = ts
            else:
                self.dropped += 1
            return
        levels = self.bids[s] if side == SIDE_BID else self.asks[s]
        if size == 0:
            levels.pop(t, None)
        else:
            levels[t] = size
        self.last_ts[s] = ts

    def check_crossed(self, s: int) -> None:
        b, a = self.best_ticks(s)
        self.crossed[s] = b is not None and a is not None and b >= a
        self.crossed_count += self.crossed[s]

    def apply_batch(self, deltas: np.ndarray) -> list[tuple]:
        """Returns the expected top of book after every delta (None for unknown symbols)."""
        rows = []
        self.message_ends = []
        for i, d in enumerate(deltas):
            s = int(d["symbol_id"])
            self.apply(s, int(d["side"]), float(d["price"]), float(d["size"]), int(d["ts_ns"]), int(d["flags"]))
            if not 0 <= s < len(self.tick_sizes):
                rows.append(None)
                continue
            end = (
                d["flags"] & FLAG_LAST_IN_BATCH
                or i == len(deltas) - 1
                or deltas[i + 1]["symbol_id"] != s
                or deltas[i + 1]["ts_ns"] != d["ts_ns"]
            )
            if end:
                self.check_crossed(s)
                self.message_ends.append(i)
            rows.append(self.tob(s))
        return rows

    def best_ticks(self, s: int) -> tuple[int | None, int | None]:
        return (max(self.bids[s]) if self.bids[s] else None, min(self.asks[s]) if self.asks[s] else None)

    def levels(self, s: int, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids = heapq.nlargest(n, self.bids[s].items())
        asks = heapq.nsmallest(n, self.asks[s].items())
        ts = self.tick_sizes[s]
        return [(price_of(t, ts), q) for t, q in bids], [(price_of(t, ts), q) for t, q in asks]

    def tob(self, s: int) -> tuple:
        b, a = self.best_ticks(s)
        ts = self.tick_sizes[s]
        bid_px = price_of(b, ts) if b is not None else math.nan
        ask_px = price_of(a, ts) if a is not None else math.nan
        bid_sz = self.bids[s][b] if b is not None else 0.0
        ask_sz = self.asks[s][a] if a is not None else 0.0
        if b is not None and a is not None:
            mid = (a + b) * ts * 0.5
            spread = (a - b) * ts
            bps = spread / mid * 1e4
            micro = (bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz)
        else:
            mid = spread = bps = micro = math.nan
        bids, asks = self.levels(s, DEPTH_N)
        bd = sum(q for _, q in bids)
        ad = sum(q for _, q in asks)
        imb = (bd - ad) / (bd + ad) if bd + ad > 0 else math.nan
        return (self.last_ts[s], s, int(self.crossed[s]), bid_px, bid_sz, ask_px, ask_sz, mid, spread, bps, micro, bd, ad, imb)


def random_stream(rng: np.random.Generator, n_events: int, tick_sizes: list[float], window: int, *, resets: bool = True,
                  bad: bool = True) -> np.ndarray:
    """Messages of 1-4 deltas per symbol over a wandering touch: updates, inserts near and far, deletes
    (best, random, missing), crossing inserts, resets, and bad events."""
    n_sym = len(tick_sizes)
    mids = [int(100_000 / t * 0.01) + 50 * s for s, t in enumerate(tick_sizes)]
    live: list[list[set[int]]] = [[set(), set()] for _ in range(n_sym)]  # generator's view, bids / asks
    out = np.zeros(n_events, dtype=BOOK_DELTA_DTYPE)
    i = 0
    ts = 1_000
    while i < n_events:
        s = int(rng.integers(n_sym))
        ts += int(rng.integers(1, 1_000))
        k = min(int(rng.integers(1, 5)), n_events - i)
        mids[s] += int(rng.integers(-3, 4))
        if rng.random() < 0.01:
            mids[s] += int(rng.choice([-1, 1]) * rng.integers(window, 4 * window))  # a jump: re-centres
        for j in range(k):
            d = out[i]
            d["ts_ns"] = ts
            d["symbol_id"] = s
            side = SIDE_BID if rng.random() < 0.5 else SIDE_ASK
            si = 0 if side == SIDE_BID else 1
            sign = -1 if side == SIDE_BID else 1
            mid = mids[s]
            r = rng.random()
            size = float(rng.integers(1, 1000)) / 8
            tick = mid + sign * int(rng.integers(1, 12))
            if r < 0.22 and live[s][si]:
                tick = int(rng.choice(sorted(live[s][si])))  # update an existing level
            elif r < 0.42:
                pass  # insert near the touch
            elif r < 0.50:
                tick = mid + sign * int(rng.integers(window, 5 * window))  # far from the touch
            elif r < 0.72 and live[s][si]:
                tick = int(rng.choice(sorted(live[s][si])))
                size = 0.0  # delete a random level
            elif r < 0.82 and live[s][si]:
                tick = max(live[s][si]) if side == SIDE_BID else min(live[s][si])
                size = 0.0  # delete the best level
            elif r < 0.85:
                size = 0.0  # delete a level that may not exist
            elif r < 0.87:
                tick = mid - sign * int(rng.integers(1, 6))  # through the other side: crosses
            if tick < 1:
                tick = 1 + int(rng.integers(100))
            price = price_of(tick, tick_sizes[s])
            flags = 0
            if resets and j == 0 and rng.random() < 0.01:
                flags |= FLAG_RESET
                live[s] = [set(), set()]
            if bad and rng.random() < 0.03:
                kind = int(rng.integers(7))
                if kind == 0:
                    price = math.nan
                elif kind == 1:
                    size = -1.0
                elif kind == 2:
                    price = 0.0
                elif kind == 3:
                    d["symbol_id"] = n_sym + 3 if rng.random() < 0.5 else -1
                elif kind == 4:
                    side = 0
                elif kind == 5:
                    size = math.inf
                else:
                    price = tick_sizes[s] * 0.2  # rounds to zero ticks
                    if flags & FLAG_RESET:
                        size = 0.0  # a pure reset marker
            elif size == 0.0:
                live[s][si].discard(tick)
            else:
                live[s][si].add(tick)
            if j == k - 1 and rng.random() < 0.3:
                flags |= FLAG_LAST_IN_BATCH
            d["side"] = side
            d["price"] = price
            d["size"] = size
            d["flags"] = flags
            i += 1
    return out


def assert_tob_rows(got: np.ndarray, expected: list[tuple], where: str) -> None:
    names = TOB_DTYPE.names
    exact = ("ts_ns", "symbol_id", "crossed", "best_bid_price", "best_bid_size", "best_ask_price", "best_ask_size")
    for i, exp in enumerate(expected):
        if exp is None:
            continue
        row = got[i]
        for name, value in zip(names, exp):
            if name in exact:
                ok = row[name] == value or (value != value and row[name] != row[name])
            else:
                ok = math.isclose(row[name], value, rel_tol=1e-12, abs_tol=1e-12) or (value != value and row[name] != row[name])
            assert ok, f"{where}: event {i} field {name}: book {row[name]!r} != reference {value!r}\nrow={row}\nexp={exp}"


def assert_same_levels(book: BookManager, ref: RefBook, s: int) -> None:
    depth = book.depth(s, 100_000)
    bids, asks = ref.levels(s, 100_000)
    assert list(zip(depth.bid_prices.tolist(), depth.bid_sizes.tolist())) == bids
    assert list(zip(depth.ask_prices.tolist(), depth.ask_sizes.tolist())) == asks
    assert book.n_levels(s) == (len(ref.bids[s]), len(ref.asks[s]))


TICKS = [0.01, 0.5, 0.3]


@pytest.mark.parametrize("window, capacity, seed", [(32, 1, 1), (64, 2, 2), (4096, 64, 3)])
def test_batches_match_reference_after_every_delta(window: int, capacity: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    stream = random_stream(rng, 12_000, TICKS, window)
    book = BookManager(len(TICKS), TICKS, window_ticks=window, depth_levels=DEPTH_N, overflow_capacity=capacity)
    by_message = BookManager(len(TICKS), TICKS, window_ticks=window, depth_levels=DEPTH_N, overflow_capacity=capacity)
    ref = RefBook(TICKS)
    cuts = np.sort(rng.choice(np.arange(1, len(stream)), size=40, replace=False))
    total_applied = total_dropped = total_crossed = 0
    for k, batch in enumerate(np.split(stream, cuts)):
        tob = np.zeros(len(batch), dtype=TOB_DTYPE)
        crossed_before = ref.crossed_count
        dropped_before = ref.dropped
        result = book.apply_deltas(batch, tob_out=tob)
        expected = ref.apply_batch(batch)
        assert_tob_rows(tob, expected, f"batch {k}")
        packed = np.zeros(len(batch), dtype=TOB_DTYPE)
        per_message = by_message.apply_deltas(batch, tob_out=packed, tob_per="message")
        assert per_message.messages == per_message.tob_rows == result.messages == len(ref.message_ends)
        assert_tob_rows(packed[: per_message.tob_rows], [expected[i] for i in ref.message_ends], f"batch {k} per message")
        assert result.dropped == ref.dropped - dropped_before
        assert result.crossed == ref.crossed_count - crossed_before
        total_applied += result.applied
        total_dropped += result.dropped
        total_crossed += result.crossed
        if k % 8 == 0:
            for s in range(len(TICKS)):
                assert_same_levels(book, ref, s)
    for s in range(len(TICKS)):
        assert_same_levels(book, ref, s)
        assert book.is_crossed(s) == ref.crossed[s]
    assert total_applied + total_dropped == len(stream)
    stats = book.stats()
    assert stats["crossed"] == total_crossed == ref.crossed_count > 0
    assert sum(v for k, v in stats.items() if k.startswith("dropped_")) == ref.dropped > 0
    if window < 4096:
        assert stats["recentres"] > 50 and stats["overflow_grows"] > 0


def test_update_from_python_matches_reference_after_every_event() -> None:
    rng = np.random.default_rng(11)
    stream = random_stream(rng, 3_000, TICKS, 48, resets=False)
    book = BookManager(len(TICKS), TICKS, window_ticks=48, depth_levels=DEPTH_N, overflow_capacity=1)
    ref = RefBook(TICKS)
    for i, d in enumerate(stream):
        s = int(d["symbol_id"])
        rc = book.update(s, int(d["side"]), float(d["price"]), float(d["size"]), int(d["ts_ns"]))
        dropped_before = ref.dropped
        ref.apply(s, int(d["side"]), float(d["price"]), float(d["size"]), int(d["ts_ns"]), 0)
        if ref.dropped > dropped_before:
            assert rc == UPDATE_DROPPED, f"event {i}"
            continue
        ref.check_crossed(s)
        assert rc == (UPDATE_CROSSED if ref.crossed[s] else UPDATE_OK), f"event {i}"
        exp = ref.tob(s)
        got = (
            book.last_update_ns(s), s, int(book.is_crossed(s)), book.best_bid_price(s), book.best_bid_size(s),
            book.best_ask_price(s), book.best_ask_size(s), book.midpoint(s), book.spread(s), book.spread_bps(s),
            book.microprice(s), None, None, book.imbalance(s, DEPTH_N),
        )
        for name, g, e in zip(TOB_DTYPE.names, got, exp):
            if g is None:
                continue
            assert g == e or (g != g and e != e) or math.isclose(g, e, rel_tol=1e-12), f"event {i} {name}: {g} != {e}"
    for s in range(len(TICKS)):
        assert_same_levels(book, ref, s)


def test_depth_imbalance_microprice_values() -> None:
    book = BookManager(1, 0.01, depth_levels=2)
    for side, price, size in [(SIDE_BID, 99.98, 3.0), (SIDE_BID, 99.99, 1.0), (SIDE_BID, 99.97, 7.0),
                              (SIDE_ASK, 100.01, 4.0), (SIDE_ASK, 100.02, 2.0), (SIDE_ASK, 100.05, 9.0)]:
        assert book.update(0, side, price, size) == UPDATE_OK
    depth = book.depth(0, 2)
    assert depth.bid_prices.tolist() == [99.99, 99.98] and depth.bid_sizes.tolist() == [1.0, 3.0]
    assert depth.ask_prices.tolist() == [100.01, 100.02] and depth.ask_sizes.tolist() == [4.0, 2.0]
    assert book.best_bid_price(0) == 99.99 and book.best_ask_price(0) == 100.01
    assert book.best_bid_tick(0) == 9999 and book.best_ask_tick(0) == 10001
    assert book.midpoint(0) == 100.0
    assert book.spread(0) == pytest.approx(0.02, rel=1e-12)
    assert book.spread_bps(0) == pytest.approx(2.0, rel=1e-12)
    # microprice leans to the bid: the ask has more size, so the next trade is likelier to hit the bid
    assert book.microprice(0) == pytest.approx((99.99 * 4.0 + 100.01 * 1.0) / 5.0, rel=1e-15)
    assert book.imbalance(0, 2) == pytest.approx((4.0 - 6.0) / 10.0)
    assert book.imbalance(0, 3) == pytest.approx((11.0 - 15.0) / 26.0)
    assert book.imbalance(0, 1) == pytest.approx(-0.6)
    tob = book.top_of_book()[0]
    assert tob["bid_depth"] == 4.0 and tob["ask_depth"] == 6.0 and tob["imbalance"] == pytest.approx(-0.2)
    assert len(book.depth(0, 0).bid_prices) == 0
    # one side only: imbalance is at the limit, derived prices are NaN
    one = BookManager(1, 0.01)
    one.update(0, SIDE_BID, 10.0, 1.0)
    assert one.imbalance(0) == 1.0 and math.isnan(one.midpoint(0)) and math.isnan(one.microprice(0))
    assert one.best_ask_tick(0) == EMPTY_ASK_TICK and one.best_ask_size(0) == 0.0
    empty = BookManager(1, 0.01)
    assert empty.best_bid_tick(0) == EMPTY_BID_TICK and math.isnan(empty.imbalance(0))


def test_overflow_levels_come_back_after_the_price_walks_back() -> None:
    book = BookManager(1, 0.01, window_ticks=32, overflow_capacity=4)
    deep = [(100.0 - 0.01 * k, 1.0 + k) for k in range(0, 300, 3)]  # 100 bids over 300 ticks
    for price, size in deep:
        book.update(0, SIDE_BID, price, size)
    book.update(0, SIDE_ASK, 100.5, 2.0)
    before = book.depth(0, 1000)
    # the price walks up 2,000 ticks one level at a time: every old bid leaves the window
    for k in range(1, 2001):
        book.update(0, SIDE_BID, round(100.0 + 0.01 * k, 2), 5.0)
        book.update(0, SIDE_ASK, round(100.5 + 0.01 * k, 2), 2.0)
        book.update(0, SIDE_ASK, round(100.5 + 0.01 * (k - 1), 2), 0.0)
    assert book.best_bid_price(0) == 120.0 and book.n_levels(0)[0] == 100 + 2000
    # and back down: delete the new bids from the top, the old ones become the best again
    for k in range(2000, 0, -1):
        book.update(0, SIDE_ASK, round(100.5 + 0.01 * (k - 1), 2), 2.0)
        book.update(0, SIDE_ASK, round(100.5 + 0.01 * k, 2), 0.0)
        book.update(0, SIDE_BID, round(100.0 + 0.01 * k, 2), 0.0)
    after = book.depth(0, 1000)
    assert after.bid_prices.tolist() == before.bid_prices.tolist()
    assert after.bid_sizes.tolist() == before.bid_sizes.tolist()
    assert book.best_bid_price(0) == 100.0 and book.best_ask_price(0) == 100.5
    assert book.stats()["recentres"] > 10 and book.stats()["overflow_grows"] >= 5
    # a far level then deleting everything near: the far level becomes the best (pulled from overflow)
    book.update(0, SIDE_ASK, 250.0, 1.0)
    book.update(0, SIDE_ASK, 100.5, 0.0)
    assert book.best_ask_price(0) == 250.0 and book.best_ask_size(0) == 1.0


def deltas(rows: list[tuple]) -> np.ndarray:
    """(symbol, side, price, size, ts, flags) rows -> BOOK_DELTA_DTYPE."""
    out = np.zeros(len(rows), dtype=BOOK_DELTA_DTYPE)
    for i, (s, side, price, size, ts, flags) in enumerate(rows):
        out[i] = (ts, ts, s, side, flags, price, size)
    return out


def test_crossed_book_is_flagged_counted_and_returned() -> None:
    book = BookManager(2, 0.01)
    book.apply_deltas(deltas([(0, SIDE_BID, 10.00, 1, 1, 0), (0, SIDE_ASK, 10.02, 1, 1, 0)]))
    assert not book.is_crossed(0)
    # a locked book (bid == ask) after a message is reported
    r = book.apply_deltas(deltas([(0, SIDE_BID, 10.02, 3, 2, 0)]))
    assert r.crossed == 1 and book.is_crossed(0) and book.crossed_symbols().tolist() == [0]
    assert book.best_bid_price(0) == 10.02  # kept as sent, not silently repaired
    # the next message un-crosses it; the flag clears
    r = book.apply_deltas(deltas([(0, SIDE_ASK, 10.02, 0, 3, 0)]))
    assert r.crossed == 0 and not book.is_crossed(0)
    assert book.best_bid_price(0) == 10.02 and math.isnan(book.best_ask_price(0))
    # a message that moves bids up before it removes the old asks is not a cross
    book.apply_deltas(deltas([(1, SIDE_BID, 5.00, 1, 10, 0), (1, SIDE_ASK, 5.01, 1, 10, 0)]))
    r = book.apply_deltas(deltas([(1, SIDE_BID, 5.05, 1, 11, 0), (1, SIDE_ASK, 5.01, 0, 11, 0), (1, SIDE_ASK, 5.06, 1, 11, 0)]))
    assert r.crossed == 0 and not book.is_crossed(1)
    # ...unless the message says it ended in between (FLAG_LAST_IN_BATCH)
    r = book.apply_deltas(deltas([(1, SIDE_BID, 5.10, 1, 12, FLAG_LAST_IN_BATCH), (1, SIDE_ASK, 5.06, 0, 12, 0)]))
    assert r.crossed == 1 and not book.is_crossed(1)
    assert book.stats()["crossed"] == 2
    # update() reports it directly
    assert book.update(1, SIDE_ASK, 5.10, 1.0) == UPDATE_CROSSED and book.is_crossed(1)
    assert book.update(1, SIDE_ASK, 5.10, 0.0) == UPDATE_OK and not book.is_crossed(1)


def test_bad_input_is_a_counted_drop_and_leaves_the_book_alone(caplog: pytest.LogCaptureFixture) -> None:
    book = BookManager(2, 0.01)
    book.apply_deltas(deltas([(0, SIDE_BID, 10.00, 1, 1, 0), (0, SIDE_ASK, 10.02, 1, 1, 0)]))
    good = book.top_of_book()
    bad = deltas([
        (0, SIDE_BID, math.nan, 1, 2, 0),
        (0, SIDE_BID, -10.0, 1, 2, 0),
        (0, SIDE_BID, 0.0, 1, 2, 0),
        (0, SIDE_BID, math.inf, 1, 2, 0),
        (0, SIDE_BID, 0.004, 1, 2, 0),  # under one tick
        (0, SIDE_BID, 1e300, 1, 2, 0),  # beyond 2**53 ticks
        (0, SIDE_BID, 10.01, -1, 2, 0),
        (0, SIDE_BID, 10.01, math.nan, 2, 0),
        (0, SIDE_BID, 10.01, math.inf, 2, 0),
        (0, 0, 10.01, 1, 2, 0),
        (0, 3, 10.01, 1, 2, 0),
        (2, SIDE_BID, 10.01, 1, 2, 0),
        (-1, SIDE_BID, 10.01, 1, 2, 0),
        (1_000_000, SIDE_ASK, 10.01, 1, 2, 0),
    ])
    with caplog.at_level("WARNING", logger="tickforge.book"):
        r = book.apply_deltas(bad)
    assert r[:3] == (0, len(bad), 0)
    assert "dropped_bad_price=6" in caplog.text
    after = book.top_of_book()
    for name in ("best_bid_price", "best_bid_size", "best_ask_price", "best_ask_size", "ts_ns"):
        assert np.array_equal(after[name], good[name], equal_nan=True)
    s = book.stats()
    assert (s["dropped_bad_price"], s["dropped_bad_size"], s["dropped_bad_side"], s["dropped_unknown_symbol"]) == (6, 3, 2, 3)
    assert book.update(5, SIDE_BID, 10.0, 1.0) == UPDATE_DROPPED
    assert book.update(0, SIDE_BID, math.nan, 1.0) == UPDATE_DROPPED
    assert book.update(0, 7, 10.0, 1.0) == UPDATE_DROPPED
    with pytest.raises(TypeError):
        book.update(0.5, SIDE_BID, 10.0, 1.0)  # type: ignore[arg-type]
    assert book.stats()["dropped_unknown_symbol"] == 4


def test_reset_replaces_the_book_and_a_bare_reset_empties_it() -> None:
    book = BookManager(1, 0.5, window_ticks=16, overflow_capacity=1)
    book.apply_deltas(deltas([(0, SIDE_BID, 100.0 - k, 1, 1, 0) for k in range(40)] + [(0, SIDE_ASK, 101.0, 1, 1, 0)]))
    assert book.n_levels(0) == (40, 1)
    r = book.apply_deltas(deltas([(0, SIDE_BID, 50.0, 2, 2, FLAG_RESET), (0, SIDE_ASK, 51.0, 3, 2, 0)]))
    assert r[:3] == (2, 0, 0) and book.n_levels(0) == (1, 1)
    assert (book.best_bid_price(0), book.best_ask_price(0)) == (50.0, 51.0)
    r = book.apply_deltas(deltas([(0, SIDE_BID, math.nan, 0, 3, FLAG_RESET)]))
    assert r[:3] == (1, 0, 0) and book.n_levels(0) == (0, 0) and book.last_update_ns(0) == 3
    book.update(0, SIDE_BID, 7.0, 1.0)
    book.reset(0)
    assert book.n_levels(0) == (0, 0) and book.stats()["resets"] == 3


def test_quotes_replace_the_book_with_one_level_per_side() -> None:
    book = BookManager(3, [0.01, 0.01, 0.0001])
    q = np.zeros(6, dtype=QUOTE_DTYPE)
    q[["ts_ns", "symbol_id", "bid_price", "bid_size", "ask_price", "ask_size"]] = [
        (1, 0, 187.12, 300, 187.15, 200),
        (2, 2, 1.0841, 1e6, 1.0842, 2e6),
        (3, 0, 187.13, 100, 187.14, 400),  # replaces symbol 0's first quote
        (4, 1, 0.0, 0, 20.5, 10),          # no bid: an empty side, not a drop
        (5, 1, 21.0, 1, 20.5, 10),         # crossed quote: kept, flagged
        (6, 0, math.nan, 5, 187.2, 1),     # bad price with size: dropped
    ]
    tob = np.zeros(len(q), dtype=TOB_DTYPE)
    r = book.apply_quotes(q, tob_out=tob)
    assert r[:3] == (5, 1, 1) and r.tob_rows == 6
    assert book.n_levels(0) == (1, 1)
    assert (book.best_bid_price(0), book.best_bid_size(0), book.best_ask_price(0), book.best_ask_size(0)) == (187.13, 100, 187.14, 400)
    assert book.best_bid_price(2) == 1.0841 and book.best_ask_price(2) == 1.0842
    assert book.spread_bps(2) == pytest.approx(0.0001 / 1.08415 * 1e4, rel=1e-9)
    assert math.isnan(tob[3]["best_bid_price"]) and tob[3]["best_ask_price"] == 20.5 and tob[3]["crossed"] == 0
    assert tob[4]["crossed"] == 1 and book.is_crossed(1)
    assert tob[5]["best_bid_price"] == 187.13 and book.last_update_ns(0) == 3
    assert book.stats()["quotes_applied"] == 5


def test_top_of_book_snapshot_matches_per_symbol_getters() -> None:
    rng = np.random.default_rng(5)
    book = BookManager(len(TICKS), TICKS, window_ticks=64, depth_levels=DEPTH_N)
    book.apply_deltas(random_stream(rng, 2_000, TICKS, 64, bad=False))
    snap = book.top_of_book()
    for s in range(len(TICKS)):
        row = snap[s]
        assert row["symbol_id"] == s and row["ts_ns"] == book.last_update_ns(s)
        for name, value in [("best_bid_price", book.best_bid_price(s)), ("best_ask_price", book.best_ask_price(s)),
                            ("best_bid_size", book.best_bid_size(s)), ("best_ask_size", book.best_ask_size(s)),
                            ("midpoint", book.midpoint(s)), ("spread", book.spread(s)), ("spread_bps", book.spread_bps(s)),
                            ("microprice", book.microprice(s)), ("imbalance", book.imbalance(s))]:
            assert row[name] == value or (value != value and row[name] != row[name]), name
        depth = book.depth(s)
        assert row["bid_depth"] == depth.bid_sizes.sum() and row["ask_depth"] == depth.ask_sizes.sum()


def test_constructor_and_batch_validation_are_clear_errors() -> None:
    with pytest.raises(InputError, match="tick_sizes"):
        BookManager(2, [0.01])
    with pytest.raises(InputError, match="tick_sizes"):
        BookManager(1, 0.0)
    with pytest.raises(InputError, match="n_symbols"):
        BookManager(0, 0.01)
    with pytest.raises(InputError, match="window_ticks"):
        BookManager(1, 0.01, window_ticks=4)
    book = BookManager(1, 0.01)
    with pytest.raises(InputError, match="deltas"):
        book.apply_deltas(np.zeros(3, dtype=QUOTE_DTYPE))
    with pytest.raises(InputError, match="tob_out"):
        book.apply_deltas(np.zeros(3, dtype=BOOK_DELTA_DTYPE), tob_out=np.zeros(2, dtype=TOB_DTYPE))
    with pytest.raises(InputError, match="tob_per"):
        book.apply_deltas(np.zeros(3, dtype=BOOK_DELTA_DTYPE), tob_out=np.zeros(3, dtype=TOB_DTYPE), tob_per="frame")
    with pytest.raises(InputError, match="unknown symbol"):
        book.best_bid_price(1)
    # a strided view is accepted (copied to contiguous)
    d = deltas([(0, SIDE_BID, 1.0, 1, 1, 0), (0, SIDE_BID, 9.0, 1, 1, 0), (0, SIDE_ASK, 2.0, 1, 1, 0)])
    assert book.apply_deltas(d[::2]).applied == 2 and book.best_ask_price(0) == 2.0
    # a read-only batch (e.g. decoded straight from a buffer) is copied, not compiled for again
    frozen = np.frombuffer(deltas([(0, SIDE_ASK, 1.5, 4, 2, 0)]).tobytes(), dtype=BOOK_DELTA_DTYPE)
    assert book.apply_deltas(frozen).applied == 1 and book.best_ask_price(0) == 1.5
