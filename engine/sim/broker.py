"""Embedded paper broker: Alpaca's Trading API v2 (REST) and ``trade_updates`` stream on localhost.

Orders fill against a ``LiquiditySource`` (the synthetic market, or a ``StaticBook``): market orders
walk the book level by level, limit orders take what crosses and rest until the book crosses them,
stop orders wait for the touch to reach the stop. Liquidity an order consumed stays consumed until
the source reports that symbol's book changed. Cash, buying power and positions follow every fill.

The wire protocol is Alpaca's: the same paths, JSON shapes with decimals as strings, status codes
and ``{"code", "message"}`` error bodies, ``X-Ratelimit-*`` headers and 429 + ``Retry-After`` past
the limit, and the ``/stream`` WebSocket (authenticate, listen, binary frames) on the same port, so
unmodified Alpaca SDK clients work against it. HTTP/1.1 requests are parsed by llhttp (``httptools``:
keep-alive, Content-Length and chunked bodies, pipelining) and responses framed here, inside an
asyncio protocol that answers a request in the loop turn its bytes arrive; a WebSocket upgrade hands
the connection to the ``websockets`` library's protocol engine. An order's REST response goes out before its trade_updates events are encoded and
sent: the order exists by then, and the stream is not what the caller waits on. Fault switches
(``broker.faults``) inject delays, dropped responses, 5xx and 429 bursts for tests.

Simplifications, on purpose: no market sessions (opg/cls behave as day orders, day orders expire only
when ``expire_day_orders()`` is called), no notional or multi-leg orders, cash-account buying power
(multiplier 1, shorting allowed).
"""

from __future__ import annotations

import asyncio
import decimal
import functools
import hmac
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httptools
import msgspec
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from engine._http1 import crlf, head_end
from engine._logs import wire_logger
from engine.config import SimConfig
from engine.events import SIDE_ASK, SIDE_BID
from engine.sim.market import LiquiditySource

log = logging.getLogger(__name__)


_wire_log = wire_logger(__name__)  # websockets frame logs, auth frames redacted

