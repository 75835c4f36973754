"""Order lane: a lean HTTP/1.1 keep-alive client for the one hot request, ``POST /v2/orders``.

httpx is the client for every call, but a request through it costs on the order of a millisecond of
CPU on a small machine (request model, auth and redirect plumbing, httpcore, anyio), which is most of
an order's latency budget. The lane keeps only the part that must happen. Request heads are framed
here (joined once per method and path; only the length changes), from headers checked against
HTTP's grammar when the lane is built. Responses are parsed by llhttp (``httptools``) as their bytes
arrive, inside the connection's asyncio protocol: status line, headers, Content-Length or chunked
bodies, 1xx interim responses, keep-alive. Around llhttp this module bounds the size of a response
head exactly and finishes a body that runs until the server closes. It honours the same per-phase
timeouts as the httpx client (connect, write, read per read, pool) and fails with httpx's own
exception types, so callers classify its failures exactly like httpx's. It does not follow
redirects, use proxies or accept compressed bodies (it asks for ``identity``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
import httpx

from engine._http1 import crlf, head_end
from engine.config import ExecutionConfig

_MAX_HEAD = 64 * 1024  # longest response head accepted: status line, header lines and the blank line
_MAX_CACHED_HEADS = 512  # request heads kept per lane (one per method and path)

# HTTP/1.1's grammar (RFC 9110), as h11 checks it: header names and methods are tokens, a header
# value is visible characters with single spaces or tabs inside, a request target visible ASCII.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_TARGET = re.compile(rb"[\x21-\x7e]+")


class _PastTheResponse(Exception):
    """Raised in llhttp's callback to stop it at the end of the response."""


@dataclass(frozen=True, slots=True)
class LaneResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names
    content: bytes
    received_ns: int = 0  # ``time.time_ns()`` when its last byte was parsed (the venue's answer is in)


