"""The embedded exchange: a localhost WebSocket server speaking Alpaca's market-data protocol.

It stands in for ``wss://stream.data.alpaca.markets`` when no credentials are configured and in
every test: the welcome message, auth by message or by headers within a deadline, subscriptions
answered with the full current set, batched frames, JSON text or msgpack binary exactly as Alpaca
negotiates them (``Content-Type: application/msgpack`` on the upgrade request), and the
documented error codes for the matching misuse. Paths: ``/v2/iex``, ``/v2/sip``, ``/v2/test``
(stocks) and ``/v1beta3/crypto/us`` (crypto, with ``orderbooks``).

It serves a ``SyntheticMarket`` (or any source with ``step``/``symbols``/``snapshot``, such as a
replayed recording) at ``SimConfig.messages_per_s``, and can inject faults for tests: restart,
accept-then-close, and a stalled feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine._logs import wire_logger
from engine.config import SimConfig
from engine.marketdata.messages import (
    CRYPTO_CHANNELS,
    ERR_ALREADY_AUTHENTICATED,
    ERR_AUTH_FAILED,
    ERR_AUTH_TIMEOUT,
    ERR_CONNECTION_LIMIT,
    ERR_INSUFFICIENT_SUBSCRIPTION,
    ERR_INVALID_SUBSCRIBE_ACTION,
    ERR_INVALID_SYNTAX,
    ERR_NOT_AUTHENTICATED,
    ERR_SLOW_CLIENT,
    ERR_SYMBOL_LIMIT,
    STOCK_CHANNELS,
    SUBSCRIBABLE_STOCK_CHANNELS,
    error_message,
)
from engine.marketdata.timestamps import format_rfc3339, msgpack_timestamp_payload

log = logging.getLogger(__name__)
_wire_log = wire_logger(__name__)  # websockets frame logs, auth frames redacted

Message = dict[str, Any]


class EncodedMessage(dict):  # type: ignore[type-arg]
    """A message that carries its own frame encoding, made once by a source that repeats its messages.

    ``msgpack`` and ``json`` are the exact bytes the exchange's encoders give for the message as it
    stands (None where that wire form cannot carry it); a frame of such messages is their
    concatenation, so serving them costs no per-message encoding. Never mutated after it is made.
    """

    __slots__ = ("msgpack", "json")

    @classmethod
    def of(cls, msg: Message) -> EncodedMessage:
        encoded = cls(msg)
        encoded.msgpack = msgspec.msgpack.encode(msg)
        try:
            encoded.json = msgspec.json.encode(msg)
        except TypeError:  # a msgpack-only value (a timestamp extension): JSON sessions encode it here, and fail as before
            encoded.json = None
        return encoded


def _msgpack_array_header(n: int) -> bytes:
    """The msgpack array header msgspec writes for ``n`` items (fixarray, array 16, array 32)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")

FEED_PATHS = {"/v2/iex": "iex", "/v2/sip": "sip", "/v2/test": "test", "/v1beta3/crypto/us": "crypto"}
_CHANNEL_OF_TYPE = {"t": "trades", "q": "quotes", "b": "bars", "u": "updatedBars", "d": "dailyBars", "o": "orderbooks"}
# Channels that count against the symbol limit (Alpaca's free plan limits trades and quotes).
_LIMITED_CHANNELS = ("trades", "quotes", "orderbooks")


class FeedSource(Protocol):
    """What the exchange serves: a synthetic market or a replayed recording."""

    def symbols(self) -> list[str]: ...
    def step(self, n: int, now_ns: int | None = None) -> list[Message]: ...
    def snapshot(self, symbol: str) -> Message | None: ...


@dataclass
class ServerStats:
    """What the exchange did, for tests and the ``sim`` command's status line."""

    connections_accepted: int = 0
    connections_open: int = 0
    authenticated: int = 0
    auth_failures: int = 0
    frames_sent: int = 0
    messages_sent: int = 0
    errors_sent: Counter[int] = field(default_factory=Counter)


