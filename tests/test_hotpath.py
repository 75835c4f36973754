"""The booking decoder (one compiled call from frame bytes to books, tops and changed symbols) against
the staged path it replaces: a plain ``Decoder``, then the book's batch calls, frame by frame."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_decoder import CRYPTO_BOOK, CRYPTO_QUOTE, STOCK_QUOTE, STOCK_TRADE, as_msgpack

from engine.book import BookManager
from engine.config import SimConfig
from engine.hotpath import BookingDecoder, FrameBook
from engine.marketdata.decoder import Decoder
from engine.marketdata.symbols import SymbolMap
from engine.sim.exchange import MarketDataServer
from engine.sim.market import SyntheticMarket
from engine.strategies import StrategyContext


class Staged:
    """The reference: decode, then apply quotes and deltas through ``FrameBook.apply`` on a new epoch."""

    def __init__(self, symbols: list[str], booking: bool) -> None:
        self.ctx = StrategyContext(symbols)
        self.book = BookManager(len(symbols), 0.0001)
        self.frame_book = FrameBook(self.book, self.ctx)
        names = SymbolMap(symbols, mode="strict")
        self.decoder = BookingDecoder(names, self.frame_book, log_drops=False) if booking else Decoder(names, log_drops=False)

    def step(self, frame: bytes | str) -> tuple[object, list[int]]:
        batch = self.decoder.decode(frame, 1)
        fb = self.frame_book
        if not batch.booked:
            fb.begin()
            fb.apply(batch.quotes, quotes=True)
        fb.apply(batch.book_deltas, quotes=False)
        return batch, sorted(fb.changed[: fb.n_changed].tolist())


def _same_state(fused: Staged, staged: Staged) -> None:
    got, want = fused.book.top_of_book(), staged.book.top_of_book()
    for field in got.dtype.names:  # field by field: NaN equals NaN there
        np.testing.assert_array_equal(got[field], want[field], err_msg=field)
    for name in ("best_bid_price", "best_ask_price", "best_bid_size", "best_ask_size"):
        np.testing.assert_array_equal(getattr(fused.ctx, name), getattr(staged.ctx, name))
    assert fused.book.stats() == staged.book.stats()
    assert fused.frame_book.dropped == staged.frame_book.dropped


def _session_frames(wire: str, n_symbols: int = 12) -> tuple[list[str], list[bytes]]:
    market = SyntheticMarket(n_symbols, seed=3)
    encoder = MarketDataServer(market, SimConfig())
    msgs = market.step(4_000)
    return market.symbols(), [encoder.encode(msgs[i : i + 97], wire == "msgpack") for i in range(0, len(msgs), 97)]


@pytest.mark.parametrize("wire", ["msgpack", "json"])
def test_a_synthetic_session_books_exactly_as_the_staged_path(wire):
    symbols, frames = _session_frames(wire)
    fused, staged = Staged(symbols, booking=True), Staged(symbols, booking=False)
    booked = 0
    for frame in frames:
        got, changed = fused.step(frame)
        want, changed_ref = staged.step(frame)
        booked += got.booked
        assert changed == changed_ref
        assert sorted(set(want.quotes["symbol_id"].tolist())) == changed_ref
        np.testing.assert_array_equal(got.quotes, want.quotes)
        np.testing.assert_array_equal(got.trades, want.trades)
        assert (got.n_messages, got.last_ts_ns) == (want.n_messages, want.last_ts_ns)
        _same_state(fused, staged)
    assert booked == len(frames)  # every frame took the one-call path
    assert np.isfinite(fused.ctx.best_bid_price).all()


def test_bad_quotes_unknown_symbols_books_and_fallback_frames():
    symbols = ["AMD", "AAPL", "BTC/USD", "BAT/USD"]
    fused, staged = Staged(symbols, booking=True), Staged(symbols, booking=False)
    crossed = {**STOCK_QUOTE, "bp": 90.0, "ap": 89.0}
    one_sided = {**STOCK_QUOTE, "S": "AAPL", "bp": 0, "bs": 0}
    frames = [
        as_msgpack([STOCK_TRADE, STOCK_QUOTE, {**STOCK_QUOTE, "S": "ZZZZ"}]),  # unknown symbol: a decoder drop
        # later rows win, a crossed quote is kept, a price below one tick is the book's own drop
        as_msgpack([{**STOCK_QUOTE, "bp": 87.7, "ap": 87.71}, crossed, one_sided, {**STOCK_QUOTE, "S": "BAT/USD", "bp": 0.00001}]),
        as_msgpack([{**STOCK_QUOTE, "bp": -1.0}, {**STOCK_QUOTE, "S": "AAPL", "bs": math.inf}]),  # decoder drops
        json.dumps([CRYPTO_QUOTE, CRYPTO_BOOK]).encode(),  # quotes booked in the call, deltas after it
        as_msgpack([STOCK_QUOTE]) + b"\xc1",  # trailing junk
        json.dumps([{"T": "success", "msg": "authenticated"}]),  # control only
    ]
    flags, book_drops, amd = [], [], []
    for frame in frames:
        got, changed = fused.step(frame)
        want, changed_ref = staged.step(frame)
        flags.append(got.booked)
        book_drops.append(fused.frame_book.dropped)
        amd.append((float(fused.ctx.best_bid_price[0]), fused.book.is_crossed(0)))
        assert changed == changed_ref
        assert [d.reason for d in got.drops] == [d.reason for d in want.drops]
        _same_state(fused, staged)
    # frames with something to drop, junk or control messages take the msgspec path, booked after it
    assert flags == [False, True, False, True, False, False]
    assert book_drops == [0, 1, 0, 0, 0, 0] and fused.book.stats()["dropped_bad_price"] == 1
    assert amd[1] == (90.0, True)  # the crossed quote came last for AMD in frame 2