class _ResponseParser:
    """One response, fed as its bytes arrive: llhttp parses it, this class delimits each head first.

    A head is handed to llhttp only once it is whole, so its size is known exactly before anything
    is parsed, and the bytes after the final response are never parsed as another one. At EOF a body
    framed by neither Content-Length nor chunked coding ends where the server closed.
    """

    __slots__ = (
        "_parser", "_pending", "_in_head", "_head_only", "_final", "_interim", "_status", "_reason", "_headers",
        "_body", "keep_alive", "complete", "leftover", "received",
    )

    def __init__(self, *, head_only: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._pending = b""  # the part of the current head received so far
        self._in_head = True
        self._head_only = head_only  # a response to HEAD: never a body, whatever its headers say
        self._final = False  # the final (non-1xx) response's head has been parsed
        self._interim = False
        self._status = 0
        self._reason = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.keep_alive = False
        self.complete = False
        self.leftover = False  # bytes arrived past the end of the response
        self.received = False  # any byte of this response yet

    # --- llhttp's callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # llhttp went on into bytes past the response: stop it there
            raise _PastTheResponse

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._final:  # after the head: a chunked body's trailer fields, which are not headers
            self._headers[name.decode("latin-1").lower()] = value.decode("latin-1").rstrip(" \t")

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # interim: the final response follows
            self._interim = True
            self._reason = b""
            self._headers = {}
            return
        self._final = True
        self._status = status
        # llhttp says whether the message itself allows reuse; like h11, only HTTP/1.1 is kept alive
        self.keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"

    def on_body(self, data: bytes) -> None:
        self._body.append(data)

    def on_message_complete(self) -> None:
        if self._final:
            self.complete = True

    # --- input -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Parse the next bytes of the response; True once it is complete. Raises ``httpx.RemoteProtocolError``."""
        if data:
            self.received = True
        while self._in_head:
            head = self._pending + data
            end = head_end(head, max(0, len(self._pending) - 2))
            if end < 0:
                if len(head) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("response header too large")
                self._pending = head
                return False
            if end > _MAX_HEAD:
                raise httpx.RemoteProtocolError("response header too large")
            self._pending = b""
            self._interim = False
            block = crlf(head[:end])
            self._parse(block)
            data = head[end:]
            if self._final:
                self._in_head = False
                if self._head_only:
                    self.complete = True
            elif not self._interim and block.strip(b"\r\n"):
                raise httpx.RemoteProtocolError("malformed response: incomplete head")  # not one llhttp finished
        if self.complete:
            self.leftover = self.leftover or bool(data)
            return True
        if data:
            self._parse(data)
        return self.complete

    def feed_eof(self) -> None:
        """The server closed its side: complete a body that runs to the close, else raise ``httpx.RemoteProtocolError``."""
        if self.complete:
            return
        if not self.received:
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        if self._final and self._until_close():
            self.complete = True
            self.keep_alive = False
            return
        raise httpx.RemoteProtocolError("server closed the connection mid-response")

    def response(self) -> LaneResponse:
        body = self._body
        content = body[0] if len(body) == 1 else b"".join(body)
        return LaneResponse(self._status, self._reason.decode("latin-1"), self._headers, content, time.time_ns())

    def _parse(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError("malformed response: unexpected protocol switch") from None
        except httptools.HttpParserError as exc:
            if self.complete:  # bytes after the response: it stands, the connection does not
                self.leftover = True
                return
            raise httpx.RemoteProtocolError(f"malformed response: {exc}") from None

    def _until_close(self) -> bool:
        """Whether the final response's body is delimited by the close (RFC 9112 6.3)."""
        if self._status in (204, 304) or "content-length" in self._headers:
            return False
        coding = self._headers.get("transfer-encoding")
        return coding is None or coding.rsplit(",", 1)[-1].strip().lower() != "chunked"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; each response is parsed in ``data_received`` and handed to its request.

    Parsing where the bytes land saves a task wake-up, a stream buffer and a timeout scope per read.
    """

    __slots__ = (
        "_loop", "transport", "_parser", "_waiter", "_eof", "_lost", "_broken", "paused", "_drain_waiter",
        "_timer", "_read_timeout", "_last_read", "on_done",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser: _ResponseParser | None = None
        self._waiter: asyncio.Future[LaneResponse] | None = None
        self._eof = False
        self._lost = False
        self._broken = False  # bytes arrived with no request waiting: nothing after them can be trusted
        self.paused = False  # asyncio's flow control: the transport's buffer is over its high-water mark
        self._drain_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._last_read = 0.0
        # set while a request is out: called once its response is complete, where the bytes land, so
        # the connection is back in its pool before the awaiting task even wakes
        self.on_done: Callable[[_Connection], None] | None = None

    @property
    def usable(self) -> bool:
        transport = self.transport
        return transport is not None and not transport.is_closing() and not (self._eof or self._lost or self._broken)

    def close(self) -> None:
        self._cancel_timer()
        self._parser = None
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled():
                waiter.exception()  # seen: a failure that lost the race to another error is not "never retrieved"
        if self.transport is not None:
            self.transport.close()

    # --- one request -----------------------------------------------------------------------------

    def expect_response(self, *, head_only: bool) -> asyncio.Future[LaneResponse]:
        """Get ready for the response to the request about to be written; the future resolves with it."""
        self._parser = _ResponseParser(head_only=head_only)
        self._waiter = waiter = self._loop.create_future()
        return waiter

    async def drain(self, timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, while the transport's buffer is over its limit (as ``StreamWriter.drain``)."""
        if not self.paused or self._lost:  # a lost connection fails the response instead
            return
        self._drain_waiter = waiter = self._loop.create_future()
        async with _deadline(timeout_s):
            await waiter

    def start_read_timer(self, timeout_s: float) -> None:
        """Fail the response if ``timeout_s`` passes with no byte of it arriving (httpx's read timeout).

        One timer serves a run of requests: it is left running when a response completes and, when it
        fires, only re-arms itself for the request in flight, if any, so a stream of orders costs no
        timer per order.
        """
        self._read_timeout = timeout_s
        self._last_read = now = self._loop.time()
        timer = self._timer
        if timer is None or timer.when() > now + timeout_s:  # none, or one set for a longer timeout
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(now + timeout_s, self._check_read_timeout)

    def _check_read_timeout(self) -> None:
        self._timer = None
        if self._parser is None:  # no response awaited: the next request arms a timer again
            return
        due = self._last_read + self._read_timeout
        if self._loop.time() < due:  # bytes (or a new request) came meanwhile: wait out the rest
            self._timer = self._loop.call_at(due, self._check_read_timeout)
        else:
            self._fail(httpx.ReadTimeout("timed out reading the response"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self, parser: _ResponseParser) -> None:
        self._parser = None  # the read timer, left running, now finds nothing awaited
        if parser.leftover or not parser.keep_alive:
            self._broken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(parser.response())
        done, self.on_done = self.on_done, None
        if done is not None:
            done(self)

    def _fail(self, exc: Exception) -> None:
        self._cancel_timer()
        self._parser = None
        self._broken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # --- asyncio's callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # nobody asked: junk, or a response to nothing; drop the connection
            self._broken = True
            self.transport.close()  # type: ignore[union-attr]
            return
        try:
            done = parser.feed(data)
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)
            return
        if done:
            self._finish(parser)
        else:  # the read timeout runs from the latest bytes
            self._last_read = self._loop.time()

    def eof_received(self) -> bool:
        self._eof = True
        self._end_of_input()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        drain, self._drain_waiter = self._drain_waiter, None
        if drain is not None and not drain.done():
            if exc is None:
                drain.set_result(None)  # the response future says what became of the request
            else:
                drain.set_exception(exc)
        if exc is not None and self._parser is not None:
            self._fail(httpx.ReadError(f"read failed: {exc}"))
        else:
            self._end_of_input()

    def _end_of_input(self) -> None:
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_eof()
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)
            return
        self._finish(parser)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        drain, self._drain_waiter = self._drain_waiter, None
        if drain is not None and not drain.done():
            drain.set_result(None)


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

    def can_take(self) -> bool:
        return self.free > 0 and not self._waiters

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


@dataclass(slots=True)
class SentRequest:
    """A request on the wire whose response ``OrderLane.finish`` reads."""

    conn: _Connection
    response: asyncio.Future[LaneResponse]


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
        lines = []
        for name, value in fixed.items():
            raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
            # a bad header fails here, once, not on every order (and never echoes a value: it may be a secret)
            if not _TOKEN.fullmatch(raw_name) or not _FIELD_VALUE.fullmatch(raw_value):
                raise ValueError("order lane headers are not valid HTTP header fields")
            lines.append(b"%s: %s\r\n" % (raw_name, raw_value))
        self._fixed_headers = b"".join(lines)
        self._heads: dict[tuple[str, str], bytes] = {}
        self._idle: list[_Connection] = []
        self._slots = _Slots(max_connections)
        self._closed = False

    def __repr__(self) -> str:
        return f"OrderLane(host={self._host!r}, port={self._port})"

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    async def connect_ahead(self) -> None:
        """Open a connection into the pool now, so the first order does not wait for the handshake.
        Raises httpx's ``ConnectError``/``ConnectTimeout`` when the host cannot be reached."""
        if self._closed or self._idle or not self._slots.try_take():
            return
        try:
            self._idle.append(await self._connect())
        finally:
            self._slots.release()

    @property
    def ready(self) -> bool:
        """Whether ``send_now`` would write at once: a free slot and a pooled connection."""
        return not self._closed and self._slots.can_take() and bool(self._idle)

    def send_now(self, method: str, path: str, body: bytes, *, on_sent: Callable[[int], None] | None = None) -> SentRequest | None:
        """Write the request before returning, with no await, when a slot and a pooled keep-alive
        connection are free; None otherwise (use ``request``). ``finish`` the result to read the response.

        On the order path this puts the order on the wire in the same loop turn the decision is made,
        instead of a task's first turn later."""
        if self._closed or not self._idle or not self._slots.try_take():
            return None
        conn = self._pooled()
        if conn is None:
            self._slots.release()
            return None
        return self._write_or_release(conn, method, path, body, on_sent)

    async def request(
        self, method: str, path: str, body: bytes, *, on_sent: Callable[[int], None] | None = None
    ) -> LaneResponse:
        """Send one request and read its response; ``on_sent(perf_counter_ns)`` fires once the bytes are written."""
        sent = self.send_now(method, path, body, on_sent=on_sent)
        if sent is None:
            sent = await self._send_waiting(method, path, body, on_sent)
        return await self.finish(sent)

    async def finish(self, sent: SentRequest) -> LaneResponse:
        """The response to a written request (its connection went back to the pool as it arrived)."""
        conn = sent.conn
        cfg = self._config
        try:
            if conn.paused:  # the socket did not take it all and the buffer is over its limit
                try:
                    await conn.drain(cfg.write_timeout_s)
                except TimeoutError:
                    raise httpx.WriteTimeout("timed out writing the request") from None
                except (ConnectionError, OSError) as exc:
                    raise httpx.WriteError(f"write failed: {exc}") from None
            conn.start_read_timer(cfg.read_timeout_s)
            return await sent.response
        except BaseException:
            if conn.on_done is not None:  # no complete response: the connection cannot be trusted
                conn.on_done = None
                conn.close()
                self._slots.release()
            raise

    def _give_back(self, conn: _Connection) -> None:
        """A response is complete: its connection returns to the pool (or closes) and its slot frees.

        Done as the last byte is parsed, so an order decided before the awaiting task runs finds it."""
        if conn.usable and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    async def _send_waiting(self, method: str, path: str, body: bytes, on_sent: Callable[[int], None] | None) -> SentRequest:
        """``send_now`` when it could not: wait for a slot, connect, then write."""
        if self._closed:
            raise httpx.ConnectError("order lane is closed")
        cfg = self._config
        if not self._slots.try_take():
            try:
                await self._slots.take(cfg.pool_timeout_s)
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in the order lane") from None
        try:
            conn = self._pooled() or await self._connect()
        except BaseException:
            self._slots.release()
            raise
        return self._write_or_release(conn, method, path, body, on_sent)

    def _pooled(self) -> _Connection | None:
        """A usable pooled connection; ones the server closed while idle (or that got bytes unasked) are dropped."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            conn.close()
        return None

    def _write_or_release(self, conn: _Connection, method: str, path: str, body: bytes, on_sent: Callable[[int], None] | None) -> SentRequest:
        try:
            return self._write(conn, method, path, body, on_sent)
        except BaseException:
            conn.close()
            self._slots.release()
            raise

    def _write(self, conn: _Connection, method: str, path: str, body: bytes, on_sent: Callable[[int], None] | None) -> SentRequest:
        # one write: the socket takes it at once unless its buffer is full
        conn.transport.write(self._request_head(method, path, len(body)) + body)  # type: ignore[union-attr]
        if on_sent is not None:
            on_sent(time.perf_counter_ns())
        # ready for the response only now, with the request on the wire (nothing is read before the next await)
        sent = SentRequest(conn, conn.expect_response(head_only=method == "HEAD"))
        conn.on_done = self._give_back
        return sent

    def _request_head(self, method: str, path: str, length: int) -> bytes:
        """The request head, framed here: request line, the lane's headers, Content-Length, blank line.

        Everything but the length is checked and joined once per method and path, then reused.
        """
        key = (method, path)
        start = self._heads.get(key)
        if start is None:
            raw_method, target = method.encode("latin-1"), (self._prefix + path).encode("latin-1")
            if not _TOKEN.fullmatch(raw_method) or not _TARGET.fullmatch(target):
                raise httpx.LocalProtocolError(f"cannot frame {method} {path} as HTTP/1.1")
            if len(self._heads) >= _MAX_CACHED_HEADS:
                self._heads.clear()
            start = self._heads[key] = b"%s %s HTTP/1.1\r\n%sContent-Length: " % (raw_method, target, self._fixed_headers)
        return b"%s%d\r\n\r\n" % (start, length)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with _deadline(self._config.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {self._host}:{self._port}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from None
        return conn
