"""Order lane: a lean HTTP/1.1 keep-alive client for the one hot request, ``POST /v2/orders``.

httpx is the client for every call, but a request through it costs on the order of a millisecond of
CPU on a small machine (request model, auth and redirect plumbing, httpcore, anyio), which is most of
an order's latency budget. The lane keeps only the part that must happen: h11 frames the request and
parses the response (status line, headers, Content-Length or chunked bodies, 1xx, keep-alive state),
and this module does the asyncio I/O around it: one write per request on a pooled keep-alive
connection (TLS for ``https``). h11's framing of a request head is kept per method, path and body
length, so an order reaches the socket without waiting on h11's header checks and state machine;
the connection's h11 state is brought up to date right after the write. It honours the same per-phase timeouts as the httpx client (connect,
write, read per read, pool) and fails with httpx's own exception types, so callers classify its
failures exactly like httpx's. It does not follow redirects, use proxies or accept compressed bodies
(it asks for ``identity``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import httpx

from engine.config import ExecutionConfig

_MAX_HEAD = 64 * 1024  # h11 gives up on a response head still incomplete at this size
_READ_SIZE = 64 * 1024
_MAX_CACHED_HEADS = 512  # validated request heads kept per lane (one per method, path and body length)
_END = h11.EndOfMessage()  # h11 events are immutable values: one serves every request


@dataclass(frozen=True, slots=True)
class LaneResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names
    content: bytes


class _Connection:
    __slots__ = ("reader", "writer", "http")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


if hasattr(asyncio, "timeout"):

    def _deadline(seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        return asyncio.timeout(seconds)  # type: ignore[attr-defined]

else:  # Python 3.10: a cancel-on-deadline scope built from call_later

    @contextlib.asynccontextmanager
    async def _deadline(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()  # type: ignore[union-attr]

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()


class _Slots:
    """Connection slots: taken without an await while one is free, else waited for first come, first served.

    ``asyncio.Semaphore`` would do, but its fast path still builds a coroutine and scans its waiters
    twice, on every order.
    """

    __slots__ = ("free", "_waiters")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self, timeout_s: float) -> None:
        """Wait for a slot; ``TimeoutError`` after ``timeout_s``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with _deadline(timeout_s):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # a slot was handed to us as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # handed straight to the longest waiter
                return
        self.free += 1


