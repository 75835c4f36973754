"""The Alpaca market-data stream client: connect, authenticate, subscribe, receive decoded batches.

One ``StreamClient`` holds one WebSocket connection to one stream (stocks ``/v2/{iex|sip|test}`` or
crypto ``/v1beta3/crypto/us``) and keeps it alive:

- auth by message (default) or by ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` headers; msgpack is
  negotiated with ``Content-Type: application/msgpack`` on the upgrade request (``FeedConfig.msgpack``);
- keepalive pings (``FeedConfig.ping_interval_s``) are answered by the protocol layer; frames are
  decoded one at a time with a yield to the event loop after each, so pings are answered under load;
- reconnect with exponential backoff and jitter; the backoff resets only after a connection stayed
  up ``FeedConfig.healthy_after_s`` (a server that accepts then closes cannot cause a storm);
- a staleness watchdog drops a connection that is open and subscribed but silent for
  ``FeedConfig.stale_after_s``; the full subscription is sent again after every reconnect;
- fatal errors (402 auth failed, 405 symbol limit, 406 connection limit, 409 insufficient
  subscription, 410 invalid subscribe action) stop the client with a ``FeedError``; other errors
  and disconnects reconnect.

Batches reach the consumer through ``on_batch`` (sync or async callable) or ``async for batch in
client``. Credentials are ``SecretStr`` and never appear in logs, reprs or exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from engine._logs import wire_logger
from engine.config import AlpacaConfig, FeedConfig
from engine.errors import TickforgeError
from engine.marketdata.decoder import DecodedBatch, Decoder
from engine.marketdata.messages import (
    BENIGN_ERROR_CODES,
    CRYPTO_CHANNELS,
    ERROR_TEXT,
    FATAL_ERROR_CODES,
    SUBSCRIBABLE_STOCK_CHANNELS,
    StreamError,
    Subscription,
    Success,
)
from engine.marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)
_wire_log = wire_logger(__name__)  # websockets frame logs, auth frames redacted

CRYPTO_PATH = "/v1beta3/crypto/us"

# Connection states (plain strings: cheap to compare, print and export as a metric label).
IDLE = "idle"
CONNECTING = "connecting"
AUTHENTICATING = "authenticating"
STREAMING = "streaming"
BACKOFF = "backoff"
STOPPED = "stopped"
FAILED = "failed"

BatchCallback = Callable[[DecodedBatch], None | Awaitable[None]]


class FeedError(TickforgeError):
    """The stream refused us for a reason that retrying cannot fix (credentials, plan, limits)."""

    def __init__(self, code: int, msg: str) -> None:
        self.code = code
        self.msg = msg
        hint = {
            402: "check the API key and secret",
            405: "subscribe to fewer symbols or upgrade the data plan",
            406: "another connection with these credentials is open on this stream",
            409: "the data plan does not include this feed (use iex instead of sip)",
            410: "that channel does not exist on this stream (orderbooks are crypto only)",
        }.get(code, "")
        super().__init__(f"market data stream error {code} ({msg})" + (f": {hint}" if hint else ""))


class _Reconnect(Exception):
    """Internal: drop this connection and reconnect (with backoff)."""


@dataclass
class FeedStats:
    """Counters and gauges of one client; safe to read at any time from the event loop thread."""

    state: str = IDLE
    connect_attempts: int = 0
    connects: int = 0           # connections that got through auth
    reconnects: int = 0         # connections lost after which we tried again
    frames: int = 0
    messages: int = 0
    events: int = 0             # trades + quotes + bars + orderbook messages
    drops: int = 0              # messages the decoder dropped (see ``decoder.stats.drops`` for reasons)
    stale_events: int = 0       # times the watchdog found an open, subscribed, silent connection
    consumer_errors: int = 0    # exceptions raised by the consumer callback (logged, not fatal)
    errors: Counter[int] = field(default_factory=Counter)  # stream error codes received
    last_lag_ns: int = 0        # receive time minus the newest exchange timestamp of the last batch
    max_lag_ns: int = 0
    last_frame_monotonic: float = 0.0
    last_error: str = ""


def stream_url(alpaca: AlpacaConfig, asset: Literal["stocks", "crypto"] = "stocks", base_url: str | None = None) -> str:
    """The stream URL for ``asset``: ``{data_url}/v2/{feed}`` or ``{data_url}/v1beta3/crypto/us``."""
    base = (base_url or alpaca.data_url).rstrip("/")
    return base + (CRYPTO_PATH if asset == "crypto" else f"/v2/{alpaca.feed}")


class StreamClient:
    """A self-healing client for one Alpaca market-data stream (see the module docstring).

    ``subscriptions`` maps channel -> symbols (e.g. ``{"trades": ["AAPL"], "quotes": ["*"]}``);
    when omitted, ``feed.symbols`` (stocks) or ``feed.crypto_symbols`` (crypto) on ``feed.channels``.
    """

    def __init__(
        self,
        url: str,
        *,
        key_id: SecretStr | str,
        secret_key: SecretStr | str,
        feed: FeedConfig | None = None,
        subscriptions: Mapping[str, Iterable[str]] | None = None,
        symbols: SymbolMap | None = None,
        decoder: Decoder | None = None,  # instead of a fresh one over ``symbols`` (the live engine's BookingDecoder)
        on_batch: BatchCallback | None = None,
        on_frame: Callable[[str | bytes, int], None] | None = None,  # raw frames (text ones as UTF-8 bytes)
        auth: Literal["message", "headers"] = "message",
        queue_size: int = 1024,
        open_timeout_s: float = 10.0,
        seed: int | None = None,
    ) -> None:
        self.url = url
        self.feed = feed or FeedConfig()
        self.crypto = url.rstrip("/").endswith(CRYPTO_PATH)
        self._key = key_id if isinstance(key_id, SecretStr) else SecretStr(key_id)
        self._secret = secret_key if isinstance(secret_key, SecretStr) else SecretStr(secret_key)
        if auth not in ("message", "headers"):
            raise ValueError("auth must be 'message' or 'headers'")
        self.auth = auth
        self.decoder = decoder if decoder is not None else Decoder(symbols)
        self.symbols = self.decoder.symbols
        self.stats = FeedStats()
        self.subscription = Subscription()  # as last confirmed by the server
        self._channels = CRYPTO_CHANNELS if self.crypto else SUBSCRIBABLE_STOCK_CHANNELS
        # channel -> symbols in the order they were asked for (dicts keep order; ids follow it)
        self._wanted: dict[str, dict[str, None]] = {c: {} for c in self._channels}
        if subscriptions is None:
            names = self.feed.crypto_symbols if self.crypto else self.feed.symbols
            subscriptions = {c: names for c in self.feed.channels if c in self._channels} if names else {}
        self._merge(subscriptions, add=True)
        for name in (s for syms in self._wanted.values() for s in syms if s != "*"):
            self.symbols.add(name)  # stable ids in subscription order, before any data arrives
        self._on_batch = on_batch
        self._on_frame = on_frame  # raw frames with their receive time (the recorder hooks in here)
        self._async_callback = on_batch is not None and inspect.iscoroutinefunction(on_batch)
        self._queue: asyncio.Queue[DecodedBatch | None] = asyncio.Queue(maxsize=queue_size)
        self._open_timeout_s = open_timeout_s
        self._rng = random.Random(seed)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._sub_ack = asyncio.Event()
        self._stopping = False
        self._binary = self.feed.msgpack
        self._failure: FeedError | None = None

    @classmethod
    def from_config(
        cls,
        alpaca: AlpacaConfig,
        feed: FeedConfig,
        asset: Literal["stocks", "crypto"] = "stocks",
        *,
        base_url: str | None = None,
        **kwargs: object,
    ) -> StreamClient:
        """A client for Alpaca (or ``base_url``, e.g. the embedded exchange) from the config sections."""
        if not alpaca.has_credentials:
            raise TickforgeError("no Alpaca credentials configured (set APCA_API_KEY_ID / APCA_API_SECRET_KEY)")
        return cls(
            stream_url(alpaca, asset, base_url),
            key_id=alpaca.key_id,  # type: ignore[arg-type]
            secret_key=alpaca.secret_key,  # type: ignore[arg-type]
            feed=feed,
            **kwargs,  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:
        return f"StreamClient(url={self.url!r}, state={self.stats.state!r}, key_id=SecretStr('**********'))"

    @property
    def state(self) -> str:
        return self.stats.state

    @property
    def wanted(self) -> dict[str, list[str]]:
        """The subscription this client asks for (sent again after every reconnect)."""
        return {c: list(s) for c, s in self._wanted.items() if s}

    # --- connect / disconnect / subscribe / unsubscribe ---------------------------------------
    async def connect(self, timeout: float | None = None) -> None:
        """Start the connection loop and wait until authenticated and subscribed.

        Raises ``FeedError`` on a fatal refusal and ``TimeoutError`` if not ready within ``timeout``.
        The loop keeps running (and reconnecting) in the background until ``disconnect()``.
        """
        if self._task is None or self._task.done():
            # Compile the decoder before the clock starts: a cold numba compile must not eat the
            # server's auth deadline or the caller's timeout.
            await asyncio.to_thread(self.decoder.warm)
            self._stopping = False
            self._failure = None
            self._task = asyncio.create_task(self._run(), name=f"stream-client {self.url}")
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            done, _ = await asyncio.wait({ready, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._task in done:
            self._task.result()  # raises the FeedError
            raise TickforgeError("market data stream stopped before it was ready")
        if not done:
            raise TimeoutError(f"market data stream not ready within {timeout}s (state {self.state})")

    async def disconnect(self) -> None:
        """Close the connection and stop reconnecting; wakes async iterators with end of stream."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, FeedError):
                await self._task
        if self.stats.state != FAILED:
            self.stats.state = STOPPED
        self._end_iteration()

    async def subscribe(self, **channels: Iterable[str]) -> Subscription | None:
        """Add symbols to channels (``trades=["AAPL"]``). Returns the server's confirmed subscription
        when connected (None when not: the subscription is sent on connect)."""
        return await self._change("subscribe", channels)

    async def unsubscribe(self, **channels: Iterable[str]) -> Subscription | None:
        """Remove symbols from channels; same return as ``subscribe``."""
        return await self._change("unsubscribe", channels)

    async def run(self) -> None:
        """Run the connection loop in the caller's task until ``disconnect()`` or a fatal error."""
        self._stopping = False
        await self._run()

    async def wait_closed(self) -> None:
        """Wait for the background loop to end; re-raises the ``FeedError`` that stopped it."""
        if self._task is not None:
            await self._task

    def __aiter__(self) -> AsyncIterator[DecodedBatch]:
        if self._on_batch is not None:
            raise TypeError("this client delivers batches to its on_batch callback; iterate a client made without one")
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[DecodedBatch]:
        while True:
            batch = await self._queue.get()
            if batch is None:
                if self._failure is not None:
                    raise self._failure
                return
            yield batch

    # --- internals: subscription ------------------------------------------------------------
    def _merge(self, channels: Mapping[str, Iterable[str]], add: bool) -> dict[str, list[str]]:
        changes: dict[str, list[str]] = {}
        for channel, syms in channels.items():
            if channel not in self._channels:
                raise ValueError(f"unknown channel {channel!r} for this stream; expected one of {list(self._channels)}")
            names = [syms] if isinstance(syms, str) else list(syms)
            if not all(isinstance(s, str) and s for s in names):
                raise ValueError(f"symbols of {channel!r} must be non-empty strings")
            wanted = self._wanted[channel]
            for name in names:
                if add:
                    wanted[name] = None
                else:
                    wanted.pop(name, None)
            if names:
                changes[channel] = names
        return changes

    async def _change(self, action: str, channels: Mapping[str, Iterable[str]]) -> Subscription | None:
        changes = self._merge(channels, add=action == "subscribe")
        if action == "subscribe":
            for name in (s for syms in changes.values() for s in syms if s != "*"):
                self.symbols.add(name)
        ws = self._ws
        if not changes or ws is None or self.stats.state != STREAMING:
            return None
        self._sub_ack.clear()
        await self._send(ws, {"action": action, **changes})
        try:
            await asyncio.wait_for(self._sub_ack.wait(), self.feed.stale_after_s)
        except TimeoutError:
            return None
        return self.subscription

    def _subscribe_message(self) -> dict[str, object] | None:
        wanted = {c: list(s) for c, s in self._wanted.items() if s}
        return {"action": "subscribe", **wanted} if wanted else None

    async def _send(self, ws: ClientConnection, message: dict[str, object]) -> None:
        if self._binary:
            await ws.send(msgspec.msgpack.encode(message))
        else:
            await ws.send(msgspec.json.encode(message).decode())

    # --- internals: connection loop ---------------------------------------------------------
    def _backoff_s(self, attempt: int) -> float:
        cap = min(self.feed.reconnect_max_s, self.feed.reconnect_base_s * (2.0 ** min(attempt, 30)))
        return cap * self._rng.uniform(0.5, 1.0)  # jitter keeps many clients from reconnecting in step

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._stopping:
                healthy_since = await self._connect_once()
                if self._stopping:
                    break
                self.stats.reconnects += 1
                if healthy_since is not None and time.monotonic() - healthy_since >= self.feed.healthy_after_s:
                    attempt = 0  # the connection proved itself; start the backoff over
                delay = self._backoff_s(attempt)
                attempt += 1
                self.stats.state = BACKOFF
                log.info("market data stream %s: reconnecting in %.2fs (attempt %d)", self.url, delay, attempt)
                await asyncio.sleep(delay)
        except FeedError as exc:
            self._failure = exc
            self.stats.state = FAILED
            self.stats.last_error = str(exc)
            log.error("market data stream %s stopped: %s", self.url, exc)
            self._end_iteration()
            raise
        finally:
            self._ws = None
            self._ready.clear()
        self.stats.state = STOPPED
        self._end_iteration()

    async def _connect_once(self) -> float | None:
        """One connection's life. Returns when it had been authenticated (monotonic), else None."""
        self.stats.connect_attempts += 1
        self.stats.state = CONNECTING
        headers = {}
        if self._binary:
            headers["Content-Type"] = "application/msgpack"
        if self.auth == "headers":
            headers["APCA-API-KEY-ID"] = self._key.get_secret_value()
            headers["APCA-API-SECRET-KEY"] = self._secret.get_secret_value()
        authed_at: float | None = None
        watchdog: asyncio.Task[None] | None = None
        try:
            async with connect(
                self.url,
                additional_headers=headers,
                open_timeout=self._open_timeout_s,
                ping_interval=self.feed.ping_interval_s,
                ping_timeout=self.feed.ping_interval_s,
                max_size=64 * 2**20,
                max_queue=64,
                compression=None,
                logger=_wire_log,
            ) as ws:
                self._ws = ws
                self.stats.state = AUTHENTICATING
                await self._handshake(ws)
                authed_at = time.monotonic()
                self.stats.connects += 1
                message = self._subscribe_message()
                self._sub_ack.clear()
                if message is not None:
                    await self._send(ws, message)
                else:
                    self._sub_ack.set()
                self.stats.state = STREAMING
                self.stats.last_frame_monotonic = time.monotonic()
                watchdog = asyncio.create_task(self._watchdog(ws))
                await self._pump(ws)
        except FeedError:
            raise
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, _Reconnect) as exc:
            if not self._stopping:
                self.stats.last_error = _describe(exc)
                log.warning("market data stream %s: %s", self.url, self.stats.last_error)
        except InvalidURI as exc:
            raise TickforgeError(f"bad market data URL {self.url!r}: {exc}") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._ws = None
            self._ready.clear()
        return authed_at

    async def _handshake(self, ws: ClientConnection) -> None:
        await self._expect(ws, "connected")
        if self.auth == "message":
            await self._send(ws, {"action": "auth", "key": self._key.get_secret_value(), "secret": self._secret.get_secret_value()})
        await self._expect(ws, "authenticated")

    async def _expect(self, ws: ClientConnection, what: str) -> None:
        """Wait for ``{"T":"success","msg":what}``; a stream error on the way is handled as usual."""
        deadline = time.monotonic() + self._open_timeout_s
        while True:
            frame = await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.0))
            recv_ns = time.time_ns()
            if self._on_frame is not None:
                self._on_frame(frame, recv_ns)
            batch = self.decoder.decode(frame, recv_ns)
            self.stats.frames += 1
            self.stats.messages += batch.n_messages
            for control in batch.controls:
                if isinstance(control, StreamError):
                    self._on_error(control)
                elif isinstance(control, Success) and control.msg == what:
                    return

    def _on_error(self, error: StreamError) -> None:
        self.stats.errors[error.code] += 1
        text = f"stream error {error.code} ({error.msg or ERROR_TEXT.get(error.code, '?')})"
        self.stats.last_error = text
        if error.code in FATAL_ERROR_CODES:
            raise FeedError(error.code, error.msg or ERROR_TEXT.get(error.code, "error"))
        if error.code in BENIGN_ERROR_CODES:
            log.warning("market data stream %s: %s", self.url, text)
            return
        raise _Reconnect(text)

    async def _pump(self, ws: ClientConnection) -> None:
        decode = self.decoder.decode
        stats = self.stats
        while True:
            # Text frames stay bytes: the decoder reads UTF-8 JSON directly, no str round trip.
            frame = await ws.recv(decode=False)
            recv_ns = time.time_ns()
            stats.last_frame_monotonic = time.monotonic()
            if self._on_frame is not None:
                self._on_frame(frame, recv_ns)
            batch = decode(frame, recv_ns)
            stats.frames += 1
            stats.messages += batch.n_messages
            stats.drops += len(batch.drops)
            if batch.controls:
                self._controls(batch)
            if batch.n_events:
                stats.events += batch.n_events
                last_ts = batch.last_ts_ns
                if last_ts:
                    stats.last_lag_ns = recv_ns - last_ts
                    stats.max_lag_ns = max(stats.max_lag_ns, stats.last_lag_ns)
                await self._deliver(batch)
            # let the loop run pings, pongs and other tasks between frames even when frames queue up
            await asyncio.sleep(0)

    def _controls(self, batch: DecodedBatch) -> None:
        for control in batch.controls:
            if isinstance(control, Subscription):
                self.subscription = control
                self._sub_ack.set()
                if not self._ready.is_set():
                    self._ready.set()
            elif isinstance(control, StreamError):
                self._on_error(control)
        if not self._ready.is_set() and self._sub_ack.is_set():
            self._ready.set()

    async def _deliver(self, batch: DecodedBatch) -> None:
        if self._on_batch is None:
            await self._queue.put(batch)
            return
        try:
            result = self._on_batch(batch)
            if self._async_callback or inspect.isawaitable(result):
                await result  # type: ignore[misc]
        except Exception:
            self.stats.consumer_errors += 1
            log.exception("market data consumer raised on a batch; the stream goes on")

    async def _watchdog(self, ws: ClientConnection) -> None:
        # Only a subscribed connection must hear something; with no subscription silence is normal.
        period = max(self.feed.stale_after_s / 4, 0.01)
        while True:
            await asyncio.sleep(period)
            if not any(self._wanted.values()) and not self.subscription.channels:
                continue
            if time.monotonic() - self.stats.last_frame_monotonic > self.feed.stale_after_s:
                self.stats.stale_events += 1
                log.warning("market data stream %s: no data for %.1fs; reconnecting", self.url, self.feed.stale_after_s)
                await ws.close(1000, "stale")
                return

    def _end_iteration(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        return f"connection closed ({rcvd.code} {rcvd.reason})" if rcvd else "connection closed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
