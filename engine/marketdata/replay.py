"""Replaying a recording: frames at recorded speed, N times faster, or as fast as possible.

``read_frames(path)`` yields ``(recv_ns, frame)`` exactly as recorded; ``paced(frames, speed)`` and
``apaced(...)`` space them out in time; ``replay_into_book(path)`` runs them through the decoder
into a ``BookManager`` (the ``tickforge replay`` command); ``RecordedMarket`` serves a recording
from the embedded exchange instead of the synthetic market.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from engine.errors import InputError
from engine.events import SIDE_ASK, SIDE_BID
from engine.marketdata.decoder import Decoder, DecoderStats
from engine.marketdata.recorder import open_recording
from engine.marketdata.symbols import SymbolMap
from engine.marketdata.timestamps import parse_rfc3339

Frame = tuple[int, "str | bytes"]


class _Line(msgspec.Struct):
    recv_ns: int = 0
    text: str | None = None
    msgpack: str | None = None
    tickforge_recording: int | None = None


def read_frames(path: str | os.PathLike[str]) -> Iterator[tuple[int, str | bytes]]:
    """Every recorded frame with its receive time, in file order. Bad lines raise ``InputError``."""
    decoder = msgspec.json.Decoder(_Line)
    with open_recording(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise InputError(f"{path}:{number}: not a recording line ({exc})") from None
            if line.tickforge_recording is not None:
                continue
            if line.text is not None:
                yield line.recv_ns, line.text
            elif line.msgpack is not None:
                yield line.recv_ns, base64.b64decode(line.msgpack)
            else:
                raise InputError(f"{path}:{number}: line has neither 'text' nor 'msgpack'")


def _delays(frames: Iterable[tuple[int, str | bytes]], speed: float) -> Iterator[tuple[float | None, int, str | bytes]]:
    """Each frame with the seconds left to wait before it is due (None: ``speed`` is inf, never wait).
    The wait is measured when the frame is pulled, so time spent by the consumer counts."""
    if not speed > 0:
        raise InputError("replay speed must be > 0 (use inf for as fast as possible)")
    finite = math.isfinite(speed)
    first: int | None = None
    start = time.monotonic()
    for recv_ns, frame in frames:
        if not finite:
            yield None, recv_ns, frame
            continue
        if first is None:
            first = recv_ns
        yield start + (recv_ns - first) / 1e9 / speed - time.monotonic(), recv_ns, frame


def paced(frames: Iterable[tuple[int, str | bytes]], speed: float = 1.0) -> Iterator[tuple[int, str | bytes]]:
    """Yield frames spaced as recorded, divided by ``speed`` (``math.inf``: no waiting)."""
    for delay, recv_ns, frame in _delays(frames, speed):
        if delay is not None and delay > 0:
            time.sleep(delay)
        yield recv_ns, frame


async def apaced(frames: Iterable[tuple[int, str | bytes]], speed: float = 1.0) -> AsyncIterator[tuple[int, str | bytes]]:
    """``paced`` for asyncio code: waits with ``asyncio.sleep`` so the loop keeps running."""
    for delay, recv_ns, frame in _delays(frames, speed):
        if delay is None:
            await asyncio.sleep(0)  # as fast as possible, but other tasks still get a turn per frame
        elif delay > 0:
            await asyncio.sleep(delay)
        yield recv_ns, frame


def _tick_size(prices: np.ndarray) -> float:
    """The coarsest decimal tick (1, 0.1, ..., 1e-8) that every price sits on."""
    prices = prices[np.isfinite(prices) & (prices > 0)]
    for decimals in range(0, 9):
        scaled = prices * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-6 * np.maximum(1.0, scaled)):
            return 10.0**-decimals
    return 1e-8


@dataclass
class ReplaySummary:
    """What a replay saw and the book it left."""

    frames: int
    stats: DecoderStats
    symbols: list[str]
    top_of_book: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    book_drops: int = 0
    seconds: float = 0.0


def replay_into_book(
    path: str | os.PathLike[str],
    speed: float = math.inf,
    *,
    max_symbols: int = 4096,
    on_batch: Callable[[Any], None] | None = None,
) -> ReplaySummary:
    """Decode a recording into a book (quotes for stocks, orderbooks for crypto) and summarise it."""
    from engine.book import BookManager  # noqa: PLC0415 - numba kernels load only when replaying

    # Pass 1: learn the symbols and a price tick for each, so the book is sized and exact.
    scout = Decoder(SymbolMap(max_symbols=max_symbols), log_drops=False)
    prices: dict[int, list[np.ndarray]] = {}
    for recv_ns, frame in read_frames(path):
        batch = scout.decode(frame, recv_ns)
        for arr, cols in ((batch.quotes, ("bid_price", "ask_price")), (batch.book_deltas, ("price",)), (batch.trades, ("price",))):
            if len(arr):
                for sid in np.unique(arr["symbol_id"]):
                    rows = arr[arr["symbol_id"] == sid]
                    prices.setdefault(int(sid), []).extend(rows[c] for c in cols)
    names = scout.symbols.names
    ticks = [(_tick_size(np.concatenate(prices[i])) if i in prices else 0.01) for i in range(len(names))]
    # Pass 2: the replay proper, through a fresh decoder whose ids match the book's.
    symbols = SymbolMap(names, mode="strict")
    decoder = Decoder(symbols)
    book = BookManager(max(len(names), 1), np.array(ticks or [0.01]), window_ticks=1024)
    started = time.monotonic()
    frames = 0
    for recv_ns, frame in paced(read_frames(path), speed):
        batch = decoder.decode(frame, recv_ns)
        frames += 1
        if len(batch.quotes):
            book.apply_quotes(batch.quotes)
        if len(batch.book_deltas):
            book.apply_deltas(batch.book_deltas)
        if on_batch is not None:
            on_batch(batch)
    tob = {}
    for sid, name in enumerate(names):
        bid, ask = book.best_bid_price(sid), book.best_ask_price(sid)
        if np.isfinite(bid) or np.isfinite(ask):
            tob[name] = (bid, book.best_bid_size(sid), ask, book.best_ask_size(sid))
    drops = sum(v for k, v in book.stats().items() if k.startswith("drop"))
    return ReplaySummary(frames, decoder.stats, names, tob, drops, time.monotonic() - started)


class RecordedMarket:
    """A recording served by the embedded exchange: ``step(n)`` hands out its messages in order.

    Keeps each symbol's book from the recorded quotes and orderbooks, so new orderbook subscribers
    get a correct snapshot and the paper broker can use it as a ``LiquiditySource``.
    """

    def __init__(self, path: str | os.PathLike[str], *, loop: bool = False) -> None:
        self._messages: list[dict[str, Any]] = []
        for _, frame in read_frames(path):
            try:
                msgs = msgspec.json.decode(frame) if isinstance(frame, str) else msgspec.msgpack.decode(frame)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            for m in msgs if isinstance(msgs, list) else []:
                if isinstance(m, dict) and m.get("T") in ("t", "q", "b", "u", "d", "o") and isinstance(m.get("S"), str):
                    t = m.get("t")
                    try:
                        m["t"] = parse_rfc3339(t) if isinstance(t, str) else int(t.timestamp() * 1e9) if t is not None else 0
                    except (ValueError, AttributeError):
                        continue
                    self._messages.append(m)
        if not self._messages:
            raise InputError(f"recording {path} holds no market data")
        self._loop = loop
        self._pos = 0
        self._bids: dict[str, dict[float, float]] = {}
        self._asks: dict[str, dict[float, float]] = {}
        self._listeners: list[Callable[[list[str]], None]] = []
        self._symbols = sorted({m["S"] for m in self._messages})

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def step(self, n: int, now_ns: int | None = None) -> list[dict[str, Any]]:
        out = []
        changed: dict[str, None] = {}
        while len(out) < n:
            if self._pos >= len(self._messages):
                if not self._loop:
                    break
                self._pos = 0
            m = self._messages[self._pos]
            self._pos += 1
            if m["T"] in ("q", "o"):
                self._apply(m)
                changed[m["S"]] = None
            out.append(m if now_ns is None else {**m, "t": now_ns + len(out)})
        if changed:
            for cb in list(self._listeners):
                cb(list(changed))
        return out

    def _apply(self, m: dict[str, Any]) -> None:
        sym = m["S"]
        bids = self._bids.setdefault(sym, {})
        asks = self._asks.setdefault(sym, {})
        if m["T"] == "q":
            bids.clear()
            asks.clear()
            if m.get("bs"):
                bids[m["bp"]] = m["bs"]
            if m.get("as"):
                asks[m["ap"]] = m["as"]
            return
        if m.get("r"):
            bids.clear()
            asks.clear()
        for side, levels in ((bids, m.get("b", [])), (asks, m.get("a", []))):
            for lv in levels:
                if lv.get("s"):
                    side[lv["p"]] = lv["s"]
                else:
                    side.pop(lv.get("p"), None)

    def snapshot(self, symbol: str) -> dict[str, Any] | None:
        if symbol not in self._bids and symbol not in self._asks:
            return None
        return {
            "T": "o", "S": symbol, "t": time.time_ns(), "r": True,
            "b": [{"p": p, "s": s} for p, s in self.depth(symbol, SIDE_BID, 10**6)],
            "a": [{"p": p, "s": s} for p, s in self.depth(symbol, SIDE_ASK, 10**6)],
        }

    def top_of_book(self, symbol: str) -> tuple[float, float, float, float] | None:
        if symbol not in self._symbols:
            return None
        bid = self.depth(symbol, SIDE_BID, 1)
        ask = self.depth(symbol, SIDE_ASK, 1)
        bid_px, bid_sz = bid[0] if bid else (math.nan, 0.0)
        ask_px, ask_sz = ask[0] if ask else (math.nan, 0.0)
        return bid_px, bid_sz, ask_px, ask_sz

    def depth(self, symbol: str, side: int, levels: int) -> list[tuple[float, float]]:
        book = self._bids.get(symbol, {}) if side == SIDE_BID else self._asks.get(symbol, {})
        return sorted(book.items(), reverse=side == SIDE_BID)[: max(levels, 0)]

    def add_listener(self, callback: Callable[[list[str]], None]) -> None:
        self._listeners.append(callback)


# --- the `tickforge replay` command -----------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", help="file written by `tickforge record`")
    parser.add_argument("--speed", default="max", help="1 = recorded speed, N = N times faster, max = as fast as possible (default)")
    parser.add_argument("--top", type=int, default=20, help="how many symbols' top of book to print (default 20)")


def _parse_speed(text: str) -> float:
    if text.lower() in ("max", "inf", "0"):
        return math.inf
    try:
        speed = float(text)
    except ValueError:
        raise InputError(f"--speed must be a number or 'max', not {text!r}") from None
    if not speed > 0:
        raise InputError("--speed must be > 0")
    return speed


def run(args: argparse.Namespace) -> int:
    summary = replay_into_book(args.recording, _parse_speed(args.speed))
    st = summary.stats
    print(
        f"replayed {summary.frames} frames, {st.messages} messages in {summary.seconds:.2f}s: "
        f"{st.trades} trades, {st.quotes} quotes, {st.bars} bars, {st.book_messages} orderbook messages "
        f"({st.book_deltas} levels), {st.controls} control, {st.dropped} dropped"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(st.drops.items()))})" if st.dropped else "")
        + (f", {summary.book_drops} rejected by the book" if summary.book_drops else "")
    )
    shown = list(summary.top_of_book.items())[: max(args.top, 0)]
    if shown:
        print(f"{'symbol':<12} {'bid size':>12} {'bid':>14} {'ask':>14} {'ask size':>12}")
        for name, (bid, bid_sz, ask, ask_sz) in shown:
            print(f"{name:<12} {bid_sz:>12g} {bid:>14g} {ask:>14g} {ask_sz:>12g}")
        if len(summary.top_of_book) > len(shown):
            print(f"... and {len(summary.top_of_book) - len(shown)} more symbols")
    return 0