class OrderLane:
    """A small pool of keep-alive HTTP/1.1 connections to one host."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        config: ExecutionConfig,
        *,
        max_connections: int = 16,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported base URL for the order lane: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        self._config = config
        fixed = {
            "Host": parts.netloc,
            "User-Agent": "tickforge",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
            **headers,
        }
        self._fixed_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fixed.items()]
        try:  # a bad header fails here, once, not on every order (and never echoes a value: it may be a secret)
            h11.Request(method=b"POST", target=b"/", headers=self._fixed_headers)
        except h11.LocalProtocolError:
            raise ValueError("order lane headers are not valid HTTP header fields") from None
        self._heads: dict[tuple[str, str, int], tuple[h11.Request, bytes]] = {}
        self._idle: list[_Connection] = []
        self._slots = _Slots(max_connections)
        self._closed = False

    def __repr__(self) -> str:
        return f"OrderLane(host={self._host!r}, port={self._port})"

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    async def request(
        self, method: str, path: str, body: bytes, *, on_sent: Callable[[int], None] | None = None
    ) -> LaneResponse:
        """Send one request and read its response; ``on_sent(perf_counter_ns)`` fires once the bytes are written."""
        if self._closed:
            raise httpx.ConnectError("order lane is closed")
        cfg = self._config
        if not self._slots.try_take():
            try:
                await self._slots.take(cfg.pool_timeout_s)
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in the order lane") from None
        conn: _Connection | None = None
        try:
            idle = self._idle
            while idle:  # the usual case: a pooled keep-alive connection, taken without an await
                conn = idle.pop()
                if conn.usable:
                    break
                conn.close()  # the server closed it while idle (or left junk on it)
                conn = None
            if conn is None:
                conn = await self._connect()
            try:
                head, head_bytes = self._request_head(method, path, len(body))
            except h11.LocalProtocolError:
                raise httpx.LocalProtocolError(f"cannot frame {method} {path} as HTTP/1.1") from None
            writer = conn.writer
            try:
                writer.write(head_bytes + body)  # one write: the socket takes it at once unless its buffer is full
                if on_sent is not None:
                    on_sent(time.perf_counter_ns())
                # now, with the order on the wire, h11 records the request it must parse the response to
                http = conn.http
                http.send(head)
                if body:
                    http.send(h11.Data(data=body))
                http.send(_END)
                if writer.transport.get_write_buffer_size():
                    async with _deadline(cfg.write_timeout_s):
                        await writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("timed out writing the request") from None
            except (ConnectionError, OSError) as exc:
                raise httpx.WriteError(f"write failed: {exc}") from None
            except h11.LocalProtocolError as exc:  # h11 refused its own bookkeeping: the connection is unusable
                raise httpx.LocalProtocolError(f"HTTP/1.1 state error: {exc}") from None
            response = await self._read_response(conn)
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        if self._reusable(conn.http) and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()
        return response

    def _request_head(self, method: str, path: str, length: int) -> tuple[h11.Request, bytes]:
        """h11's request event for this method, path and body length, and h11's framing of it.

        Both are made once and reused: building an ``h11.Request`` checks every header against the
        grammar and ``Connection.send`` runs h11's state machine, together several times the cost of
        the rest of the send. Order bodies come in few lengths, so the framed head is written as is
        and the connection's h11 state catches up once the order is on the wire.
        """
        key = (method, path, length)
        cached = self._heads.get(key)
        if cached is None:
            if len(self._heads) >= _MAX_CACHED_HEADS:
                self._heads.clear()
            headers = [*self._fixed_headers, (b"Content-Length", b"%d" % length)]
            head = h11.Request(method=method.encode(), target=(self._prefix + path).encode(), headers=headers)
            cached = self._heads[key] = (head, h11.Connection(h11.CLIENT).send(head))  # type: ignore[assignment]
        return cached  # type: ignore[return-value]

    async def _connect(self) -> _Connection:
        try:
            async with _deadline(self._config.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {self._host}:{self._port}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from None
        return _Connection(reader, writer)

    async def _read_response(self, conn: _Connection) -> LaneResponse:
        http, reader = conn.http, conn.reader
        read_timeout = self._config.read_timeout_s
        head: h11.Response | None = None
        chunks: list[bytes] = []
        received = False  # any byte of this response yet
        try:
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    async with _deadline(read_timeout):
                        data = await reader.read(_READ_SIZE)
                    received = received or bool(data)
                    http.receive_data(data)  # b"": the server closed its side
                    continue
                kind = type(event)
                if kind is h11.Data:
                    chunks.append(event.data)  # type: ignore[union-attr]
                elif kind is h11.Response:
                    head = event  # type: ignore[assignment]
                elif kind is h11.EndOfMessage:
                    break
                elif kind is h11.ConnectionClosed:
                    raise h11.RemoteProtocolError("connection closed")
                # InformationalResponse (1xx): interim, the final response follows
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response") from None
        except h11.RemoteProtocolError as exc:
            if not received:
                raise httpx.RemoteProtocolError("server disconnected without sending a response") from None
            if http.trailing_data[1]:
                raise httpx.RemoteProtocolError("server closed the connection mid-response") from None
            if exc.error_status_hint == 431:
                raise httpx.RemoteProtocolError("response header too large") from None
            raise httpx.RemoteProtocolError(f"malformed response: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise httpx.ReadError(f"read failed: {exc}") from None
        assert head is not None  # h11 emits the Response before any Data or EndOfMessage
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}  # names come lower-cased
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return LaneResponse(head.status_code, head.reason.decode("latin-1"), headers, bytes(content))

    @staticmethod
    def _reusable(http: h11.Connection) -> bool:
        """Keep-alive as h11 judged it, and nothing unasked-for left in the buffer."""
        if http.our_state is not h11.DONE or http.their_state is not h11.DONE or http.trailing_data[0]:
            return False
        http.start_next_cycle()
        return True
