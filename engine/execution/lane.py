"""Order lane: a lean HTTP/1.1 keep-alive client for the one hot request, ``POST /v2/orders``.

httpx is the client for every call, but a request through it costs on the order of a millisecond of
CPU on a small machine (request model, auth and redirect plumbing, httpcore, anyio, h11), which is
most of an order's latency budget. The lane sends an order as one pre-assembled write on a pooled
keep-alive connection (TLS for ``https``) and parses the reply by hand. It honours the same per-phase
timeouts as the httpx client (connect, write, read per read, pool) and fails with httpx's own
exception types, so callers classify its failures exactly like httpx's. It does not follow
redirects, use proxies or accept compressed bodies (it asks for ``identity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from engine.config import ExecutionConfig

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class LaneResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names
    content: bytes


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

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
        self._fixed_headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
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
        if self._slots.locked():
            try:
                async with _deadline(cfg.pool_timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in the order lane") from None
        else:
            await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = await self._checkout()
            message = b"%s %s%s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
                method.encode(), self._prefix.encode(), path.encode(), self._fixed_headers, len(body), body
            )
            writer = conn.writer
            try:
                writer.write(message)  # one write: the socket takes it at once unless its buffer is full
                if on_sent is not None:
                    on_sent(time.perf_counter_ns())
                if writer.transport.get_write_buffer_size():
                    async with _deadline(cfg.write_timeout_s):
                        await writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("timed out writing the request") from None
            except (ConnectionError, OSError) as exc:
                raise httpx.WriteError(f"write failed: {exc}") from None
            response, reusable = await self._read_response(conn.reader, method)
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        if reusable and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()
        return response

    async def _checkout(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                return conn
            conn.close()  # the server closed it while idle (or left junk on it)
        try:
            async with _deadline(self._config.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None, limit=_MAX_HEAD
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {self._host}:{self._port}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from None
        return _Connection(reader, writer)

    async def _read_response(self, reader: asyncio.StreamReader, method: str) -> tuple[LaneResponse, bool]:
        read_timeout = self._config.read_timeout_s
        try:
            async with _deadline(read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            while head.startswith(b"HTTP/1.1 1"):  # 1xx interim responses: skip
                async with _deadline(read_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].decode("latin-1").split("\r\n")
            version, status_text, *reason = lines[0].split(" ", 2)
            status = int(status_text)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                content = b""
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                content = await self._read_chunked(reader, read_timeout)
            elif "content-length" in headers:
                length = int(headers["content-length"])
                async with _deadline(read_timeout):
                    content = await reader.readexactly(length) if length else b""
            else:  # delimited by the end of the connection
                async with _deadline(read_timeout):
                    content = await reader.read()
                reusable = False
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and exc.expected is None:
                raise httpx.RemoteProtocolError("server disconnected without sending a response") from None
            raise httpx.RemoteProtocolError("server closed the connection mid-response") from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("response header too large") from None
        except (ValueError, IndexError):
            raise httpx.RemoteProtocolError("malformed response") from None
        except (ConnectionError, OSError) as exc:
            raise httpx.ReadError(f"read failed: {exc}") from None
        return LaneResponse(status, reason[0] if reason else "", headers, content), reusable

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader, read_timeout: float) -> bytes:
        chunks = []
        while True:
            async with _deadline(read_timeout):
                size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                async with _deadline(read_timeout):
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                return b"".join(chunks)
            async with _deadline(read_timeout):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