_ZERO = Decimal(0)
_CENT = Decimal("0.01")
_SUB_PENNY = Decimal("0.0001")
_ASSET_NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # uuid5 namespace: asset ids stable per symbol
_TERMINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
_ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
_TIME_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")
_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 1024 * 1024
_WRITE_BUFFER_HIGH = 256 * 1024  # responses a client leaves unread past this: its requests wait until it reads
_REASONS = {
    200: "OK", 204: "No Content", 207: "Multi-Status", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
    413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
_encode = msgspec.json.encode
_decode = msgspec.json.decode
_PLAIN_JSON = frozenset({str, bool, type(None)})  # the values msgspec's decoding of an order body may keep
_urandom = os.urandom
_Raw = msgspec.Raw
_DECIMAL_JSON = json.JSONDecoder(parse_float=Decimal)


class StaticBook:
    """A hand-set L2 book per symbol: the standalone liquidity source (tests, demos, what-if runs).

    ``set_book`` replaces a symbol's whole book and tells the listeners it changed.
    """

    def __init__(self, books: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]] | None = None) -> None:
        self._bids: dict[str, list[tuple[float, float]]] = {}
        self._asks: dict[str, list[tuple[float, float]]] = {}
        self._listeners: list[Callable[[list[str]], None]] = []
        for symbol, (bids, asks) in (books or {}).items():
            self.set_book(symbol, bids, asks)

    def set_book(self, symbol: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        """Replace ``symbol``'s book. Levels are (price, size); any order; zero-size levels are dropped."""
        clean_bids = _clean_levels(symbol, bids, descending=True)
        clean_asks = _clean_levels(symbol, asks, descending=False)
        if clean_bids and clean_asks and clean_bids[0][0] >= clean_asks[0][0]:
            raise ValueError(f"{symbol}: crossed book (best bid {clean_bids[0][0]} >= best ask {clean_asks[0][0]})")
        self._bids[symbol] = clean_bids
        self._asks[symbol] = clean_asks
        for callback in list(self._listeners):
            callback([symbol])

    def symbols(self) -> list[str]:
        return list(self._bids)

    def top_of_book(self, symbol: str) -> tuple[float, float, float, float] | None:
        if symbol not in self._bids:
            return None
        bids, asks = self._bids[symbol], self._asks[symbol]
        bid_px, bid_sz = bids[0] if bids else (math.nan, 0.0)
        ask_px, ask_sz = asks[0] if asks else (math.nan, 0.0)
        return bid_px, bid_sz, ask_px, ask_sz

    def depth(self, symbol: str, side: int, levels: int) -> list[tuple[float, float]]:
        book = self._bids if side == SIDE_BID else self._asks if side == SIDE_ASK else {}
        return list(book.get(symbol, ())[: max(levels, 0)])

    def add_listener(self, callback: Callable[[list[str]], None]) -> None:
        self._listeners.append(callback)


def _clean_levels(symbol: str, levels: list[tuple[float, float]], *, descending: bool) -> list[tuple[float, float]]:
    out = []
    for price, size in levels:
        price, size = float(price), float(size)
        if not (math.isfinite(price) and price > 0 and math.isfinite(size) and size >= 0):
            raise ValueError(f"{symbol}: bad level ({price}, {size})")
        if size > 0:
            out.append((price, size))
    out.sort(reverse=descending)
    if len({p for p, _ in out}) != len(out):
        raise ValueError(f"{symbol}: duplicate price level")
    return out


@dataclass
class BrokerFaults:
    """Switches for fault injection; tests flip them while the broker runs."""

    delay_s: float = 0.0  #: delayed requests wait this long before they are handled
    delay_requests: int | None = None  #: how many of the next requests are delayed (None: all, while delay_s > 0)
    drop_after_accept: int = 0  #: next N order submits: order accepted, connection closed with no response
    error_next: int = 0  #: next N requests get a 5xx and are not processed
    error_status: int = 503
    throttle_next: int = 0  #: next N requests get a 429 with Retry-After (a burst of throttling)
    retry_after_s: int = 1
    refuse_streams: bool = False  #: trade_updates upgrades are refused with 503
    duplicate_events: bool = False  #: every trade_updates event is sent twice


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> _ApiError:
    return _ApiError(422, 40010001, message)


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    seconds, frac = divmod(ns, 1_000_000_000)
    return f"{_iso_seconds(seconds)}.{frac // 1000:06d}Z"


@functools.lru_cache(maxsize=256)
def _iso_seconds(seconds: int) -> str:
    """The date and time to the second (an order's timestamps mostly share their second: formatted once)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


@functools.lru_cache(maxsize=None)
def _asset_id(symbol: str) -> str:
    """A symbol's asset id: stable per symbol (only symbols the market knows get one)."""
    return str(uuid.uuid5(_ASSET_NS, symbol))


@functools.lru_cache(maxsize=256)
def _split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """A request target's decoded path and query (a handful of targets repeat: split once each)."""
    split = urlsplit(target)
    return unquote(split.path), parse_qs(split.query, keep_blank_values=True)


def _json_loads_decimal(body: bytes) -> Any:
    """``json.loads(body, parse_float=Decimal)`` without building a decoder per call."""
    return _DECIMAL_JSON.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


def _order_fields(body: bytes) -> Any:
    """``_json_loads_decimal(body)``, by msgspec for an object of strings, booleans and nulls (what
    clients send: decimals as strings), the order path's cheapest decoder.

    Whatever UTF-8 JSON msgspec reads, it reads as json does; it refuses what json reads otherwise
    (NaN, BOMs, other encodings, lone surrogates) and numbers and nesting are json's here, so any
    other body takes json's path: the same fields, or the same error.
    """
    try:
        fields = _decode(body)
    except (ValueError, RecursionError):
        return _json_loads_decimal(body)
    if type(fields) is dict:
        for value in fields.values():
            if type(value) not in _PLAIN_JSON:
                return _json_loads_decimal(body)
        return fields
    return _json_loads_decimal(body)


def _fmt(value: Decimal | None) -> str | None:
    if value is None:
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _uuid4() -> str:
    """``str(uuid.uuid4())``: the same random version-4 UUID text, without building a ``UUID``."""
    raw = bytearray(_urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


def _now_ns() -> int:
    return time.time_ns() // 1000 * 1000  # microseconds: what the wire carries


@dataclass(slots=True, eq=False)
class _Order:
    id: str
    client_order_id: str
    symbol: str
    asset_id: str
    crypto: bool
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    created_ns: int
    status: str = "new"
    filled_qty: Decimal = _ZERO
    filled_notional: Decimal = _ZERO
    updated_ns: int = 0
    filled_ns: int | None = None
    canceled_ns: int | None = None
    expired_ns: int | None = None
    triggered: bool = False  # stop orders: the stop price was reached
    resting: bool = False  # passed its first matching pass: later fills are at its own limit
    # the wire text of what never changes after submit, formatted once (an order is encoded several
    # times: its response and each trade_updates event carry it)
    created_at: str = field(init=False)
    qty_text: str = field(init=False)
    limit_text: str | None = field(init=False)
    stop_text: str | None = field(init=False)
    # the order's JSON as last encoded and the state it was encoded in (see ``wire``)
    _wire: bytes = field(init=False, default=b"")
    _wire_state: tuple[Any, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.created_at = _iso(self.created_ns)  # type: ignore[assignment]
        self.qty_text = _fmt(self.qty)  # type: ignore[assignment]
        self.limit_text = _fmt(self.limit_price)
        self.stop_text = _fmt(self.stop_price)

    @property
    def buy(self) -> bool:
        return self.side == "buy"

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def open(self) -> bool:
        return self.status not in _TERMINAL

    def avg_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None

    def state(self) -> tuple[Any, ...]:
        """What of the order changes after submit (all immutable values): its wire form at this moment."""
        return (self.status, self.updated_ns, self.filled_qty, self.filled_notional, self.filled_ns,
                self.canceled_ns, self.expired_ns)

    def wire(self, state: tuple[Any, ...] | None = None) -> bytes:
        """``to_json(state)`` encoded (``state``: an earlier ``state()``, default now), once per state
        of the order: its REST response and the trade_updates event of the same state (a fill's, for
        an order that filled on submit) carry the same bytes."""
        current = self.state()
        if state is not None and state != current:
            return _encode(self.to_json(state))  # an event encoded after the order moved on
        if current != self._wire_state:
            self._wire = _encode(self.to_json(current))
            self._wire_state = current
        return self._wire

    def to_json(self, state: tuple[Any, ...] | None = None) -> dict[str, Any]:
        status, updated_ns, filled_qty, filled_notional, filled_ns, canceled_ns, expired_ns = state or self.state()
        created = self.created_at
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": created,
            "updated_at": _iso(updated_ns) if updated_ns else created,
            "submitted_at": created,
            "filled_at": _iso(filled_ns),
            "expired_at": _iso(expired_ns),
            "canceled_at": _iso(canceled_ns),
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "asset_class": "crypto" if self.crypto else "us_equity",
            "notional": None,
            "qty": self.qty_text,
            "filled_qty": _fmt(filled_qty),
            "filled_avg_price": _fmt(filled_notional / filled_qty) if filled_qty else None,
            "order_class": "simple",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
            "time_in_force": self.time_in_force,
            "limit_price": self.limit_text,
            "stop_price": self.stop_text,
            "status": status,
            "extended_hours": self.extended_hours,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "expires_at": None,
        }


@dataclass(slots=True)
class _Position:
    symbol: str
    crypto: bool
    qty: Decimal = _ZERO  # signed: negative is short
    avg_entry_price: Decimal = _ZERO
    last_fill_price: Decimal = _ZERO


class _StreamClient:
    """One trade_updates WebSocket connection (server side)."""

    __slots__ = ("protocol", "transport", "authenticated", "listening", "fragments")

    def __init__(self, protocol: ServerProtocol, transport: asyncio.Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.authenticated = False
        self.listening = False
        self.fragments: list[bytes] = []  # a message's frames so far

    def send(self, *payloads: bytes) -> None:
        """One binary frame per payload (Alpaca's trade_updates stream uses binary frames), in one write."""
        if self.protocol.state is not State.OPEN or self.transport.is_closing():
            return
        for payload in payloads:
            self.protocol.send_binary(payload)
        self.flush()

    def send_framed(self, frames: bytes, payloads: Sequence[bytes]) -> None:
        """``send(*payloads)`` given its frames already built (``_binary_frames``): written as they are.

        A server's frames are unmasked, so every listener's bytes are the same; with no extension
        negotiated and frame logging off they are exactly what the protocol would write.
        """
        protocol = self.protocol
        if protocol.debug or protocol.extensions:
            self.send(*payloads)
        elif protocol.state is State.OPEN and not self.transport.is_closing():
            self.transport.write(frames)

    def flush(self) -> None:
        chunks = self.protocol.data_to_send()
        if not chunks or self.transport.is_closing():
            return
        data = b"".join(chunks)
        if data:
            self.transport.write(data)
        if not chunks[-1]:  # the protocol's end-of-stream marker: the server closes TCP after the close handshake
            self.transport.close()


def _binary_frames(payloads: Sequence[bytes]) -> bytes:
    """Unmasked, unfragmented binary frames, serialized as websockets serializes a server's frames."""
    return b"".join([Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[]) for payload in payloads])


# A trade_updates event as it happened, encoded only when it is sent (after the response it belongs
# to): name, order, timestamp, the order's ``state()`` then, and for fills price, qty and position qty.
_Event = tuple[str, "_Order", int, tuple[Any, ...], Decimal | None, Decimal | None, Decimal | None]


class _Drop(Exception):
    """Close the connection without answering (fault injection); the accepted order's events still go out."""

    def __init__(self, events: Sequence[_Event]) -> None:
        super().__init__()
        self.events = events


_NO_EVENTS: tuple[_Event, ...] = ()
_Reply = tuple[int, bytes | None, list[tuple[str, str]], Sequence[_Event]]  # status, body, headers, events


class PaperBroker:
    """Alpaca-compatible paper broker on localhost, filling against ``market``."""

    def __init__(
        self,
        market: LiquiditySource,
        config: SimConfig | None = None,
        *,
        rate_window_s: float = 60.0,
        depth_levels: int = 50,
    ) -> None:
        self.config = config or SimConfig()
        self.faults = BrokerFaults()
        self._market = market
        self._key = self.config.key_id.get_secret_value().encode()
        self._secret = self.config.secret_key.get_secret_value().encode()
        self._rate_limit = self.config.rate_limit_per_min
        self._rate_window_s = rate_window_s
        self._window_start = time.monotonic()
        self._window_count = 0
        self._depth_levels = depth_levels
        self._cash = Decimal(repr(self.config.starting_cash))
        self._starting_cash = self._cash
        self._account_id = str(uuid.uuid5(_ASSET_NS, f"account:{self.config.seed}"))
        self._created_ns = _now_ns()
        self._orders: dict[str, _Order] = {}
        self._by_client_id: dict[str, _Order] = {}
        self._open_by_symbol: dict[str, list[_Order]] = {}
        self._positions: dict[str, _Position] = {}
        self._consumed: dict[str, dict[tuple[int, Decimal], Decimal]] = {}
        # the book as decimals, converted once per change of a symbol's book: usable depth levels per
        # (symbol, side) and mid-price marks; the source reports every change (``_on_book_change``)
        self._levels: dict[tuple[str, int], list[tuple[Decimal, Decimal]]] = {}
        self._marks: dict[str, Decimal] = {}
        self._book_changes = 0  # bumped on every report: a conversion that raced one is not kept
        self._reserved_by_symbol: dict[str, Decimal] = {}  # see _reserved; dropped on any change to the symbol
        self._fills = 0  # bumped on every fill: with _book_changes, what the market values depend on
        self._values_state: tuple[int, int] | None = None
        self._values: tuple[Decimal, Decimal] = (_ZERO, _ZERO)
        self._listed: set[str] = set()  # symbols the market has had a book for (no source removes one)
        self._streams: set[_StreamClient] = set()
        self._listeners: list[_StreamClient] = []
        self._held_events: list[_Event] | None = None  # while a request is routed: sent after its response
        self._pending_symbols: set[str] = set()
        self._flush_scheduled = False
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # requests held back by the delay fault
        self.base_url = ""
        self.stats = {"requests": 0, "rate_limited": 0, "orders": 0, "fills": 0, "events": 0}
        market.add_listener(self._on_book_change)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on ``config.host:config.broker_port`` (0: any free port); returns the base URL."""
        if self._server is not None:
            return self.base_url
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._server = await self._loop.create_server(
            functools.partial(_Connection, self), self.config.host, self.config.broker_port
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        log.info("paper broker listening on %s (trade_updates at %s)", self.base_url, self.stream_url)
        return self.base_url

    @property
    def stream_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/stream"

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()
        self._loop = None

    async def __aenter__(self) -> PaperBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- introspection and control (for tests and the sim command) -------------------------------

    def orders(self) -> list[dict[str, Any]]:
        """Every order ever accepted, oldest first, as Alpaca order objects."""
        return [o.to_json() for o in self._orders.values()]

    def positions(self) -> list[dict[str, Any]]:
        return [self._position_json(p) for p in self._positions.values() if p.qty != 0]

    def account(self) -> dict[str, Any]:
        return self._account_json()

    def expire_day_orders(self) -> int:
        """End the trading day: every open day/opg/cls order expires. Returns how many did."""
        expired = 0
        for order in list(self._orders.values()):
            if order.open and order.time_in_force in ("day", "opg", "cls"):
                now = _now_ns()
                order.status, order.expired_ns, order.updated_ns = "expired", now, now
                self._close(order)
                self._emit("expired", order, now)
                expired += 1
        return expired

    async def drop_streams(self) -> int:
        """Cut every trade_updates connection abruptly (the client must reconnect). Returns how many."""
        clients = list(self._streams)
        for client in clients:
            client.transport.abort()
        self._streams.clear()
        self._listeners.clear()
        await asyncio.sleep(0)
        return len(clients)

    # --- HTTP/1.1 --------------------------------------------------------------------------------

    def _admit(self, headers: dict[str, str]) -> tuple[_Reply | None, list[tuple[str, str]], float]:
        """Authentication, the rate limit and the request faults, in that order: a reply that ends the
        request here (else None), the rate limit headers, and how long to hold the request first."""
        self.stats["requests"] += 1
        key = headers.get("apca-api-key-id")
        secret = headers.get("apca-api-secret-key")
        if not key or not secret:
            return (401, _error_body(40110000, "request is not authorized"), [], _NO_EVENTS), [], 0.0
        if not (hmac.compare_digest(key.encode(), self._key) & hmac.compare_digest(secret.encode(), self._secret)):
            return (403, _error_body(40310000, "forbidden"), [], _NO_EVENTS), [], 0.0
        rate_headers, over = self._count_request()
        faults = self.faults
        if over:
            self.stats["rate_limited"] += 1
            retry_after = max(1, math.ceil(self._window_start + self._rate_window_s - time.monotonic()))
            throttled = rate_headers + [("Retry-After", str(retry_after))]
            return (429, _error_body(42910000, "rate limit exceeded"), throttled, _NO_EVENTS), rate_headers, 0.0
        if faults.throttle_next > 0:
            faults.throttle_next -= 1
            self.stats["rate_limited"] += 1
            throttled = rate_headers + [("Retry-After", str(faults.retry_after_s))]
            return (429, _error_body(42910000, "rate limit exceeded"), throttled, _NO_EVENTS), rate_headers, 0.0
        if faults.error_next > 0:
            faults.error_next -= 1
            return (faults.error_status, _error_body(50010000, "internal server error"), rate_headers, _NO_EVENTS), rate_headers, 0.0
        if faults.delay_s > 0 and (faults.delay_requests is None or faults.delay_requests > 0):
            if faults.delay_requests is not None:
                faults.delay_requests -= 1
            return None, rate_headers, faults.delay_s
        return None, rate_headers, 0.0

    def _handle(self, method: str, target: str, body: bytes, rate_headers: list[tuple[str, str]]) -> _Reply:
        """Status, body and extra headers of the response to an admitted request, and the trade_updates
        events to send after it. Raises ``_Drop`` when the drop fault takes the response."""
        path, query = _split_target(target)
        # events raised while routing wait for the response (nothing else runs meanwhile: no await)
        self._held_events = events = []
        try:
            status, payload = self._route(method, path, query, body)
        except _ApiError as exc:
            return exc.status, _error_body(exc.code, exc.message), rate_headers, events
        finally:
            self._held_events = None
        faults = self.faults
        if status == 200 and method == "POST" and faults.drop_after_accept > 0:
            faults.drop_after_accept -= 1
            raise _Drop(events)
        return status, payload, rate_headers, events

    def _count_request(self) -> tuple[list[tuple[str, str]], bool]:
        now = time.monotonic()
        if now - self._window_start >= self._rate_window_s:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        remaining = max(0, self._rate_limit - self._window_count)
        reset_epoch = math.ceil(time.time() + (self._window_start + self._rate_window_s - now))
        headers = [
            ("X-Ratelimit-Limit", str(self._rate_limit)),
            ("X-Ratelimit-Remaining", str(remaining)),
            ("X-Ratelimit-Reset", str(reset_epoch)),
        ]
        return headers, self._window_count > self._rate_limit

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, bytes | None]:
        if path == "/v2/orders":
            if method == "POST":
                return 200, self._submit(body).wire()
            if method == "GET":
                return 200, _encode([_Raw(o.wire()) for o in self._list_orders(query)])
            if method == "DELETE":
                return 207, _encode(self._cancel_all())
            raise _ApiError(405, 40510000, "method not allowed")
        if path == "/v2/orders:by_client_order_id":
            if method != "GET":
                raise _ApiError(405, 40510000, "method not allowed")
            coid = (query.get("client_order_id") or [""])[0]
            if not coid:
                raise _invalid("client_order_id is required")
            order = self._by_client_id.get(coid)
            if order is None:
                raise _ApiError(404, 40410000, "order not found")
            return 200, order.wire()
        if path.startswith("/v2/orders/"):
            order_id = path[len("/v2/orders/"):]
            if method == "GET":
                return 200, self._find_order(order_id).wire()
            if method == "DELETE":
                self._cancel(self._find_order(order_id))
                return 204, None
            raise _ApiError(405, 40510000, "method not allowed")
        if path == "/v2/positions" and method == "GET":
            return 200, _encode(self.positions())
        if path.startswith("/v2/positions/") and method == "GET":
            wanted = path[len("/v2/positions/"):].replace("/", "")
            for position in self._positions.values():
                if position.qty != 0 and position.symbol.replace("/", "") == wanted:
                    return 200, _encode(self._position_json(position))
            raise _ApiError(404, 40410000, "position does not exist")
        if path == "/v2/account" and method == "GET":
            return 200, _encode(self._account_json())
        raise _ApiError(404, 40410000, "endpoint not found")

    # --- orders ----------------------------------------------------------------------------------

    def _find_order(self, order_id: str) -> _Order:
        try:
            uuid.UUID(order_id)
        except ValueError:
            raise _invalid("order_id is not a valid UUID") from None
        order = self._orders.get(order_id)
        if order is None:
            raise _ApiError(404, 40410000, "order not found")
        return order

    def _submit(self, body: bytes) -> _Order:
        try:
            fields = _order_fields(body) if body else None
        except (ValueError, UnicodeDecodeError):
            raise _ApiError(422, 40010000, "request body format is invalid") from None
        if not isinstance(fields, dict):
            raise _ApiError(422, 40010000, "request body format is invalid")
        order = self._validate(fields)
        self._check_buying_power(order)
        self._orders[order.id] = order
        self._by_client_id[order.client_order_id] = order
        self._open_by_symbol.setdefault(order.symbol, []).append(order)
        self._reserved_by_symbol.pop(order.symbol, None)
        self.stats["orders"] += 1
        self._emit("new", order, order.created_ns)
        self._match(order)
        return order

    def _validate(self, f: dict[str, Any]) -> _Order:
        symbol = f.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise _invalid("symbol is required")
        order_class = f.get("order_class") or "simple"
        if order_class != "simple":
            raise _invalid(f"order_class {order_class} is not supported by the paper broker")
        side = f.get("side")
        if side not in ("buy", "sell"):
            raise _invalid("side is required" if side is None else f"invalid side: {side}")
        order_type = f.get("type", f.get("order_type"))
        if order_type not in _ORDER_TYPES:
            raise _invalid("type is required" if order_type is None else f"invalid order type: {order_type}")
        tif = f.get("time_in_force")
        if tif not in _TIME_IN_FORCE:
            raise _invalid("time_in_force is required" if tif is None else f"invalid time_in_force: {tif}")
        if f.get("notional") is not None:
            raise _invalid("notional orders are not supported by the paper broker")
        qty = _positive_decimal(f.get("qty"), "qty", required=True)
        limit_price = _positive_decimal(f.get("limit_price"), "limit_price", required=order_type in ("limit", "stop_limit"))
        stop_price = _positive_decimal(f.get("stop_price"), "stop_price", required=order_type in ("stop", "stop_limit"))
        if order_type in ("market", "stop") and limit_price is not None:
            raise _invalid(f"limit_price is not allowed for {order_type} orders")
        if order_type in ("market", "limit") and stop_price is not None:
            raise _invalid(f"stop_price is not allowed for {order_type} orders")
        extended = f.get("extended_hours") or False
        if not isinstance(extended, bool):
            raise _invalid("extended_hours must be a boolean")
        if extended and (order_type != "limit" or tif != "day"):
            raise _invalid("extended hours order must be DAY limit orders")
        crypto = "/" in symbol
        if symbol not in self._listed:
            if self._market.top_of_book(symbol) is None:
                raise _invalid(f'asset "{symbol}" not found')
            self._listed.add(symbol)
        if not crypto:
            for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
                if price is not None:
                    step = _CENT if price >= 1 else _SUB_PENNY
                    if price % step:
                        raise _invalid(
                            f"invalid {name} {_fmt(price)}. sub-penny increment does not fulfill minimum pricing criteria"
                        )
        coid = f.get("client_order_id")
        if coid is None:
            coid = _uuid4()
        elif not isinstance(coid, str) or not 0 < len(coid) <= 128:
            raise _invalid("client_order_id must be a string of 1 to 128 characters")
        if coid in self._by_client_id:
            raise _invalid("client_order_id must be unique")
        now = _now_ns()
        return _Order(
            id=_uuid4(),
            client_order_id=coid,
            symbol=symbol,
            asset_id=_asset_id(symbol),
            crypto=crypto,
            side=side,
            type=order_type,
            time_in_force=tif,
            qty=qty,  # type: ignore[arg-type]
            limit_price=limit_price,
            stop_price=stop_price,
            extended_hours=extended,
            created_ns=now,
            updated_ns=now,
        )

    def _list_orders(self, query: dict[str, list[str]]) -> list[_Order]:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        status = one("status") or "open"
        if status not in ("open", "closed", "all"):
            raise _invalid(f"invalid status: {status}")
        try:
            limit = int(one("limit") or 50)
        except ValueError:
            raise _invalid("limit must be an integer") from None
        if not 0 < limit <= 500:
            raise _invalid("limit must be between 1 and 500")
        direction = one("direction") or "desc"
        if direction not in ("asc", "desc"):
            raise _invalid(f"invalid direction: {direction}")
        after, until = _parse_time(one("after"), "after"), _parse_time(one("until"), "until")
        symbols = {s for s in (one("symbols") or "").split(",") if s}
        side = one("side")
        selected = []
        for order in self._orders.values():  # insertion order is submission order
            if status == "open" and not order.open or status == "closed" and order.open:
                continue
            if after is not None and order.created_ns <= after or until is not None and order.created_ns >= until:
                continue
            if symbols and order.symbol not in symbols or side and order.side != side:
                continue
            selected.append(order)
        if direction == "desc":
            selected.reverse()
        return selected[:limit]

    def _cancel(self, order: _Order) -> None:
        if not order.open:
            raise _ApiError(422, 42210000, f'order is already in "{order.status}" state')
        now = _now_ns()
        order.status, order.canceled_ns, order.updated_ns = "canceled", now, now
        self._close(order)
        self._emit("canceled", order, now)

    def _cancel_all(self) -> list[dict[str, Any]]:
        results = []
        for order in [o for o in self._orders.values() if o.open]:
            self._cancel(order)
            results.append({"id": order.id, "status": 200, "body": _Raw(order.wire())})
        return results

    def _close(self, order: _Order) -> None:
        self._reserved_by_symbol.pop(order.symbol, None)
        book = self._open_by_symbol.get(order.symbol)
        if book is not None and order in book:
            book.remove(order)

    # --- buying power ----------------------------------------------------------------------------

    def _exposure_increase(self, symbol: str, buy: bool, qty: Decimal) -> Decimal:
        """How much of ``qty`` opens or grows a position (the part that needs buying power)."""
        position = self._positions.get(symbol)
        held = position.qty if position is not None else _ZERO
        offset = max(_ZERO, -held) if buy else max(_ZERO, held)
        return max(_ZERO, qty - offset)

    def _price_estimate(self, order: _Order, qty: Decimal) -> Decimal:
        if order.limit_price is not None:
            return order.limit_price
        fills = self._take(order, None, qty, consume=False)
        filled = sum((q for _, q in fills), _ZERO)
        if filled:
            return sum((p * q for p, q in fills), _ZERO) / filled
        if order.stop_price is not None:
            return order.stop_price
        top = self._market.top_of_book(order.symbol)
        if top is not None:
            for px in ((top[2], top[0]) if order.buy else (top[0], top[2])):
                if math.isfinite(px) and px > 0:
                    return _dec(px)
        return _ZERO

    def _reserved(self) -> Decimal:
        """What open orders could still add to positions, at their price estimates.

        Kept per symbol until an order, fill or book change of that symbol, and summed only while no
        addition rounds: the terms are never negative, so no partial sum needs more digits than the
        total, and any grouping then gives what adding them one by one in order gives.
        """
        context = decimal.getcontext().copy()
        context.traps[decimal.Rounded] = True
        by_symbol = self._reserved_by_symbol
        reserved = _ZERO
        try:
            for symbol, orders in self._open_by_symbol.items():
                if not orders:  # adds nothing (a symbol keeps its place in the order once it has had one)
                    continue
                subtotal = by_symbol.get(symbol)
                if subtotal is None:
                    seen = self._book_changes
                    subtotal = _ZERO
                    for order in orders:
                        need = self._exposure_increase(symbol, order.buy, order.remaining)
                        if need:
                            subtotal = context.add(subtotal, need * self._price_estimate(order, need))
                    if self._book_changes == seen:
                        by_symbol[symbol] = subtotal
                reserved = context.add(reserved, subtotal)
        except decimal.Rounded:
            return self._reserved_one_by_one()
        return reserved

    def _reserved_one_by_one(self) -> Decimal:
        """``_reserved`` order by order, rounding as it goes (when the exact sum has too many digits)."""
        reserved = _ZERO
        for orders in self._open_by_symbol.values():
            for order in orders:
                need = self._exposure_increase(order.symbol, order.buy, order.remaining)
                if need:
                    reserved += need * self._price_estimate(order, need)
        return reserved

    def _buying_power(self, reserved: Decimal | None = None) -> Decimal:
        long_mv, short_mv = self._market_values()
        equity = self._cash + long_mv + short_mv
        used = long_mv - short_mv + (self._reserved() if reserved is None else reserved)
        return max(_ZERO, equity - used)

    def _check_buying_power(self, order: _Order) -> None:
        need = self._exposure_increase(order.symbol, order.buy, order.qty)
        if not need:
            return
        cost = need * self._price_estimate(order, need)
        if cost > self._buying_power():
            raise _ApiError(403, 40310000, "insufficient buying power")

    # --- matching --------------------------------------------------------------------------------

    def _stop_reached(self, order: _Order) -> bool:
        top = self._market.top_of_book(order.symbol)
        if top is None:
            return False
        bid, _, ask, _ = top
        if order.buy:
            return math.isfinite(ask) and _dec(ask) >= order.stop_price  # type: ignore[operator]
        return math.isfinite(bid) and _dec(bid) <= order.stop_price  # type: ignore[operator]

    def _book_levels(self, symbol: str, side: int) -> list[tuple[Decimal, Decimal]]:
        """One side of ``symbol``'s book as usable (price, size) decimal levels, best first."""
        key = (symbol, side)
        levels = self._levels.get(key)
        if levels is None:
            seen = self._book_changes
            levels = [
                (_dec(px), _dec(size))
                for px, size in self._market.depth(symbol, side, self._depth_levels)
                if math.isfinite(px) and px > 0 and math.isfinite(size) and size > 0
            ]
            if self._book_changes == seen:
                self._levels[key] = levels
        return levels

    def _take(self, order: _Order, limit: Decimal | None, want: Decimal, *, consume: bool) -> list[tuple[Decimal, Decimal]]:
        """Levels (price, qty) the order can take from the opposite side, best first, up to ``want``."""
        book_side = SIDE_ASK if order.buy else SIDE_BID
        consumed = self._consumed.setdefault(order.symbol, {})
        out: list[tuple[Decimal, Decimal]] = []
        for price, size in self._book_levels(order.symbol, book_side):
            if want <= 0:
                break
            if limit is not None and (price > limit if order.buy else price < limit):
                break
            key = (book_side, price)
            available = size - consumed.get(key, _ZERO)
            if available <= 0:
                continue
            qty = min(available, want)
            if consume:
                consumed[key] = consumed.get(key, _ZERO) + qty
            out.append((price, qty))
            want -= qty
        return out

    def _match(self, order: _Order) -> None:
        """Fill what the book allows now; cancel the rest of ioc/fok orders."""
        if not order.open:
            return
        if order.type in ("stop", "stop_limit") and not order.triggered:
            if not self._stop_reached(order):
                order.resting = True
                return
            order.triggered = True
            order.resting = False  # a triggered stop takes liquidity like a new order
        limit = order.limit_price if order.type in ("limit", "stop_limit") else None
        if order.time_in_force == "fok":
            available = sum((q for _, q in self._take(order, limit, order.remaining, consume=False)), _ZERO)
            if available < order.remaining:
                self._cancel(order)
                return
        passive_price = limit if order.resting else None
        for price, qty in self._take(order, limit, order.remaining, consume=True):
            self._execute(order, qty, passive_price if passive_price is not None else price)
        if order.open and order.remaining > 0 and order.time_in_force in ("ioc", "fok"):
            self._cancel(order)
        order.resting = True

    def _execute(self, order: _Order, qty: Decimal, price: Decimal) -> None:
        now = _now_ns()
        self._reserved_by_symbol.pop(order.symbol, None)  # the order, the position and the book's liquidity changed
        order.filled_qty += qty
        order.filled_notional += qty * price
        order.updated_ns = now
        if order.remaining <= 0:
            order.status, order.filled_ns = "filled", now
            self._close(order)
        else:
            order.status = "partially_filled"
        position = self._positions.get(order.symbol)
        if position is None:
            position = self._positions[order.symbol] = _Position(order.symbol, order.crypto)
        signed = qty if order.buy else -qty
        held = position.qty
        new = held + signed
        if held == 0 or (held > 0) == (signed > 0):
            position.avg_entry_price = (abs(held) * position.avg_entry_price + qty * price) / abs(new)
        elif new == 0:
            position.avg_entry_price = _ZERO
        elif (new > 0) != (held > 0):  # flipped through zero: the rest opens at this price
            position.avg_entry_price = price
        position.qty = new
        position.last_fill_price = price
        self._cash -= signed * price
        self._fills += 1
        self.stats["fills"] += 1
        self._emit(
            "fill" if order.status == "filled" else "partial_fill",
            order,
            now,
            price=price,
            qty=qty,
            position_qty=new,
        )

    def _on_book_change(self, symbols: list[str]) -> None:
        """Listener for the liquidity source: may be called from any thread.

        The decimal book, marks and reserved subtotals are dropped at once, in the caller's thread
        (each a single dict operation), so no request sees them past the change; consumed liquidity
        and matching wait for the loop.
        """
        self._book_changes += 1
        for symbol in symbols:
            self._marks.pop(symbol, None)
            self._reserved_by_symbol.pop(symbol, None)
            self._levels.pop((symbol, SIDE_BID), None)
            self._levels.pop((symbol, SIDE_ASK), None)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._on_book_change, list(symbols))
            return
        for symbol in symbols:
            self._consumed.pop(symbol, None)  # the book was refreshed: its liquidity is new
            if self._open_by_symbol.get(symbol):
                self._pending_symbols.add(symbol)
        if self._pending_symbols and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._match_pending)

    def _match_pending(self) -> None:
        self._flush_scheduled = False
        pending, self._pending_symbols = self._pending_symbols, set()
        for symbol in pending:
            for order in list(self._open_by_symbol.get(symbol, ())):
                try:
                    self._match(order)
                except Exception:  # one bad order must not stop the others from matching
                    log.exception("paper broker: matching %s failed", order.id)

    # --- positions and account -------------------------------------------------------------------

    def _mark(self, position: _Position) -> Decimal:
        """The mid price (converted once per book change), else the last fill's price."""
        mark = self._marks.get(position.symbol)
        if mark is not None:
            return mark
        seen = self._book_changes
        top = self._market.top_of_book(position.symbol)
        if top is not None:
            bid, _, ask, _ = top
            if math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask > 0:
                mark = _dec(0.5 * (bid + ask))
                if self._book_changes == seen:
                    self._marks[position.symbol] = mark
                return mark
        return position.last_fill_price

    def _market_values(self) -> tuple[Decimal, Decimal]:
        """Long and short market value, kept until the next fill or book change (every order's
        buying power check needs them, and they sum over every position)."""
        state = (self._book_changes, self._fills)
        if state == self._values_state:
            return self._values
        long_mv = short_mv = _ZERO
        for position in self._positions.values():
            if position.qty > 0:
                long_mv += position.qty * self._mark(position)
            elif position.qty < 0:
                short_mv += position.qty * self._mark(position)
        if self._book_changes == state[0]:  # no book change raced the sum
            self._values_state, self._values = state, (long_mv, short_mv)
        return long_mv, short_mv

    def _position_json(self, position: _Position) -> dict[str, Any]:
        mark = self._mark(position)
        market_value = position.qty * mark
        cost_basis = position.qty * position.avg_entry_price
        unrealized = market_value - cost_basis
        plpc = unrealized / abs(cost_basis) if cost_basis else _ZERO
        symbol = position.symbol.replace("/", "") if position.crypto else position.symbol
        return {
            "asset_id": _asset_id(position.symbol),
            "symbol": symbol,
            "exchange": "CRYPTO" if position.crypto else "NASDAQ",
            "asset_class": "crypto" if position.crypto else "us_equity",
            "asset_marginable": not position.crypto,
            "qty": _fmt(position.qty),
            "qty_available": _fmt(position.qty),
            "avg_entry_price": _fmt(position.avg_entry_price),
            "side": "long" if position.qty > 0 else "short",
            "market_value": _fmt(market_value),
            "cost_basis": _fmt(cost_basis),
            "unrealized_pl": _fmt(unrealized),
            "unrealized_plpc": _fmt(plpc),
            "unrealized_intraday_pl": _fmt(unrealized),
            "unrealized_intraday_plpc": _fmt(plpc),
            "current_price": _fmt(mark),
            "lastday_price": _fmt(mark),
            "change_today": "0",
        }

    def _account_json(self) -> dict[str, Any]:
        long_mv, short_mv = self._market_values()
        equity = self._cash + long_mv + short_mv
        buying_power = self._buying_power()
        return {
            "id": self._account_id,
            "account_number": "PA" + self._account_id.replace("-", "")[:10].upper(),
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": _fmt(buying_power),
            "regt_buying_power": _fmt(buying_power),
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": _fmt(buying_power),
            "options_buying_power": "0",
            "cash": _fmt(self._cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "pending_transfer_out": "0",
            "portfolio_value": _fmt(equity),
            "equity": _fmt(equity),
            "last_equity": _fmt(self._starting_cash),
            "long_market_value": _fmt(long_mv),
            "short_market_value": _fmt(short_mv),
            "initial_margin": _fmt(long_mv - short_mv),
            "maintenance_margin": _fmt(long_mv - short_mv),
            "last_maintenance_margin": "0",
            "sma": "0",
            "multiplier": "1",
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "trade_suspended_by_user": False,
            "shorting_enabled": True,
            "daytrade_count": 0,
            "created_at": _iso(self._created_ns),
        }

    # --- trade_updates stream --------------------------------------------------------------------

    def _emit(
        self,
        event: str,
        order: _Order,
        ts_ns: int,
        *,
        price: Decimal | None = None,
        qty: Decimal | None = None,
        position_qty: Decimal | None = None,
    ) -> None:
        """Record an event (a fill's has a price); sent at once, or after the response being routed."""
        if not self._listeners:
            return
        # each event carries the order as it was when it happened: its state now, encoded when sent
        spec = (event, order, ts_ns, order.state(), price, qty, position_qty)
        if self._held_events is not None:
            self._held_events.append(spec)
        else:
            self._send_events((spec,))

    def _send_events(self, events: Sequence[_Event]) -> None:
        """Push trade_updates events to every listening stream, in order (one write per stream)."""
        if not events:
            return
        payloads = [_encode({"stream": "trade_updates", "data": _event_json(*spec)}) for spec in events]
        if self.faults.duplicate_events:
            payloads = [payload for payload in payloads for _ in range(2)]
        frames = _binary_frames(payloads)  # once for every listener
        for client in list(self._listeners):
            client.send_framed(frames, payloads)
        self.stats["events"] += len(events)

    def _open_stream(self, transport: asyncio.Transport, upgrade: _Request) -> _StreamClient | None:
        """Hand the connection to websockets: it re-reads the upgrade request's head (it validates the
        handshake itself) and answers it. Returns the stream once open, else None: close the connection."""
        protocol = ServerProtocol(max_size=1 << 20, logger=_wire_log)
        protocol.receive_data(upgrade.head.lstrip(b"\r\n"))  # llhttp skips blank lines before a request; websockets does not
        events = protocol.events_received()
        if not events:
            return None
        request = events[0]
        if urlsplit(upgrade.target).path != "/stream":
            response = protocol.reject(404, "not found\n")
        elif self.faults.refuse_streams:
            response = protocol.reject(503, "stream unavailable\n")
        else:
            response = protocol.accept(request)  # type: ignore[arg-type]
        protocol.send_response(response)
        client = _StreamClient(protocol, transport)
        client.flush()
        if response.status_code != 101:
            return None
        self._streams.add(client)
        return client

    def _on_stream_data(self, client: _StreamClient, data: bytes) -> bool:
        """Bytes from a trade_updates client. Returns False once the stream is over: close the connection."""
        protocol = client.protocol
        protocol.receive_data(data)
        for frame in protocol.events_received():
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):  # type: ignore[union-attr]
                client.fragments.append(bytes(frame.data))  # type: ignore[union-attr]
                if frame.fin:  # type: ignore[union-attr]
                    message, client.fragments = b"".join(client.fragments), []
                    self._on_stream_message(client, message)
        client.flush()
        return protocol.state is not State.CLOSED and not client.transport.is_closing()

    def _close_stream(self, client: _StreamClient) -> None:
        self._streams.discard(client)
        if client in self._listeners:
            self._listeners.remove(client)

    def _on_stream_message(self, client: _StreamClient, message: bytes) -> None:
        try:
            msg = json.loads(message)
            action, data = msg.get("action"), msg.get("data") or {}
        except (ValueError, AttributeError):
            client.send(_encode({"stream": "listening", "data": {"error": "invalid message"}}))
            return
        if action == "authenticate":
            key, secret = str(data.get("key_id", "")).encode(), str(data.get("secret_key", "")).encode()
            ok = hmac.compare_digest(key, self._key) & hmac.compare_digest(secret, self._secret)
            client.authenticated = bool(ok)
            status = "authorized" if ok else "unauthorized"
            client.send(_encode({"stream": "authorization", "data": {"action": "authenticate", "status": status}}))
            if not ok:
                client.protocol.send_close(1008, "unauthorized")
                client.flush()
            return
        if action == "listen":
            if not client.authenticated:
                client.send(_encode({"stream": "authorization", "data": {"action": "listen", "status": "unauthorized"}}))
                return
            streams = [s for s in (data.get("streams") or []) if s == "trade_updates"]
            client.listening = bool(streams)
            if client.listening and client not in self._listeners:
                self._listeners.append(client)
            elif not client.listening and client in self._listeners:
                self._listeners.remove(client)
            client.send(_encode({"stream": "listening", "data": {"streams": streams}}))
            return
        client.send(_encode({"stream": "listening", "data": {"error": f"unknown action: {action}"}}))


