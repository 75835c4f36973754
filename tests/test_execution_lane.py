"""Order lane: HTTP/1.1 framing, keep-alive and every failure mapped to httpx's exception types.

The counterpart is a scripted raw TCP server on loopback that answers each request with canned bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from kit import free_port
from test_execution_support import fast_execution

from engine.execution.lane import OrderLane

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class ScriptedServer:
    """Answers request k (counted across connections) with ``replies[k]``: bytes, "close", or ("sleep", s)."""

    def __init__(self, replies: list[object]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0) if self.replies else OK
                if reply == "close":
                    break
                if isinstance(reply, tuple):
                    await asyncio.sleep(reply[1])
                    reply = OK
                writer.write(reply)  # type: ignore[arg-type]
                if b"Connection: close" in reply:  # type: ignore[operator]
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ScriptedServer, OrderLane]]:
    server = ScriptedServer(request.param)
    url = await server.start()
    lane = OrderLane(url, {"APCA-API-KEY-ID": "k", "APCA-API-SECRET-KEY": "s"}, fast_execution(read_timeout_s=0.3), max_connections=1)
    yield server, lane
    await lane.aclose()
    await server.stop()


@pytest.mark.parametrize("scripted", [[OK, OK, OK]], indirect=True)
async def test_one_write_per_request_and_the_connection_is_reused(scripted) -> None:
    server, lane = scripted
    sent: list[int] = []
    for _ in range(3):
        response = await lane.request("POST", "/v2/orders", b'{"qty":"1"}', on_sent=sent.append)
        assert (response.status, response.content, response.headers["content-type"]) == (200, b"{}", "application/json")
    assert server.connections == 1 and len(sent) == 3
    first = server.requests[0]
    assert first.startswith(b"POST /v2/orders HTTP/1.1\r\n") and first.endswith(b'\r\n\r\n{"qty":"1"}')
    assert b"APCA-API-KEY-ID: k\r\n" in first and b"Content-Length: 11\r\n" in first and b"Accept-Encoding: identity" in first


@pytest.mark.parametrize("scripted", [[OK, OK, OK, OK]], indirect=True)
async def test_each_body_length_gets_its_own_content_length(scripted) -> None:
    server, lane = scripted
    bodies = [b'{"qty":"1"}', b"{}", b'{"qty":"1"}', b'{"qty":"12"}']
    for body in bodies:
        assert (await lane.request("POST", "/v2/orders", body)).status == 200
    for raw, body in zip(server.requests, bodies, strict=True):
        head, _, sent = raw.partition(b"\r\n\r\n")
        assert sent == body and f"Content-Length: {len(body)}".encode() in head.split(b"\r\n")


CHUNKED = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize("scripted", [[CHUNKED, INTERIM, NO_CONTENT, CLOSING, OK]], indirect=True)
async def test_framings(scripted) -> None:
    server, lane = scripted
    assert (await lane.request("POST", "/x", b"{}")).content == b'{"a":1}'
    assert (await lane.request("POST", "/x", b"{}")).status == 200
    reply = await lane.request("DELETE", "/x", b"")
    assert (reply.status, reply.content) == (204, b"")
    assert (await lane.request("POST", "/x", b"{}")).status == 200  # the server closes after this one
    assert (await lane.request("POST", "/x", b"{}")).status == 200  # so this one needs a new connection
    assert server.connections == 2


@pytest.mark.parametrize("scripted", [["close", OK]], indirect=True)
async def test_a_dropped_response_is_a_remote_protocol_error(scripted) -> None:
    _, lane = scripted
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await lane.request("POST", "/x", b"{}")
    assert (await lane.request("POST", "/x", b"{}")).status == 200  # and the lane recovers


@pytest.mark.parametrize("scripted", [[("sleep", 1.0), OK]], indirect=True)
async def test_a_slow_response_is_a_read_timeout_and_the_pool_slot_is_returned(scripted) -> None:
    _, lane = scripted
    with pytest.raises(httpx.ReadTimeout):
        await lane.request("POST", "/x", b"{}")
    assert (await lane.request("POST", "/x", b"{}")).status == 200


@pytest.mark.parametrize("scripted", [[("sleep", 0.5)]], indirect=True)
async def test_a_full_pool_is_a_pool_timeout(scripted) -> None:
    _, lane = scripted
    lane._config = fast_execution(read_timeout_s=2.0, pool_timeout_s=0.1)
    slow = asyncio.create_task(lane.request("POST", "/x", b"{}"))
    await asyncio.sleep(0.05)
    with pytest.raises(httpx.PoolTimeout):
        await lane.request("POST", "/x", b"{}")  # max_connections=1 and the one is busy
    assert (await slow).status == 200


CUT_SHORT = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n{}"
UNTIL_CLOSE = b"HTTP/1.0 201 Created\r\nConnection: close\r\nX-Ratelimit-Remaining: 7\r\n\r\n{\"b\":2}"


@pytest.mark.parametrize("scripted", [[CUT_SHORT, UNTIL_CLOSE, OK]], indirect=True)
async def test_a_body_cut_short_is_an_error_and_a_body_up_to_the_close_is_read(scripted) -> None:
    server, lane = scripted
    with pytest.raises(httpx.RemoteProtocolError, match="mid-response"):
        await lane.request("POST", "/x", b"{}")
    reply = await lane.request("POST", "/x", b"{}")
    assert (reply.status, reply.reason, reply.content, reply.headers["x-ratelimit-remaining"]) == (201, "Created", b'{"b":2}', "7")
    assert (await lane.request("POST", "/x", b"{}")).status == 200
    assert server.connections == 3  # neither of the first two connections could be reused


@pytest.mark.parametrize("scripted", [[b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 200_000 + b"\r\nContent-Length: 2\r\n\r\n{}", OK]], indirect=True)
async def test_a_runaway_response_head_is_refused(scripted) -> None:
    # h11 refuses once 64 KiB of a head is buffered and still incomplete (a head that completes within
    # one more read gets through: the bound is on memory, not exact)
    _, lane = scripted
    with pytest.raises(httpx.RemoteProtocolError, match="too large"):
        await lane.request("POST", "/x", b"{}")
    assert (await lane.request("POST", "/x", b"{}")).status == 200


def test_header_values_are_checked_once_and_never_echoed() -> None:
    with pytest.raises(ValueError, match="not valid") as bad:
        OrderLane("http://127.0.0.1:1", {"APCA-API-SECRET-KEY": "sec\r\nret"}, fast_execution())
    assert "sec" not in str(bad.value)


@pytest.mark.parametrize("scripted", [[b"garbage\r\n\r\n"]], indirect=True)
async def test_a_malformed_response_is_a_protocol_error(scripted) -> None:
    _, lane = scripted
    with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
        await lane.request("POST", "/x", b"{}")


async def test_nothing_listening_is_a_connect_error() -> None:
    lane = OrderLane(f"http://127.0.0.1:{free_port()}", {}, fast_execution())
    with pytest.raises(httpx.ConnectError):
        await lane.request("POST", "/x", b"{}")
    await lane.aclose()
    with pytest.raises(httpx.ConnectError, match="closed"):
        await lane.request("POST", "/x", b"{}")


def test_only_http_urls() -> None:
    with pytest.raises(ValueError):
        OrderLane("ftp://example", {}, fast_execution())
    assert "secret" not in repr(OrderLane("https://paper-api.alpaca.markets", {"APCA-API-SECRET-KEY": "secret"}, fast_execution()))