class _Session:
    """One client connection: negotiated encoding, auth state, subscription, outbound queue."""

    def __init__(self, ws: ServerConnection, feed: str, binary: bool, universe: frozenset[str]) -> None:
        self.ws = ws
        self.feed = feed
        self.binary = binary
        self.universe = universe
        self.key: str | None = None
        self.authenticated = False
        self.channels = CRYPTO_CHANNELS if feed == "crypto" else STOCK_CHANNELS
        self.subs: dict[str, set[str]] = {c: set() for c in self.channels}
        self.wants: dict[str, frozenset[str]] = {}  # message type -> symbols wanted
        self.wildcard_types: frozenset[str] | None = None  # set when every wanted type wants the whole universe
        self.outbox: deque[list[Message]] = deque()
        self.queued = 0
        self.wakeup = asyncio.Event()
        self.closing = False

    def refresh_wants(self) -> None:
        wants = {}
        for t, channel in _CHANNEL_OF_TYPE.items():
            syms = self.subs.get(channel)
            if syms:
                wants[t] = self.universe if "*" in syms else frozenset(syms)
        self.wants = wants
        everything = all(symbols is self.universe for symbols in wants.values())
        self.wildcard_types = frozenset(wants) if wants and everything else None

    def subscription_message(self) -> Message:
        msg: Message = {"T": "subscription"}
        for channel in self.channels:
            if channel in ("corrections", "cancelErrors"):
                msg[channel] = sorted(self.subs["trades"])  # these follow the trades subscription
            else:
                msg[channel] = sorted(self.subs[channel])
        return msg

    def select(self, msgs: list[Message]) -> list[Message]:
        wants = self.wants
        if not wants:
            return []
        types = self.wildcard_types
        if types is not None:  # one universe for every wanted type: two set lookups a message
            universe = self.universe
            return [m for m in msgs if m["T"] in types and m["S"] in universe]
        return [m for m in msgs if (w := wants.get(m["T"])) is not None and m["S"] in w]

    def enqueue(self, msgs: list[Message]) -> None:
        if msgs:
            self.outbox.append(msgs)
            self.queued += len(msgs)
            self.wakeup.set()


