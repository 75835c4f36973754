"""The live engine's hot path: a market-data frame's bytes to order books, strategy tops and the list
of changed symbols in one compiled call.

Split into stages, a frame costs a decode call, a book call, a top-of-book call and the Python glue
between them (batch objects, record copies, argument checks). Run cache-cold between frames on a
small machine, that glue took longer than the parsing itself. ``BookingDecoder`` is a ``Decoder``
whose compiled path parses the frame and applies its quotes to the books before it returns; all else
about decoding (the msgspec fallback, drops, control messages, statistics) is the base class's.
Orderbook deltas, rarer and resumable when a book's overflow store must grow, still go through the
book's own batch call, via ``FrameBook.apply``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine._jit import FixedTypes
from engine.book import TOB_DTYPE, BookManager, apply_quotes_kernel
from engine.events import BOOK_DELTA_DTYPE, QUOTE_DTYPE
from engine.marketdata import _fastparse
from engine.marketdata.decoder import DecodedBatch, Decoder, _looks_like_json
from engine.marketdata.symbols import SymbolMap
from engine.strategies import StrategyContext


@njit(cache=True)
def copy_tops(tob, bid_px, ask_px, bid_sz, ask_sz, seen_epoch, epoch, changed, n_changed):  # pragma: no cover - njit
    """Copy each event's top of book into the strategy's arrays (later rows win) and collect the
    symbols touched this frame once each; returns the new count in ``changed``."""
    for i in range(tob.shape[0]):
        s = tob[i].symbol_id
        if s < 0 or s >= bid_px.shape[0]:
            continue
        bid_px[s] = tob[i].best_bid_price
        ask_px[s] = tob[i].best_ask_price
        bid_sz[s] = tob[i].best_bid_size
        ask_sz[s] = tob[i].best_ask_size
        if seen_epoch[s] != epoch:
            seen_epoch[s] = epoch
            changed[n_changed] = s
            n_changed += 1
    return n_changed


@njit(cache=True)
def _book_quotes(quotes, n, qty, ival, okey, oqty, fval, counters, depth_n, tob, bid_px, ask_px, bid_sz, ask_sz,
                 seen_epoch, epoch, changed, out):  # pragma: no cover - njit
    # out: [symbols changed, quotes the book dropped]
    out[0] = 0
    out[1] = 0
    if n:
        _, dropped, _ = apply_quotes_kernel(qty, ival, okey, oqty, fval, counters, quotes[:n], tob[:n], depth_n)
        out[0] = copy_tops(tob[:n], bid_px, ask_px, bid_sz, ask_sz, seen_epoch, epoch, changed, 0)
        out[1] = dropped


@njit(cache=True)
def _parse_and_book_msgpack(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts, vals, ivals, codes, bits,
                            qty, ival, okey, oqty, fval, counters, depth_n, tob, bid_px, ask_px, bid_sz, ask_sz,
                            seen_epoch, epoch, changed, out):  # pragma: no cover - njit
    status = _fastparse.parse_msgpack(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts, vals, ivals, codes, bits)
    if status == _fastparse.OK:
        _book_quotes(quotes, counts[_fastparse.N_QUOTES], qty, ival, okey, oqty, fval, counters, depth_n, tob,
                     bid_px, ask_px, bid_sz, ask_sz, seen_epoch, epoch, changed, out)
    return status


@njit(cache=True)
def _parse_and_book_json(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts, vals, ivals, codes,
                         qty, ival, okey, oqty, fval, counters, depth_n, tob, bid_px, ask_px, bid_sz, ask_sz,
                         seen_epoch, epoch, changed, out):  # pragma: no cover - njit
    status = _fastparse.parse_json(buf, slots, names, lens, recv_ns, trades, quotes, bars, deltas, counts, vals, ivals, codes)
    if status == _fastparse.OK:
        _book_quotes(quotes, counts[_fastparse.N_QUOTES], qty, ival, okey, oqty, fval, counters, depth_n, tob,
                     bid_px, ask_px, bid_sz, ask_sz, seen_epoch, epoch, changed, out)
    return status


_copy_tops = FixedTypes(copy_tops)  # per frame with fixed argument types: no numba dispatch


class FrameBook:
    """The books and what a strategy reads of them, advanced one frame at a time.

    Each frame is an epoch: ``changed[:n_changed]`` lists the symbols whose top it touched, once each.
    """

    def __init__(self, book: BookManager, ctx: StrategyContext) -> None:
        n = book.n_symbols
        self.book = book
        self.tops = (ctx.best_bid_price, ctx.best_ask_price, ctx.best_bid_size, ctx.best_ask_size)
        self.tob = np.zeros(1024, dtype=TOB_DTYPE)
        self.seen_epoch = np.zeros(n, dtype=np.int64)
        self.epoch = 0
        self.changed = np.zeros(n, dtype=np.int64)
        self.n_changed = 0
        self.dropped = 0  # events the books refused this frame

    def warm(self) -> None:
        """Compile (or load) and bind the book and top-of-book calls before the first frame."""
        tob = self.tob[:0]
        self.book.apply_quotes(np.zeros(0, dtype=QUOTE_DTYPE), tob)
        self.book.apply_deltas(np.zeros(0, dtype=BOOK_DELTA_DTYPE), tob)
        _copy_tops(tob, *self.tops, self.seen_epoch, 0, self.changed, 0)

    def begin(self) -> None:
        """Start the next frame's epoch."""
        self.epoch += 1
        self.n_changed = 0
        self.dropped = 0

    def room(self, n: int) -> np.ndarray:
        """The top-of-book scratch, at least ``n`` rows."""
        if n > len(self.tob):
            self.tob = np.zeros(max(n, 2 * len(self.tob)), dtype=TOB_DTYPE)
        return self.tob

    def apply(self, events: np.ndarray, quotes: bool) -> None:
        """Apply quotes or orderbook deltas to the books in this frame's epoch (the path for events
        the decoder did not book itself)."""
        n = len(events)
        if not n:
            return
        tob = self.room(n)[:n]
        result = self.book.apply_quotes(events, tob) if quotes else self.book.apply_deltas(events, tob)
        self.dropped += int(result.dropped)
        self.n_changed = _copy_tops(tob, *self.tops, self.seen_epoch, self.epoch, self.changed, self.n_changed)


