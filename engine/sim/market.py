"""A seeded synthetic market: L2 books, quotes, trades and minute bars for many symbols.

Deterministic for a seed: the market advances by message count (``step(n)`` yields the next ``n``
messages), never by wall time, so two markets with the same seed and the same calls produce the
same messages. Messages are Alpaca wire shapes (dicts) with ``t`` as int64 nanoseconds; the
exchange turns ``t`` into RFC 3339 text or a msgpack timestamp when it encodes a frame.

Every symbol has an L2 book kept as integer ticks. Symbols containing "/" are crypto pairs: their
book changes are published as ``orderbooks`` messages (``T:"o"``); stocks publish the top of the
book as quotes. The market is also the paper broker's ``LiquiditySource``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engine.events import SIDE_ASK, SIDE_BID

Message = dict[str, Any]

DEFAULT_START_NS = 1_704_205_800_000_000_000  # 2024-01-02T14:30:00Z, a market open
MINUTE_NS = 60_000_000_000

_WELL_KNOWN = ("AAPL", "MSFT", "AMZN", "NVDA", "GOOGL", "META", "TSLA", "SPY", "QQQ", "AMD", "NFLX", "INTC", "JPM", "XOM", "KO")
_WELL_KNOWN_CRYPTO = ("BTC/USD", "ETH/USD", "SOL/USD", "LTC/USD", "DOGE/USD", "AVAX/USD", "LINK/USD", "UNI/USD")
_EXCHANGES = "VQNPKZ"  # IEX, Nasdaq, NYSE, Arca, Cboe EDGX, Cboe BZX


@runtime_checkable
class LiquiditySource(Protocol):
    """What the paper broker needs from a market to fill orders against its book."""

    def symbols(self) -> list[str]: ...
    def top_of_book(self, symbol: str) -> tuple[float, float, float, float] | None: ...
    def depth(self, symbol: str, side: int, levels: int) -> list[tuple[float, float]]: ...
    def add_listener(self, callback: Callable[[list[str]], None]) -> None: ...


def default_symbols(n_stocks: int, n_crypto: int = 0) -> list[str]:
    """``n_stocks`` stock tickers (well-known ones first, then ``S0015``...) and ``n_crypto`` pairs."""
    stocks = list(_WELL_KNOWN[:n_stocks]) + [f"S{i:04d}" for i in range(len(_WELL_KNOWN), n_stocks)]
    crypto = list(_WELL_KNOWN_CRYPTO[:n_crypto]) + [f"C{i:03d}/USD" for i in range(len(_WELL_KNOWN_CRYPTO), n_crypto)]
    return stocks + crypto


class _Book:
    """One symbol's book: ``levels`` price levels a side, as tick -> size dicts."""

    __slots__ = ("symbol", "crypto", "tick", "decimals", "bids", "asks", "best_bid", "best_ask", "levels", "lot", "trade_id")

    def __init__(self, symbol: str, rng: np.random.Generator, levels: int) -> None:
        self.symbol = symbol
        self.crypto = "/" in symbol
        self.levels = levels
        if self.crypto:
            price = float(rng.choice([25.0, 150.0, 2500.0, 40000.0]) * rng.uniform(0.8, 1.2))
            self.tick = 0.01 if price < 1000 else 0.5
            self.lot = 0.0  # fractional sizes
        else:
            price = float(rng.uniform(10.0, 500.0))
            self.tick = 0.01
            self.lot = 100.0
        self.decimals = 2 if self.tick >= 0.01 else 8
        mid = int(price / self.tick)
        spread = int(rng.integers(1, 4))
        self.best_bid = mid - spread // 2 - 1
        self.best_ask = self.best_bid + spread
        self.bids = {self.best_bid - k: self.size(rng) for k in range(levels)}
        self.asks = {self.best_ask + k: self.size(rng) for k in range(levels)}
        self.trade_id = 0

    def size(self, rng: np.random.Generator) -> float:
        if self.lot:
            return self.lot * int(rng.integers(1, 20))
        return round(float(rng.uniform(0.001, 5.0)), 5)

    def px(self, ticks: int) -> float:
        return round(ticks * self.tick, self.decimals)

    def move(self, up: bool, rng: np.random.Generator) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Shift the whole book one tick; returns the changed (tick, size) levels per side."""
        L = self.levels
        if up:
            gone_ask, gone_bid = self.best_ask, self.best_bid - L + 1
            self.best_bid += 1
            self.best_ask += 1
            new_bid, new_ask = self.best_bid, self.best_ask + L - 1
        else:
            gone_bid, gone_ask = self.best_bid, self.best_ask + L - 1
            self.best_bid -= 1
            self.best_ask -= 1
            new_bid, new_ask = self.best_bid - L + 1, self.best_ask
        self.bids.pop(gone_bid, None)
        self.asks.pop(gone_ask, None)
        self.bids[new_bid] = bid_size = self.size(rng)
        self.asks[new_ask] = ask_size = self.size(rng)
        return [(gone_bid, 0.0), (new_bid, bid_size)], [(gone_ask, 0.0), (new_ask, ask_size)]

    def resize(self, side: int, level: int, rng: np.random.Generator) -> tuple[int, float]:
        ticks = (self.best_bid - level) if side == SIDE_BID else (self.best_ask + level)
        size = self.size(rng)
        (self.bids if side == SIDE_BID else self.asks)[ticks] = size
        return ticks, size

    def side_levels(self, side: int) -> list[tuple[float, float]]:
        if side == SIDE_BID:
            return [(self.px(t), self.bids[t]) for t in sorted(self.bids, reverse=True)]
        return [(self.px(t), self.asks[t]) for t in sorted(self.asks)]


class SyntheticMarket:
    """A deterministic multi-symbol market (see the module docstring).

    ``symbols``: names (a "/" marks a crypto pair) or a count of stock symbols.
    ``event_interval_ns``: synthetic time between messages; ``step(n, now_ns=...)`` stamps wall time
    instead (the exchange does that by default).
    """

    def __init__(
        self,
        symbols: Sequence[str] | int = 20,
        seed: int = 7,
        *,
        levels: int = 10,
        start_ns: int = DEFAULT_START_NS,
        event_interval_ns: int = 1_000_000,
        trade_share: float = 0.3,
        move_share: float = 0.3,
    ) -> None:
        names = default_symbols(symbols) if isinstance(symbols, int) else list(symbols)
        if not names:
            raise ValueError("a market needs at least one symbol")
        if len(set(names)) != len(names):
            raise ValueError("duplicate symbols in the market")
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self._rng = np.random.default_rng(seed)
        self._names = names
        self._books = {name: _Book(name, self._rng, levels) for name in names}
        self._book_list = [self._books[n] for n in names]
        self._listeners: list[Callable[[list[str]], None]] = []
        self._trade_share = trade_share
        self._move_share = move_share
        self.event_interval_ns = event_interval_ns
        self.now_ns = start_ns
        self.messages_emitted = 0
        self._minute = start_ns // MINUTE_NS
        self._bar_acc: dict[str, list[float]] = {}  # symbol -> [o, h, l, c, v, n, pv]
        self._pending: list[Message] = []

    # --- LiquiditySource --------------------------------------------------------------------
    def symbols(self) -> list[str]:
        return list(self._names)

    def top_of_book(self, symbol: str) -> tuple[float, float, float, float] | None:
        book = self._books.get(symbol)
        if book is None:
            return None
        return book.px(book.best_bid), book.bids[book.best_bid], book.px(book.best_ask), book.asks[book.best_ask]

    def depth(self, symbol: str, side: int, levels: int) -> list[tuple[float, float]]:
        book = self._books.get(symbol)
        if book is None or side not in (SIDE_BID, SIDE_ASK):
            return []
        return book.side_levels(side)[: max(levels, 0)]

    def add_listener(self, callback: Callable[[list[str]], None]) -> None:
        self._listeners.append(callback)

    # --- the feed ---------------------------------------------------------------------------
    def is_crypto(self, symbol: str) -> bool:
        return "/" in symbol

    def snapshot(self, symbol: str) -> Message | None:
        """A full-depth orderbook message with ``r: true`` (what a new crypto subscriber gets first)."""
        book = self._books.get(symbol)
        if book is None:
            return None
        return {
            "T": "o",
            "S": symbol,
            "t": self.now_ns,
            "b": [{"p": p, "s": s} for p, s in book.side_levels(SIDE_BID)],
            "a": [{"p": p, "s": s} for p, s in book.side_levels(SIDE_ASK)],
            "r": True,
        }

    def step(self, n: int, now_ns: int | None = None) -> list[Message]:
        """The next ``n`` messages (minute bars, when a minute closes, count among them)."""
        if n <= 0:
            return []
        rng = self._rng
        which = rng.integers(0, len(self._book_list), size=n)
        kind = rng.random(n)
        coin = rng.random(n)
        level = np.minimum(rng.geometric(0.45, size=n) - 1, self._book_list[0].levels - 1)
        out: list[Message] = []
        changed: dict[str, None] = {}
        k = 0
        while len(out) < n:
            if self._pending:
                out.append(self._pending.pop(0))
                continue
            ts = self._next_ts(now_ns, len(out))
            if self._pending:  # a minute just closed: its bars go first
                continue
            book = self._book_list[which[k]]
            u = kind[k]
            if u < self._trade_share:
                out.append(self._trade(book, ts, coin[k] < 0.5, rng))
            else:
                if u < self._trade_share + self._move_share:
                    bids, asks = book.move(coin[k] < 0.5, rng)
                else:
                    side = SIDE_BID if coin[k] < 0.5 else SIDE_ASK
                    changed_level = book.resize(side, int(level[k]), rng)
                    bids, asks = ([changed_level], []) if side == SIDE_BID else ([], [changed_level])
                changed[book.symbol] = None
                out.append(self._book_message(book, ts, bids, asks) if book.crypto else self._quote(book, ts))
            k += 1  # one draw per event; bars take no draws, so k < n whenever out is short
        self.messages_emitted += len(out)
        if changed and self._listeners:
            symbols = list(changed)
            for cb in list(self._listeners):
                cb(symbols)
        return out

    # --- internals --------------------------------------------------------------------------
    def _next_ts(self, now_ns: int | None, offset: int) -> int:
        if now_ns is None:
            self.now_ns += self.event_interval_ns
        else:
            self.now_ns = max(self.now_ns + 1, now_ns + offset)
        minute = self.now_ns // MINUTE_NS
        if minute != self._minute:
            self._close_bars(self._minute)
            self._minute = minute
        return self.now_ns

    def _close_bars(self, minute: int) -> None:
        t = minute * MINUTE_NS
        for symbol in self._names:  # symbol order, so bars come out deterministically
            acc = self._bar_acc.get(symbol)
            if acc is None:
                continue
            o, h, lo, c, v, n, pv = acc
            self._pending.append(
                {"T": "b", "S": symbol, "o": o, "h": h, "l": lo, "c": c, "v": v, "t": t, "n": int(n), "vw": round(pv / v, 6) if v else c}
            )
        self._bar_acc.clear()

    def _trade(self, book: _Book, ts: int, buyer_initiated: bool, rng: np.random.Generator) -> Message:
        ticks = book.best_ask if buyer_initiated else book.best_bid
        resting = (book.asks if buyer_initiated else book.bids)[ticks]
        size = min(resting, book.size(rng))
        price = book.px(ticks)
        book.trade_id += 1
        acc = self._bar_acc.get(book.symbol)
        if acc is None:
            self._bar_acc[book.symbol] = [price, price, price, price, size, 1, price * size]
        else:
            acc[1] = max(acc[1], price)
            acc[2] = min(acc[2], price)
            acc[3] = price
            acc[4] += size
            acc[5] += 1
            acc[6] += price * size
        if book.crypto:
            return {"T": "t", "S": book.symbol, "p": price, "s": size, "t": ts, "i": book.trade_id, "tks": "B" if buyer_initiated else "S"}
        return {
            "T": "t", "S": book.symbol, "i": book.trade_id, "x": _EXCHANGES[book.trade_id % len(_EXCHANGES)],
            "p": price, "s": size, "t": ts, "c": ["@"], "z": "C" if book.symbol in ("SPY", "QQQ") else "A",
        }

    def _quote(self, book: _Book, ts: int) -> Message:
        return {
            "T": "q", "S": book.symbol, "bx": "V", "bp": book.px(book.best_bid), "bs": book.bids[book.best_bid],
            "ax": "V", "ap": book.px(book.best_ask), "as": book.asks[book.best_ask], "t": ts, "c": ["R"], "z": "A",
        }

    def _book_message(self, book: _Book, ts: int, bids: list[tuple[int, float]], asks: list[tuple[int, float]]) -> Message:
        return {
            "T": "o", "S": book.symbol, "t": ts,
            "b": [{"p": book.px(t), "s": s} for t, s in bids],
            "a": [{"p": book.px(t), "s": s} for t, s in asks],
            "r": False,
        }


class MessageLoop:
    """A fixed list of messages served round and round (benchmarks: no generation cost per message).

    Timestamps are restamped on the way out so the feed looks live; content repeats.
    """

    def __init__(self, messages: list[Message], market: SyntheticMarket | None = None, *, wire: str | None = None) -> None:
        """``wire="msgpack"`` or ``"json"`` converts timestamps to that wire form and encodes each
        message once, up front, so the exchange sends them without per-message work (for benchmarks;
        timestamps then repeat)."""
        if not messages:
            raise ValueError("a message loop needs messages")
        if wire is not None:
            from engine.marketdata.timestamps import format_rfc3339, msgpack_timestamp_payload  # noqa: PLC0415
            from engine.sim.exchange import EncodedMessage  # noqa: PLC0415

            if wire == "msgpack":
                import msgspec  # noqa: PLC0415

                messages = [{**m, "t": msgspec.msgpack.Ext(-1, msgpack_timestamp_payload(m["t"]))} for m in messages]
            elif wire == "json":
                messages = [{**m, "t": format_rfc3339(m["t"])} for m in messages]
            else:
                raise ValueError("wire must be 'msgpack', 'json' or None")
            messages = [EncodedMessage.of(m) for m in messages]
        self._messages = messages
        self._pos = 0
        self._market = market
        self.now_ns = 0

    def symbols(self) -> list[str]:
        return sorted({m["S"] for m in self._messages if "S" in m})

    def snapshot(self, symbol: str) -> Message | None:
        return self._market.snapshot(symbol) if self._market is not None else None

    def is_crypto(self, symbol: str) -> bool:
        return "/" in symbol

    def step(self, n: int, now_ns: int | None = None) -> list[Message]:
        out: list[Message] = []
        while len(out) < n:
            take = self._messages[self._pos : self._pos + (n - len(out))]  # the same dicts, not copies
            out.extend(take)
            self._pos = (self._pos + len(take)) % len(self._messages)
        return out
