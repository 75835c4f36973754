"""The market-data decoder: one Alpaca frame (JSON text or msgpack bytes) in, event arrays out. No I/O.

The fast path decodes a whole frame with msgspec straight into typed structs, then fills each
event array column by column (one list comprehension per field, timestamps parsed in numba for the
whole frame at once), so the per-message Python work is a handful of attribute reads.
When the frame holds a bad message, the frame is split into its elements and each is decoded on
its own: every bad message becomes a counted ``Drop`` with a reason, and the rest are kept.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from engine.events import (
    BAR_DTYPE,
    BOOK_DELTA_DTYPE,
    FLAG_DAILY_BAR,
    FLAG_LAST_IN_BATCH,
    FLAG_RESET,
    FLAG_SNAPSHOT,
    FLAG_UPDATED_BAR,
    QUOTE_DTYPE,
    SIDE_ASK,
    SIDE_BID,
    TRADE_DTYPE,
    copy_records,
    frozen_empty,
)
from engine._jit import FixedTypes
from engine.marketdata import _fastparse, _wire
from engine.marketdata.messages import ControlMessage, StreamError, Subscription, Success
from engine.marketdata.symbols import UNKNOWN_SYMBOL, SymbolMap
from engine.marketdata.timestamps import parse_msgpack_timestamps, parse_rfc3339_joined

log = logging.getLogger(__name__)

# Drop reasons (the keys of ``DecoderStats.drops``).
DROP_MALFORMED_FRAME = "malformed_frame"      # not an array of messages at all
DROP_MALFORMED_MESSAGE = "malformed_message"  # element is not valid JSON/msgpack (e.g. truncated)
DROP_INVALID_MESSAGE = "invalid_message"      # wrong type, missing field, value out of bounds
DROP_UNKNOWN_TYPE = "unknown_type"            # "T" not a documented message type
DROP_BAD_TIMESTAMP = "bad_timestamp"
DROP_UNKNOWN_SYMBOL = "unknown_symbol"        # strict symbol map and a symbol it does not know

_MAX_DETAIL = 160


@dataclass(frozen=True, slots=True)
class Drop:
    """One message that was not turned into events, and why."""

    reason: str
    detail: str = ""


EMPTY_TRADES = frozen_empty(TRADE_DTYPE)
EMPTY_QUOTES = frozen_empty(QUOTE_DTYPE)
EMPTY_BARS = frozen_empty(BAR_DTYPE)
EMPTY_BOOK_DELTAS = frozen_empty(BOOK_DELTA_DTYPE)


@dataclass(slots=True)
class DecodedBatch:
    """Everything one frame carried: event arrays (possibly empty), control messages, drops."""

    recv_ns: int
    trades: np.ndarray = field(default_factory=lambda: EMPTY_TRADES)
    quotes: np.ndarray = field(default_factory=lambda: EMPTY_QUOTES)
    bars: np.ndarray = field(default_factory=lambda: EMPTY_BARS)
    book_deltas: np.ndarray = field(default_factory=lambda: EMPTY_BOOK_DELTAS)
    controls: list[ControlMessage] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    n_messages: int = 0       # messages in the frame, good or bad
    n_book_messages: int = 0  # orderbook messages behind ``book_deltas``
    n_ignored: int = 0        # documented types the engine does not use (statuses, lulds, news, ...)
    booked: bool = False      # the decoder already applied ``quotes`` to the books (engine.hotpath)
    _last_ts_ns: int = field(default=-1, repr=False, compare=False)

    @property
    def n_events(self) -> int:
        return len(self.trades) + len(self.quotes) + len(self.bars) + self.n_book_messages

    @property
    def last_ts_ns(self) -> int:
        """Latest exchange timestamp in the batch (0 when it has no market data).

        Computed once and kept: the stream client and the live engine both ask for every frame."""
        if self._last_ts_ns >= 0:
            return self._last_ts_ns
        best = 0
        for arr in (self.trades, self.quotes, self.bars, self.book_deltas):
            if len(arr):
                best = max(best, int(arr["ts_ns"].max()))
        self._last_ts_ns = best
        return best


@dataclass(slots=True)
class DecoderStats:
    """Running totals over every frame a decoder has seen."""

    frames: int = 0
    compiled_frames: int = 0  # frames the numba fast path decoded whole (the rest went through msgspec)
    messages: int = 0
    trades: int = 0
    quotes: int = 0
    bars: int = 0
    book_messages: int = 0
    book_deltas: int = 0
    controls: int = 0
    ignored: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


class Decoder:
    """Decodes Alpaca market-data frames into ``engine.events`` arrays.

    ``symbols`` maps names to ids (a fresh ``add``-mode map when omitted). Not thread-safe: use one
    decoder per stream.
    """

    def __init__(self, symbols: SymbolMap | None = None, *, log_drops: bool = True, compiled: bool = True) -> None:
        self.symbols = symbols if symbols is not None else SymbolMap()
        self.stats = DecoderStats()
        self.log_drops = log_drops
        self.compiled = compiled  # False: always the msgspec path (the reference; tests compare both)
        self._counts = np.zeros(8, np.int64)
        self._bits = np.zeros(1, np.uint64)
        self._vals = np.zeros(_fastparse.N_FIELDS, np.float64)  # per-message scratch of the parsers
        self._ivals = np.zeros(2, np.int64)
        self._codes = np.zeros(4, np.int64)
        self._parsers: dict[tuple[bool, bool], FixedTypes] = {}
        self._scratch_msgs = 0
        self._scratch_levels = 0
        self._grow_scratch(256, 512)
        self._json_frame = msgspec.json.Decoder(list[_wire.JSON["Message"]])
        self._json_one = msgspec.json.Decoder(_wire.JSON["Message"])
        self._json_raw = msgspec.json.Decoder(list[msgspec.Raw])
        self._mp_frame = msgspec.msgpack.Decoder(list[_wire.MSGPACK["Message"]])
        self._mp_one = msgspec.msgpack.Decoder(_wire.MSGPACK["Message"])
        self._mp_raw = msgspec.msgpack.Decoder(list[msgspec.Raw])
        self._json_any = msgspec.json.Decoder()
        self._mp_any = msgspec.msgpack.Decoder()

    # --- public -----------------------------------------------------------------------------
    def decode(self, frame: bytes | bytearray | memoryview | str, recv_ns: int | None = None) -> DecodedBatch:
        """Decode one frame. Never raises on bad input: problems are drops in the result."""
        recv_ns = time.time_ns() if recv_ns is None else int(recv_ns)
        is_json = isinstance(frame, str) or _looks_like_json(frame)
        if self.compiled:
            fast = self._decode_compiled(frame, is_json, recv_ns)
            if fast is not None:
                self.stats.compiled_frames += 1
                self._account(fast)
                return fast
        batch = DecodedBatch(recv_ns=recv_ns)
        try:
            if is_json:
                msgs = self._json_frame.decode(frame)
            else:
                msgs = self._mp_frame.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError, UnicodeDecodeError):
            msgs = self._decode_leniently(frame, is_json, batch)
        self._build(msgs, is_json, batch)
        self._account(batch)
        return batch

    def warm(self) -> None:
        """Compile (or load from cache) both numba frame parsers now, so the first live frame does
        not pay for it; a cold compile can take tens of seconds, longer than an auth deadline."""
        if not self.compiled:
            return
        saved = (self.stats, self.log_drops)
        self.stats, self.log_drops = DecoderStats(), False
        try:
            probe = [{"T": "t", "S": "\x00warm", "i": 1, "x": "V", "p": 1.0, "s": 1, "t": "2024-01-02T15:04:05Z", "z": "C"}]
            self._decode_compiled(msgspec.json.encode(probe), True, 0)
            self._decode_compiled(msgspec.msgpack.encode(probe), False, 0)
        finally:
            self.stats, self.log_drops = saved

    # --- fast path --------------------------------------------------------------------------
    def _grow_scratch(self, n_msgs: int, n_levels: int) -> None:
        if n_msgs > self._scratch_msgs:
            self._scratch_msgs = n_msgs
            self._buf_trades = np.zeros(n_msgs, TRADE_DTYPE)
            self._buf_quotes = np.zeros(n_msgs, QUOTE_DTYPE)
            self._buf_bars = np.zeros(n_msgs, BAR_DTYPE)
        if n_levels > self._scratch_levels:
            self._scratch_levels = n_levels
            self._buf_deltas = np.zeros(n_levels, BOOK_DELTA_DTYPE)

    def _decode_compiled(self, frame: Any, is_json: bool, recv_ns: int) -> DecodedBatch | None:
        """The whole frame in one numba call, or None when it needs the msgspec path."""
        buf = self._frame_buffer(frame)
        slots, names, lens = self.symbols.table
        counts = self._counts
        # numba's dispatch would type the record-array arguments on every frame: bind once per kind
        # of buffer (a bytes frame gives a read-only array, a bytearray a writable one)
        parser = self._parsers.get((is_json, buf.flags.writeable))
        if parser is None:
            parser = self._parsers[(is_json, buf.flags.writeable)] = FixedTypes(_fastparse.parse_json if is_json else _fastparse.parse_msgpack)
        if is_json:
            status = parser(buf, slots, names, lens, recv_ns, self._buf_trades, self._buf_quotes, self._buf_bars, self._buf_deltas, counts, self._vals, self._ivals, self._codes)
        else:
            status = parser(buf, slots, names, lens, recv_ns, self._buf_trades, self._buf_quotes, self._buf_bars, self._buf_deltas, counts, self._vals, self._ivals, self._codes, self._bits)
        return self._scratch_batch(recv_ns) if status == _fastparse.OK else None

    def _frame_buffer(self, frame: Any) -> np.ndarray:
        """The frame's bytes as a uint8 array, with scratch room for as many events as it can hold."""
        data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
        buf = np.frombuffer(data, np.uint8)
        # Every message takes at least 16 bytes and every book level at least 8, in both encodings.
        self._grow_scratch(len(buf) // 16 + 1, len(buf) // 8 + 1)
        return buf

    def _scratch_batch(self, recv_ns: int, *, booked: bool = False) -> DecodedBatch:
        """A batch of what the compiled parser left in scratch: copies, except quotes a booking
        subclass has applied already (a view, valid until the next frame)."""
        n_trades, n_quotes, n_bars, n_deltas, n_books, n_messages, last_ts = self._counts[:7].tolist()
        batch = DecodedBatch(recv_ns=recv_ns, n_messages=n_messages, n_book_messages=n_books, _last_ts_ns=last_ts, booked=booked)
        if n_trades:
            batch.trades = copy_records(self._buf_trades[:n_trades])
        if n_quotes:
            batch.quotes = self._buf_quotes[:n_quotes] if booked else copy_records(self._buf_quotes[:n_quotes])
        if n_bars:
            batch.bars = copy_records(self._buf_bars[:n_bars])
        if n_deltas:
            batch.book_deltas = copy_records(self._buf_deltas[:n_deltas])
        return batch

    # --- slow path --------------------------------------------------------------------------
    def _decode_leniently(self, frame: Any, is_json: bool, batch: DecodedBatch) -> list[Any]:
        """Decode message by message, turning each failure into a drop."""
        if isinstance(frame, str):
            frame = frame.encode("utf-8", "surrogatepass")
        frame = bytes(frame)
        try:
            parts: list[bytes] | None = [bytes(r) for r in (self._json_raw if is_json else self._mp_raw).decode(frame)]
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            parts = _split_json_array(frame) if is_json else _split_msgpack_array(frame)
        if parts is None:
            batch.n_messages += 1
            self._drop(batch, DROP_MALFORMED_FRAME, f"frame is not an array of messages ({len(frame)} bytes)")
            return []
        one = self._json_one if is_json else self._mp_one
        anything = self._json_any if is_json else self._mp_any
        good = []
        for part in parts:
            try:
                good.append(one.decode(part))
            except msgspec.ValidationError as exc:
                self._classify_invalid(batch, part, anything, str(exc))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                batch.n_messages += 1
                self._drop(batch, DROP_MALFORMED_MESSAGE, str(exc))
        return good

    def _classify_invalid(self, batch: DecodedBatch, part: bytes, anything: Any, error: str) -> None:
        batch.n_messages += 1
        kind = None
        try:
            obj = anything.decode(part)
            kind = obj.get("T") if isinstance(obj, dict) else None
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
            obj = None
        if isinstance(obj, dict) and "T" in obj and "Invalid value" in error and "`$.T`" in error:
            self._drop(batch, DROP_UNKNOWN_TYPE, f"T={str(kind)[:20]!r}")
        else:
            symbol = obj.get("S") if isinstance(obj, dict) else None
            where = f" ({kind} {str(symbol)[:32]})" if kind is not None else ""
            self._drop(batch, DROP_INVALID_MESSAGE, error + where)

    def _drop(self, batch: DecodedBatch, reason: str, detail: str = "") -> None:
        batch.drops.append(Drop(reason, detail[:_MAX_DETAIL]))
        if self.log_drops:
            log.warning("market data message dropped: %s: %s", reason, detail[:_MAX_DETAIL])

    # --- column building --------------------------------------------------------------------
    def _build(self, msgs: list[Any], is_json: bool, batch: DecodedBatch) -> None:
        wire = _wire.JSON if is_json else _wire.MSGPACK
        trade_t, quote_t, orderbook_t = wire["Trade"], wire["Quote"], wire["Orderbook"]
        batch.n_messages += len(msgs)
        # Frames are almost always homogeneous (one channel): check that cheaply before sorting.
        first = type(msgs[0]) if msgs else None
        if first is not None and all(type(m) is first for m in msgs):
            groups = {first: msgs}
        else:
            groups = {}
            for m in msgs:
                groups.setdefault(type(m), []).append(m)
        for kind, items in groups.items():
            if kind is trade_t:
                batch.trades = self._trades(items, is_json, batch)
            elif kind is quote_t:
                batch.quotes = self._quotes(items, is_json, batch)
            elif kind is orderbook_t:
                batch.book_deltas = self._book(items, is_json, batch)
            elif kind in (wire["Bar"], wire["UpdatedBar"], wire["DailyBar"]):
                pass  # the three bar kinds are built together below, in arrival order
            elif kind is wire["Success"]:
                batch.controls.extend(Success(m.msg) for m in items)
            elif kind is wire["Error"]:
                batch.controls.extend(StreamError(int(m.code), m.msg) for m in items)
            elif kind is wire["Subscription"]:
                batch.controls.extend(_subscription(m) for m in items)
            else:
                batch.n_ignored += len(items)
        bar_kinds = (wire["Bar"], wire["UpdatedBar"], wire["DailyBar"])
        if any(k in groups for k in bar_kinds):
            bars = [m for m in msgs if type(m) in bar_kinds] if len(groups) > 1 else msgs
            batch.bars = self._bars(bars, is_json, batch, wire)

    def _timestamps(self, stamps: list[Any], is_json: bool) -> tuple[np.ndarray, np.ndarray]:
        n = len(stamps)
        ts = np.empty(n, np.int64)
        ok = np.empty(n, np.bool_)
        if is_json:
            try:
                buf = "\n".join(stamps).encode("ascii")
            except UnicodeEncodeError:
                buf = "\n".join(s if s.isascii() else "?" for s in stamps).encode("ascii")
            parse_rfc3339_joined(np.frombuffer(buf, np.uint8), n, ts, ok)
        else:
            buf = b"".join([e.data for e in stamps])
            lengths = np.array([len(e.data) for e in stamps], dtype=np.int64)
            codes = np.array([e.code for e in stamps], dtype=np.int64)
            parse_msgpack_timestamps(np.frombuffer(buf, np.uint8), lengths, codes, ts, ok)
        return ts, ok

    def _symbol_ids(self, names: list[str]) -> np.ndarray:
        ids = list(map(self.symbols.lookup.get, names))
        if None in ids:
            id_of = self.symbols.id_of  # assigns new ids in "add" mode, UNKNOWN_SYMBOL in "strict"
            ids = [i if i is not None else id_of(s) for i, s in zip(ids, names)]
        return np.array(ids, dtype=np.int32)

    def _head(self, items: list[Any], is_json: bool, batch: DecodedBatch, kind: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Timestamps and symbol ids of the messages, and the mask of those to keep (None when all are
        good, the common case); the others are counted drops."""
        names = [m.S for m in items]
        ts, ok = self._timestamps([m.t for m in items], is_json)
        sids = self._symbol_ids(names)
        keep = ok & (sids != UNKNOWN_SYMBOL)
        if keep.all():
            return ts, sids, None
        for k in np.flatnonzero(~keep):
            self._drop(batch, DROP_UNKNOWN_SYMBOL if ok[k] else DROP_BAD_TIMESTAMP, f"{kind} {names[k]}")
        return ts, sids, keep

    def _records(self, items: list[Any], is_json: bool, batch: DecodedBatch, kind: str, dtype: np.dtype
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """A ``dtype`` row per message with the columns every record has (ts_ns, recv_ns, symbol_id)
        filled, and the keep mask of ``_head``."""
        ts, sids, keep = self._head(items, is_json, batch, kind)
        out = np.zeros(len(items), dtype)
        out["ts_ns"] = ts
        out["recv_ns"] = batch.recv_ns
        out["symbol_id"] = sids
        return out, keep

    def _trades(self, items: list[Any], is_json: bool, batch: DecodedBatch) -> np.ndarray:
        out, keep = self._records(items, is_json, batch, "trade", TRADE_DTYPE)
        out["exchange"] = _codes([m.x for m in items])
        out["tape"] = _codes([m.z for m in items])
        out["price"] = [m.p for m in items]
        out["size"] = [m.s for m in items]
        out["trade_id"] = [m.i for m in items]
        return out if keep is None else out[keep]

    def _quotes(self, items: list[Any], is_json: bool, batch: DecodedBatch) -> np.ndarray:
        out, keep = self._records(items, is_json, batch, "quote", QUOTE_DTYPE)
        out["bid_exchange"] = _codes([m.bx for m in items])
        out["ask_exchange"] = _codes([m.ax for m in items])
        out["tape"] = _codes([m.z for m in items])
        out["bid_price"] = [m.bp for m in items]
        out["bid_size"] = [m.bs for m in items]
        out["ask_price"] = [m.ap for m in items]
        out["ask_size"] = [m.as_ for m in items]
        return out if keep is None else out[keep]

    def _bars(self, items: list[Any], is_json: bool, batch: DecodedBatch, wire: dict[str, Any]) -> np.ndarray:
        out, keep = self._records(items, is_json, batch, "bar", BAR_DTYPE)
        updated, daily = wire["UpdatedBar"], wire["DailyBar"]
        out["flags"] = [FLAG_UPDATED_BAR if type(m) is updated else FLAG_DAILY_BAR if type(m) is daily else 0 for m in items]
        out["open"] = [m.o for m in items]
        out["high"] = [m.h for m in items]
        out["low"] = [m.l for m in items]
        out["close"] = [m.c for m in items]
        out["volume"] = [m.v for m in items]
        out["vwap"] = [m.vw for m in items]
        out["trade_count"] = [m.n for m in items]
        return out if keep is None else out[keep]

    def _book(self, items: list[Any], is_json: bool, batch: DecodedBatch) -> np.ndarray:
        ts, sids, keep = self._head(items, is_json, batch, "orderbook")
        if keep is not None:
            items = [m for m, k in zip(items, keep) if k]
            ts, sids = ts[keep], sids[keep]
        batch.n_book_messages = len(items)
        n_bids = np.array([len(m.b) for m in items], dtype=np.int64)
        n_asks = np.array([len(m.a) for m in items], dtype=np.int64)
        resets = np.array([m.r for m in items], dtype=np.bool_)
        # A reset with no levels still has to clear the book: it carries one empty placeholder
        # level (price 0, size 0: "delete nothing") so the reset flag has a delta to ride on.
        empty_reset = resets & (n_bids + n_asks == 0)
        n_bids = n_bids + empty_reset
        per_msg = n_bids + n_asks
        total = int(per_msg.sum())
        out = np.zeros(total, BOOK_DELTA_DTYPE)
        if total == 0:
            return out
        if empty_reset.any():
            px, sz = [], []
            for m, e in zip(items, empty_reset):
                if e:
                    px.append(0.0)
                    sz.append(0.0)
                else:
                    px.extend([lv.p for lv in m.b] + [lv.p for lv in m.a])
                    sz.extend([lv.s for lv in m.b] + [lv.s for lv in m.a])
            out["price"] = px
            out["size"] = sz
        else:
            out["price"] = [lv.p for m in items for side in (m.b, m.a) for lv in side]
            out["size"] = [lv.s for m in items for side in (m.b, m.a) for lv in side]
        out["ts_ns"] = np.repeat(ts, per_msg)
        out["recv_ns"] = batch.recv_ns
        out["symbol_id"] = np.repeat(sids, per_msg)
        interleaved = np.empty(2 * len(items), np.int64)
        interleaved[0::2] = n_bids
        interleaved[1::2] = n_asks
        out["side"] = np.repeat(np.tile(np.array([SIDE_BID, SIDE_ASK], np.int8), len(items)), interleaved)
        ends = np.cumsum(per_msg)
        starts = ends - per_msg
        flags = np.repeat(np.where(resets, FLAG_SNAPSHOT, 0).astype(np.uint16), per_msg)
        has = per_msg > 0
        flags[ends[has] - 1] |= FLAG_LAST_IN_BATCH
        flags[starts[has & resets]] |= FLAG_RESET
        out["flags"] = flags
        return out

    def _account(self, batch: DecodedBatch) -> None:
        st = self.stats
        st.frames += 1
        st.messages += batch.n_messages
        st.trades += len(batch.trades)
        st.quotes += len(batch.quotes)
        st.bars += len(batch.bars)
        st.book_messages += batch.n_book_messages
        st.book_deltas += len(batch.book_deltas)
        st.controls += len(batch.controls)
        st.ignored += batch.n_ignored
        for d in batch.drops:
            st.drops[d.reason] += 1


def _codes(values: list[str]) -> np.ndarray:
    """One-letter exchange/tape codes to their ASCII values (0 for none)."""
    joined = "".join(values)
    if len(joined) == len(values):
        try:
            return np.frombuffer(joined.encode("latin-1"), np.uint8)
        except UnicodeEncodeError:
            pass
    return np.array([min(ord(v[0]), 255) if v else 0 for v in values], dtype=np.uint8)


def _subscription(m: Any) -> Subscription:
    channels = {f: tuple(getattr(m, f)) for f in m.__struct_fields__ if getattr(m, f)}
    return Subscription(channels)


def _looks_like_json(frame: bytes | bytearray | memoryview) -> bool:
    # A msgpack array starts with 0x90-0x9f, 0xdc or 0xdd; JSON with '[' or whitespace.
    for b in bytes(frame[:8]):
        if b in (0x20, 0x09, 0x0A, 0x0D):
            continue
        return b == 0x5B  # '['
    return True


def _split_json_array(frame: bytes) -> list[bytes] | None:
    """Split a (possibly broken) JSON array into its top-level element texts.

    Used only when the frame as a whole does not decode: a truncated tail or one syntactically
    broken element then costs that element only. Returns None when the text is not an array.
    """
    start = frame.find(b"[")
    if start < 0 or frame[:start].strip():
        return None
    parts: list[bytes] = []
    depth = 0
    in_string = False
    escaped = False
    elem_start = start + 1
    for pos in range(start + 1, len(frame)):
        ch = frame[pos]
        if in_string:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:
                in_string = False
            continue
        if ch == 0x22:
            in_string = True
        elif ch in (0x7B, 0x5B):  # { [
            depth += 1
        elif ch in (0x7D, 0x5D):  # } ]
            if depth == 0:  # the closing bracket of the frame
                piece = frame[elem_start:pos].strip()
                if piece:
                    parts.append(piece)
                return parts
            depth -= 1
        elif ch == 0x2C and depth == 0:  # ,
            parts.append(frame[elem_start:pos].strip())
            elem_start = pos + 1
    tail = frame[elem_start:].strip()
    if tail:
        parts.append(tail)  # truncated element: decoding it will fail and count as a drop
    return parts


def _split_msgpack_array(frame: bytes) -> list[bytes] | None:
    """Split a (possibly truncated) msgpack array into its elements' bytes."""
    if not frame:
        return None
    head = frame[0]
    if 0x90 <= head <= 0x9F:
        count, pos = head & 0x0F, 1
    elif head == 0xDC and len(frame) >= 3:
        count, pos = int.from_bytes(frame[1:3], "big"), 3
    elif head == 0xDD and len(frame) >= 5:
        count, pos = int.from_bytes(frame[1:5], "big"), 5
    else:
        return None
    parts = []
    for _ in range(count):
        if pos >= len(frame):
            parts.append(b"\xc1")  # a never-used byte: decodes as an error, counted as one drop
            break
        end = _msgpack_skip(frame, pos, 0)
        if end is None or end > len(frame):
            parts.append(frame[pos:])
            break
        parts.append(frame[pos:end])
        pos = end
    return parts


def _msgpack_skip(buf: bytes, pos: int, depth: int) -> int | None:
    """Offset just past the msgpack object at ``pos`` (None when it is cut off or invalid)."""
    if pos >= len(buf) or depth > 32:
        return None
    b = buf[pos]
    n = len(buf)

    def be(off: int, size: int) -> int | None:
        if off + size > n:
            return None
        return int.from_bytes(buf[off : off + size], "big")

    if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
        return pos + 1
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F)
    fixed = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xCA: 4, 0xCB: 8,
             0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
    if b in fixed:
        return pos + 1 + fixed[b]
    sized = {0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0), 0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),
             0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}
    if b in sized:
        width, extra = sized[b]
        length = be(pos + 1, width)
        return None if length is None else pos + 1 + width + extra + length
    if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD) or 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):
        if 0x90 <= b <= 0x9F:
            count, cur = b & 0x0F, pos + 1
        elif 0x80 <= b <= 0x8F:
            count, cur = 2 * (b & 0x0F), pos + 1
        else:
            width = 2 if b in (0xDC, 0xDE) else 4
            count = be(pos + 1, width)
            if count is None:
                return None
            if b in (0xDE, 0xDF):
                count *= 2
            cur = pos + 1 + width
        for _ in range(count):
            nxt = _msgpack_skip(buf, cur, depth + 1)
            if nxt is None:
                return None
            cur = nxt
        return cur
    return None  # 0xC1 (never used)