class BookingDecoder(Decoder):
    """A ``Decoder`` that applies each compiled-path frame's quotes to ``frame_book`` as it decodes.

    Its batches say so (``booked``); their quote arrays are views of the decoder's scratch, valid until
    the next frame. Frames the compiled parser hands to msgspec come back unbooked, as from ``Decoder``.
    """

    def __init__(self, symbols: SymbolMap, frame_book: FrameBook, *, log_drops: bool = True) -> None:
        super().__init__(symbols, log_drops=log_drops)
        self.frame_book = frame_book
        self._out = np.zeros(2, dtype=np.int64)
        self._booking: dict[tuple[bool, bool], FixedTypes] = {}
        self.last_frame: bytes | str | None = None  # the latest frame of the compiled path (engine.rehearsal)

    def warm(self) -> None:
        super().warm()
        self.last_frame = None  # the probe frames are nothing to rehearse

    def rehearse(self, frame: bytes | str, frame_book: FrameBook) -> DecodedBatch | None:
        """Decode ``frame`` onto ``frame_book``'s books instead of the feed's, through this decoder's
        own parser and scratch (the feed's previous batch must be done with), statistics untouched;
        None when the frame needs the msgspec path. ``engine.rehearsal`` keeps the path warm with it."""
        saved = self.frame_book, self.last_frame
        self.frame_book = frame_book
        try:
            return self._decode_compiled(frame, isinstance(frame, str) or _looks_like_json(frame), 0)
        finally:
            self.frame_book, self.last_frame = saved

    def _decode_compiled(self, frame: object, is_json: bool, recv_ns: int) -> DecodedBatch | None:
        self.last_frame = frame
        buf = self._frame_buffer(frame)
        fb = self.frame_book
        tob = fb.room(self._scratch_msgs)
        fb.begin()
        slots, names, lens = self.symbols.table
        key = (is_json, buf.flags.writeable)
        call = self._booking.get(key)
        if call is None:  # bound per kind of buffer, as the base class binds its parsers
            call = self._booking[key] = FixedTypes(_parse_and_book_json if is_json else _parse_and_book_msgpack)
        parse = (self._buf_trades, self._buf_quotes, self._buf_bars, self._buf_deltas, self._counts, self._vals, self._ivals, self._codes)
        if not is_json:
            parse += (self._bits,)
        if call(buf, slots, names, lens, recv_ns, *parse, *fb.book.state, fb.book.depth_levels, tob, *fb.tops,
                fb.seen_epoch, fb.epoch, fb.changed, self._out) != _fastparse.OK:
            return None
        fb.n_changed, fb.dropped = self._out.tolist()
        if fb.dropped:
            fb.book.log_drops()
        return self._scratch_batch(recv_ns, booked=True)


__all__ = ["BookingDecoder", "FrameBook", "copy_tops"]