class MarketDataServer:
    """Alpaca-protocol market-data server on localhost (see the module docstring).

    ``async with MarketDataServer(market, SimConfig()) as server: url = server.url`` — clients
    connect to ``server.url_for("iex")`` etc. ``start()`` returns the base URL ``ws://host:port``.
    """

    def __init__(
        self,
        market: FeedSource,
        config: SimConfig | None = None,
        *,
        auth_timeout_s: float = 10.0,
        connection_limit: int = 1,
        symbol_limit: int | None = None,
        allow_sip: bool = False,
        max_frame_messages: int = 1000,
        slow_client_messages: int = 200_000,
        tick_s: float | None = None,
        wall_clock: bool = True,
        ping_interval_s: float | None = 20.0,
    ) -> None:
        self.market = market
        self.config = config or SimConfig()
        self.auth_timeout_s = auth_timeout_s
        self.connection_limit = connection_limit
        self.symbol_limit = symbol_limit
        self.allow_sip = allow_sip
        self.max_frame_messages = max_frame_messages
        self.slow_client_messages = slow_client_messages
        self.tick_s = self.config.frame_interval_ms / 1000.0 if tick_s is None else tick_s
        self.wall_clock = wall_clock
        self.ping_interval_s = ping_interval_s
        self.messages_per_s = self.config.messages_per_s
        self.stats = ServerStats()
        self._server: Server | None = None
        self._port = self.config.market_port
        self._sessions: set[_Session] = set()
        self._producer: asyncio.Task[None] | None = None
        self._stalled = False
        self._accept_then_close = False
        self._json = msgspec.json.Encoder()
        self._msgpack = msgspec.msgpack.Encoder()
        symbols = list(market.symbols())
        self._stock_universe = frozenset(s for s in symbols if "/" not in s)
        self._crypto_universe = frozenset(s for s in symbols if "/" in s)

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the exchange is not started")
        return f"ws://{self.config.host}:{self._port}"

    def url_for(self, feed: str = "iex") -> str:
        """Stream URL for ``iex``, ``sip``, ``test`` or ``crypto``."""
        path = next((p for p, f in FEED_PATHS.items() if f == feed), None)
        if path is None:
            raise ValueError(f"unknown feed {feed!r}; expected one of {sorted(FEED_PATHS.values())}")
        return self.url + path

    async def start(self) -> str:
        await self._listen()
        if self._producer is None:
            self._producer = asyncio.create_task(self._produce(), name="exchange-producer")
        log.info("embedded exchange listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
            self._producer = None
        await self._close_listener()

    async def __aenter__(self) -> MarketDataServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- fault injection --------------------------------------------------------------------
    async def restart(self, down_s: float = 0.0) -> None:
        """Drop every connection and the listener, stay down ``down_s``, listen again (same port)."""
        await self._close_listener()
        if down_s > 0:
            await asyncio.sleep(down_s)
        await self._listen()

    def accept_then_close(self, enabled: bool = True) -> None:
        """While enabled, new connections are accepted (handshake done) and closed at once."""
        self._accept_then_close = enabled

    def stall(self, enabled: bool = True) -> None:
        """While enabled, no market data is sent (connections stay open and answer pings)."""
        self._stalled = enabled

    def inject_error(self, code: int) -> None:
        """Send ``[{"T":"error","code":code,...}]`` to every authenticated client (e.g. 500 internal error)."""
        for session in list(self._sessions):
            if session.authenticated:
                self._error(session, code)

    async def disconnect_all(self, code: int = 1001, reason: str = "going away") -> None:
        """Close every client connection but keep listening."""
        await asyncio.gather(*(s.ws.close(code, reason) for s in list(self._sessions)), return_exceptions=True)

    # --- listener ---------------------------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await serve(
            self._handle,
            self.config.host,
            self._port,
            process_request=self._check_path,
            ping_interval=self.ping_interval_s,
            ping_timeout=self.ping_interval_s,
            max_size=2**20,
            compression=None,
            logger=_wire_log,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] not in FEED_PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    # --- one connection ---------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        self.stats.connections_accepted += 1
        if self._accept_then_close:
            await ws.close(1011, "unavailable")
            return
        request = ws.request
        assert request is not None
        feed = FEED_PATHS[request.path.split("?", 1)[0]]
        binary = request.headers.get("Content-Type", "").lower().startswith("application/msgpack")
        universe = self._crypto_universe if feed == "crypto" else self._stock_universe
        session = _Session(ws, feed, binary, universe)
        self._sessions.add(session)
        self.stats.connections_open += 1
        writer = asyncio.create_task(self._write(session), name="exchange-writer")
        try:
            session.enqueue([{"T": "success", "msg": "connected"}])
            key = request.headers.get("APCA-API-KEY-ID")
            secret = request.headers.get("APCA-API-SECRET-KEY")
            if key is not None or secret is not None:
                if not await self._authenticate(session, key, secret):
                    return
            await self._serve(session)
        except ConnectionClosed:
            pass
        finally:
            session.closing = True
            session.wakeup.set()
            self._sessions.discard(session)
            self.stats.connections_open -= 1
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer

    async def _serve(self, session: _Session) -> None:
        deadline = time.monotonic() + self.auth_timeout_s
        while True:
            if session.authenticated:
                raw = await session.ws.recv()
            else:
                remaining = deadline - time.monotonic()
                try:
                    raw = await asyncio.wait_for(session.ws.recv(), max(remaining, 0.0))
                except TimeoutError:
                    await self._fail(session, ERR_AUTH_TIMEOUT)
                    return
            request = self._parse(raw)
            if request is None:
                self._error(session, ERR_INVALID_SYNTAX)
                continue
            action = request.get("action")
            if action == "auth":
                if session.authenticated:
                    self._error(session, ERR_ALREADY_AUTHENTICATED)
                    continue
                if not await self._authenticate(session, request.get("key"), request.get("secret")):
                    return
            elif action in ("subscribe", "unsubscribe"):
                if not session.authenticated:
                    self._error(session, ERR_NOT_AUTHENTICATED)
                    continue
                self._subscribe(session, request, action == "subscribe")
            else:
                self._error(session, ERR_INVALID_SYNTAX)

    def _parse(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            obj = msgspec.json.decode(raw) if isinstance(raw, str) else msgspec.msgpack.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            if isinstance(raw, bytes):  # some clients send JSON in binary frames
                try:
                    obj = msgspec.json.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return None
            else:
                return None
        return obj if isinstance(obj, dict) else None

    async def _authenticate(self, session: _Session, key: object, secret: object) -> bool:
        cfg = self.config
        good = (
            isinstance(key, str)
            and isinstance(secret, str)
            and hmac.compare_digest(key.encode(), cfg.key_id.get_secret_value().encode())
            and hmac.compare_digest(secret.encode(), cfg.secret_key.get_secret_value().encode())
        )
        if not good:
            self.stats.auth_failures += 1
            await self._fail(session, ERR_AUTH_FAILED)
            return False
        if session.feed == "sip" and not self.allow_sip:
            await self._fail(session, ERR_INSUFFICIENT_SUBSCRIPTION)
            return False
        same = sum(1 for s in self._sessions if s.authenticated and s.key == key and s.feed == session.feed)
        if same >= self.connection_limit:
            await self._fail(session, ERR_CONNECTION_LIMIT)
            return False
        session.key = key  # type: ignore[assignment]
        session.authenticated = True
        self.stats.authenticated += 1
        session.enqueue([{"T": "success", "msg": "authenticated"}])
        return True

    def _subscribe(self, session: _Session, request: dict[str, Any], add: bool) -> None:
        allowed = CRYPTO_CHANNELS if session.feed == "crypto" else SUBSCRIBABLE_STOCK_CHANNELS
        changes: dict[str, list[str]] = {}
        for name, value in request.items():
            if name == "action":
                continue
            if name not in allowed:
                self._error(session, ERR_INVALID_SUBSCRIBE_ACTION)
                return
            if not isinstance(value, list) or not all(isinstance(s, str) and 0 < len(s) <= 32 for s in value):
                self._error(session, ERR_INVALID_SYNTAX)
                return
            changes[name] = value
        new = {c: set(s) for c, s in session.subs.items()}
        for channel, symbols in changes.items():
            if add:
                new[channel].update(symbols)
            else:
                new[channel].difference_update(symbols)
        if add and self.symbol_limit is not None:
            counted = set().union(*(new[c] for c in _LIMITED_CHANNELS if c in new))
            if len(counted) > self.symbol_limit:
                self._error(session, ERR_SYMBOL_LIMIT)
                return
        added_books = new.get("orderbooks", set()) - session.subs.get("orderbooks", set())
        session.subs = new
        session.refresh_wants()
        session.enqueue([session.subscription_message()])
        if added_books:
            # A new orderbook subscriber first gets the full book of each symbol (reset flag set).
            wanted = session.universe if "*" in added_books else added_books
            snaps = [self.market.snapshot(s) for s in sorted(wanted) if s in session.universe]
            session.enqueue([m for m in snaps if m is not None])

    def _error(self, session: _Session, code: int) -> None:
        self.stats.errors_sent[code] += 1
        session.enqueue([error_message(code)])

    async def _fail(self, session: _Session, code: int) -> None:
        """Send an error, let it flush, then close the connection (as Alpaca does for these)."""
        self._error(session, code)
        for _ in range(100):
            if not session.outbox:
                break
            await asyncio.sleep(0.005)
        with contextlib.suppress(ConnectionClosed):
            await session.ws.close(1008, "policy violation")

    # --- outbound ---------------------------------------------------------------------------
    async def _write(self, session: _Session) -> None:
        ws = session.ws
        while not session.closing:
            if not session.outbox:
                session.wakeup.clear()
                await session.wakeup.wait()
                continue
            batch: list[Message] = session.outbox.popleft()
            # Control messages travel alone (Alpaca sends them in arrays of one); data is batched.
            if batch[0]["T"] not in ("success", "error", "subscription"):
                while session.outbox and len(batch) < self.max_frame_messages and session.outbox[0][0]["T"] not in ("success", "error", "subscription"):
                    batch = batch + session.outbox.popleft()
            session.queued -= len(batch)
            for start in range(0, len(batch), self.max_frame_messages):
                chunk = batch[start : start + self.max_frame_messages]
                await ws.send(self.encode(chunk, session.binary), text=not session.binary)
                self.stats.frames_sent += 1
                self.stats.messages_sent += len(chunk)

    def encode(self, msgs: list[Message], binary: bool) -> bytes:
        """One frame: a JSON array (sent as text) or a msgpack array, timestamps in wire form."""
        try:  # all ``EncodedMessage``s: the array is their bytes joined
            if binary:
                return _msgpack_array_header(len(msgs)) + b"".join([m.msgpack for m in msgs])  # type: ignore[attr-defined]
            return b"[" + b",".join([m.json for m in msgs]) + b"]"  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # a plain dict, or a wire form a message cannot take: encode here
            pass
        # Messages whose "t" is already in wire form (pre-stamped sources) pass through as they are.
        if binary:
            ext = msgspec.msgpack.Ext
            wire = [{**m, "t": ext(-1, msgpack_timestamp_payload(m["t"]))} if type(m.get("t")) is int else m for m in msgs]
            return self._msgpack.encode(wire)
        wire = [{**m, "t": format_rfc3339(m["t"])} if type(m.get("t")) is int else m for m in msgs]
        return self._json.encode(wire)

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        credit = 0.0
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            elapsed, last = now - last, now
            listeners = [s for s in self._sessions if s.authenticated and s.wants and not s.closing]
            if self._stalled or not listeners:
                credit = 0.0
                continue
            rate = self.messages_per_s
            if math.isfinite(rate):
                credit = min(credit + elapsed * rate, rate * 0.25 + 1)
                n = int(credit)
                credit -= n
            else:
                # "as fast as the clients read": top up whoever has drained its queue
                n = 0 if min(s.queued for s in listeners) > 2 * self.max_frame_messages else 4 * self.max_frame_messages
            if n <= 0:
                continue
            msgs = self.market.step(n, time.time_ns() if self.wall_clock else None)
            for session in listeners:
                session.enqueue(session.select(msgs))
                if session.queued > self.slow_client_messages:
                    asyncio.create_task(self._drop_slow(session))

    async def _drop_slow(self, session: _Session) -> None:
        if session.closing:
            return
        session.closing = True
        session.outbox.clear()
        session.queued = 0
        self.stats.errors_sent[ERR_SLOW_CLIENT] += 1
        log.warning("disconnecting slow client (%s feed)", session.feed)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            frame = self.encode([error_message(ERR_SLOW_CLIENT)], session.binary)
            await asyncio.wait_for(session.ws.send(frame, text=not session.binary), 1.0)
        with contextlib.suppress(ConnectionClosed):
            await session.ws.close(1008, "slow client")