# --- HTTP helpers ------------------------------------------------------------------------------------


_TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_REQUEST_START = _TOKEN_BYTES | frozenset(b"\r\n")  # a request line starts with a method (blank lines before it are skipped)


def _partial_blank_line(data: bytearray) -> int:
    """How many bytes at the end of ``data`` could begin a CRLF CRLF that the next bytes complete."""
    for size in (3, 2, 1):
        if data.endswith(b"\r\n\r"[:size]):
            return size
    return 0


class _BadRequest(Exception):
    """A request refused before it is handled: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str] = field(repr=False)  # lower-cased names; they hold the credentials: never in a repr
    head: bytes = field(repr=False)  # as received: the WebSocket handshake re-reads it
    keep_alive: bool


class _RequestReader:
    """Requests off one connection, one at a time: llhttp (``httptools``) parses them, this class paces it.

    llhttp is handed bytes only up to where the current request can end: a head once it is whole, so
    its size is checked exactly first; a Content-Length body up to its length; a chunked body up to
    each CRLF CRLF, the only place one can end. Bytes of pipelined requests behind it wait their turn.
    """

    __slots__ = ("_buffer", "_scanned", "_parser", "_fresh", "_target", "_headers", "_hosts", "_keep_alive",
                 "_head_done", "_done", "_chunked", "_remaining", "_body", "_body_size")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for the end of a head
        self._parser: httptools.HttpRequestParser | None = None
        self._start()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def prepare(self) -> None:
        """Make the next request's parser now, between requests (building one is not free, and the
        next request's response should not wait for it)."""
        if not self._fresh:
            self._start()

    def take_buffer(self) -> bytes:
        """Whatever arrived past the current request's head (after an upgrade: the new protocol's bytes)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def next_head(self) -> _Request | None:
        """The next request, head only (``body()`` reads its body), once its head is all here; else None.

        Raises ``_BadRequest`` for a head that is malformed or over ``_MAX_HEADER_BYTES``.
        """
        buffer = self._buffer
        while True:
            if buffer and buffer[0] not in _REQUEST_START:  # refused at once, as h11 did: no request line starts so
                raise _BadRequest(400, "malformed request")
            end = head_end(buffer, max(0, self._scanned - 2))
            if end < 0:
                if len(buffer) > _MAX_HEADER_BYTES:
                    raise _BadRequest(413, "request header too large")
                self._scanned = len(buffer)
                return None
            if end > _MAX_HEADER_BYTES:
                raise _BadRequest(413, "request header too large")
            head = crlf(bytes(buffer[:end]))
            del buffer[:end]
            self._scanned = 0
            self.prepare()
            self._fresh = False
            try:
                self._parser.feed_data(head)  # type: ignore[union-attr]
            except httptools.HttpParserUpgrade:
                pass  # "Connection: upgrade": the head is whole, and its headers say whether to a WebSocket
            except httptools.HttpParserError:
                raise _BadRequest(400, "malformed request") from None
            if self._head_done:
                break
            if head.strip(b"\r\n"):
                raise _BadRequest(400, "malformed request")  # a head llhttp neither refused nor finished
            # only blank lines: llhttp skipped them, as it does before a request line
        parser = self._parser
        if self._hosts != 1 and (self._hosts or parser.get_http_version() == "1.1"):  # type: ignore[union-attr]
            raise _BadRequest(400, "malformed request")  # as h11: one Host header, required in HTTP/1.1
        headers = self._headers
        if not self._done:  # a body follows
            length = headers.get("content-length")  # llhttp has checked it is one number
            if length is not None and int(length) > _MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
            self._chunked = length is None
            self._remaining = int(length) if length is not None else 0
        method = parser.get_method().decode("latin-1")  # type: ignore[union-attr]
        return _Request(method, self._target.decode("latin-1"), headers, head, self._keep_alive)

    def body(self) -> bytes | None:
        """The current request's body once all of it is here, else None. Raises ``_BadRequest``."""
        buffer = self._buffer
        while not self._done:
            if self._chunked:
                end = buffer.find(b"\r\n\r\n")
                size = end + 4 if end >= 0 else len(buffer) - _partial_blank_line(buffer)
            else:
                size = min(self._remaining, len(buffer))
                self._remaining -= size
            if not size:
                return None
            piece = bytes(buffer[:size])
            del buffer[:size]
            try:
                self._parser.feed_data(piece)  # type: ignore[union-attr]
            except httptools.HttpParserError:
                raise _BadRequest(400, "malformed chunked body") from None
            if self._body_size > _MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
        body = self._body
        return body[0] if len(body) == 1 else b"".join(body)

    def _start(self) -> None:
        """A fresh parser and request state (a parser per request: nothing carries over, not even an upgrade)."""
        self._parser = httptools.HttpRequestParser(self)
        self._fresh = True  # fed nothing yet
        self._target = b""
        self._headers: dict[str, str] = {}
        self._hosts = 0
        self._keep_alive = False
        self._head_done = self._done = self._chunked = False
        self._remaining = 0
        self._body: list[bytes] = []
        self._body_size = 0

    # --- llhttp's callbacks ----------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:  # a chunked body's trailer fields: not headers (h11 kept them apart too)
            return
        key = name.decode("latin-1").lower()
        if key == "host":
            self._hosts += 1
        self._headers[key] = value.decode("latin-1").rstrip(" \t")

    def on_headers_complete(self) -> None:
        self._head_done = True
        parser = self._parser
        # llhttp says whether the request allows another after it; like h11, only HTTP/1.1 is kept alive
        self._keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"  # type: ignore[union-attr]

    def on_body(self, data: bytes) -> None:
        self._body_size += len(data)
        self._body.append(data)

    def on_message_complete(self) -> None:
        self._done = True


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests, or the trade_updates WebSocket once upgraded.

    A request is parsed and answered inside ``data_received``, in the loop turn its last bytes
    arrive: no reader task to wake first (that wake-up was a loop turn behind a busy market data
    exchange). Only a request held back by the delay fault waits in a task; requests behind it on
    the connection wait for it, so responses keep their order.
    """

    def __init__(self, broker: PaperBroker) -> None:
        self._broker = broker
        self._incoming = _RequestReader()
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self._request: _Request | None = None  # head read, body not yet all here
        self._stream: _StreamClient | None = None
        self._held = False  # a delayed request is in a task
        self._paused = False  # the client is not reading its responses (write buffer over its limit)
        self._eof = False

    def close(self) -> None:
        self._transport.close()
        if self._stream is not None:
            self._broker._close_stream(self._stream)

    # --- asyncio's callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._transport.set_write_buffer_limits(high=_WRITE_BUFFER_HIGH)
        self._broker._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._stream is None:
            self._incoming.feed(data)
            self._serve()
            return
        try:
            alive = self._broker._on_stream_data(self._stream, data)
        except Exception:  # a bug here must not kill the server; the client sees a dropped connection
            log.exception("paper broker: stream handler failed")
            alive = False
        if not alive:
            self.close()

    def eof_received(self) -> bool:
        if self._stream is not None:
            self._stream.protocol.receive_eof()
            return False
        self._eof = True  # whole requests already here are still answered (and a half-read one never is)
        return self._held or self._paused

    def connection_lost(self, exc: Exception | None) -> None:
        self._broker._connections.discard(self)
        if self._stream is not None:
            self._broker._close_stream(self._stream)

    def pause_writing(self) -> None:
        if self._stream is None:
            self._paused = True
            self._update_reading()

    def resume_writing(self) -> None:
        if self._paused:
            self._paused = False
            self._update_reading()
            self._serve()

    # --- requests --------------------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer the whole requests received so far, in order, until something holds the connection up."""
        transport = self._transport
        incoming = self._incoming
        try:
            while not (self._held or self._paused or transport.is_closing()):
                request = self._request
                if request is None:
                    request = incoming.next_head()
                    if request is None:
                        break
                    if request.headers.get("upgrade", "").lower() == "websocket":
                        self._upgrade(request, incoming.take_buffer())
                        return
                    self._request = request
                body = incoming.body()
                if body is None:
                    break
                self._request = None
                self._answer(request, body)
                incoming.prepare()
        except _BadRequest as exc:
            transport.write(_http_response(exc.status, _error_body(40010000, exc.message), close=True))
            transport.close()
            return
        except Exception:  # a bug here must not kill the server; the client sees a dropped connection
            log.exception("paper broker: connection handler failed")
            transport.close()
            return
        if self._eof and not (self._held or self._paused):
            transport.close()

    def _answer(self, request: _Request, body: bytes) -> None:
        broker = self._broker
        reply, rate_headers, delay_s = broker._admit(request.headers)
        if reply is None:
            if delay_s > 0:
                self._held = True
                self._update_reading()
                task = asyncio.get_running_loop().create_task(self._answer_later(request, body, rate_headers, delay_s))
                broker._tasks.add(task)
                task.add_done_callback(broker._tasks.discard)
                return
            try:
                reply = broker._handle(request.method, request.target, body, rate_headers)
            except _Drop as drop:
                self._drop(drop)
                return
        self._reply(request, reply)

    async def _answer_later(self, request: _Request, body: bytes, rate_headers: list[tuple[str, str]], delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            reply = self._broker._handle(request.method, request.target, body, rate_headers)
        except _Drop as drop:
            self._drop(drop)
            return
        except Exception:
            log.exception("paper broker: connection handler failed")
            self._transport.close()
            return
        self._reply(request, reply)
        self._held = False
        self._update_reading()
        self._serve()

    def _reply(self, request: _Request, reply: _Reply) -> None:
        status, payload, extra, events = reply
        transport = self._transport
        if not transport.is_closing():
            transport.write(_http_response(status, payload, extra, close=not request.keep_alive, head=request.method == "HEAD"))
        self._broker._send_events(events)  # after the response: the caller waits on it, not on the stream
        if not request.keep_alive:
            transport.close()

    def _drop(self, drop: _Drop) -> None:
        self._transport.close()
        self._broker._send_events(drop.events)

    def _upgrade(self, request: _Request, early: bytes) -> None:
        """Hand the connection to the trade_updates stream, with any bytes sent right behind the handshake."""
        self._stream = self._broker._open_stream(self._transport, request)
        if self._stream is None:
            self._transport.close()
        elif early:
            self.data_received(early)

    def _update_reading(self) -> None:
        if self._held or self._paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()


def _http_response(
    status: int,
    payload: bytes | None,
    extra: list[tuple[str, str]] = (),  # type: ignore[assignment]
    *,
    close: bool = False,
    head: bool = False,
) -> bytes:
    """One whole response, framed as h11 framed it (``Connection: close`` last when the connection ends).

    A response to HEAD carries the headers of the body it leaves out.
    """
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"]
    if payload is not None:
        lines.append(f"Content-Type: application/json; charset=UTF-8\r\nContent-Length: {len(payload)}\r\n")
    elif status != 204:
        lines.append("Content-Length: 0\r\n")
    for name, value in extra:
        lines.append(f"{name}: {value}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    wire = "".join(lines).encode("latin-1")
    return wire + payload if payload and not head else wire


def _event_json(
    event: str,
    order: _Order,
    ts_ns: int,
    state: tuple[Any, ...],
    price: Decimal | None,
    qty: Decimal | None,
    position_qty: Decimal | None,
) -> dict[str, Any]:
    """A trade_updates event's ``data`` (a fill's has a price)."""
    data: dict[str, Any] = {"event": event, "timestamp": _iso(ts_ns), "order": _Raw(order.wire(state))}
    if price is not None:
        data["execution_id"] = _uuid4()
        data["price"] = _fmt(price)
        data["qty"] = _fmt(qty)
        data["position_qty"] = _fmt(position_qty)
    return data


def _error_body(code: int, message: str) -> bytes:
    return _encode({"code": code, "message": message})


def _positive_decimal(value: Any, name: str, *, required: bool) -> Decimal | None:
    if value is None or value == "":
        if required:
            raise _invalid(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise _invalid(f"invalid {name}")
    try:
        number = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise _invalid(f"invalid {name}: {value}") from None
    if not number.is_finite() or number <= 0:
        raise _invalid(f"{name} must be > 0")
    return number


def _parse_time(value: str | None, name: str) -> int | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"invalid {name}: {value}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1_000_000) * 1000
