"""Order lane: HTTP/1.1 framing, keep-alive and every failure mapped to httpx's exception types.

The counterpart is a scripted raw TCP server on loopback that answers each request with canned bytes;
the response parser (llhttp behind a head delimiter of our own) is also fed bytes directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import h11
import httpx
import pytest
from kit import eventually, free_port
from test_execution_support import fast_execution

from engine.execution.lane import _MAX_HEAD, OrderLane, _ResponseParser

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class ScriptedServer:
    """Answers request k (counted across connections) with ``replies[k]``: bytes, "close", ("sleep", s),
    or ("trickle", s, [pieces]): the pieces written ``s`` seconds apart."""

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
                if isinstance(reply, tuple) and reply[0] == "trickle":
                    for piece in reply[2]:
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(reply[1])
                    continue
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


@pytest.mark.parametrize("scripted", [[OK, OK, OK, OK]], indirect=True)
async def test_send_now_writes_before_returning_only_with_a_pooled_connection_and_a_free_slot(scripted) -> None:
    server, lane = scripted
    assert not lane.ready and lane.send_now("POST", "/v2/orders", b"{}") is None  # nothing pooled yet
    await lane.request("POST", "/v2/orders", b"{}")  # connects; the connection goes back to the pool
    assert lane.ready
    sent: list[int] = []
    before = time.time_ns()
    pending = lane.send_now("POST", "/v2/orders", b'{"qty":"2"}', on_sent=sent.append)
    assert pending is not None and len(sent) == 1  # written with no await
    assert not lane.ready and lane.send_now("POST", "/v2/orders", b"{}") is None  # the one slot is taken
    await eventually(lambda: lane.ready, timeout=5)  # back in the pool as the answer lands, before anyone awaits it
    second = lane.send_now("POST", "/v2/orders", b'{"qty":"3"}')
    assert second is not None
    reply = await lane.finish(pending)
    assert reply.status == 200 and before <= reply.received_ns <= time.time_ns()
    assert (await lane.finish(second)).status == 200
    assert server.requests[-2].endswith(b'{"qty":"2"}') and server.requests[-1].endswith(b'{"qty":"3"}')
    assert server.connections == 1 and lane.ready


@pytest.mark.parametrize("scripted", [[OK]], indirect=True)
async def test_connect_ahead_pools_a_connection_for_the_first_request(scripted) -> None:
    server, lane = scripted
    await lane.connect_ahead()
    await lane.connect_ahead()  # one is pooled already: nothing more
    pending = lane.send_now("POST", "/v2/orders", b"{}")
    assert pending is not None
    assert (await lane.finish(pending)).status == 200 and server.connections == 1


async def test_connect_ahead_to_a_closed_port_is_a_connect_error() -> None:
    lane = OrderLane(f"http://127.0.0.1:{free_port()}", {}, fast_execution())
    with pytest.raises(httpx.ConnectError):
        await lane.connect_ahead()
    assert not lane.ready
    await lane.aclose()


@pytest.mark.parametrize("scripted", [["close", OK]], indirect=True)
async def test_a_request_written_at_once_whose_connection_drops_fails_like_any_other(scripted) -> None:
    server, lane = scripted
    with pytest.raises(httpx.RemoteProtocolError):
        await lane.request("POST", "/v2/orders", b"{}")
    assert not lane.ready  # the broken connection was not pooled
    assert (await lane.request("POST", "/v2/orders", b"{}")).status == 200
    assert server.connections == 2 and lane.ready


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


@pytest.mark.parametrize("scripted", [[OK + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", OK]], indirect=True)
async def test_bytes_past_the_response_keep_it_but_not_the_connection(scripted) -> None:
    server, lane = scripted
    assert (await lane.request("POST", "/x", b"{}")).content == b"{}"
    assert (await lane.request("POST", "/x", b"{}")).status == 200
    assert server.connections == 2


@pytest.mark.parametrize("scripted", [[("trickle", 0.01, [OK, b"HTTP/1.1 200 OK\r\n"]), OK]], indirect=True)
async def test_bytes_on_an_idle_connection_retire_it(scripted) -> None:
    server, lane = scripted
    assert (await lane.request("POST", "/x", b"{}")).status == 200
    await asyncio.sleep(0.1)  # the unasked-for bytes arrive while the connection sits in the pool
    assert (await lane.request("POST", "/x", b"{}")).status == 200
    assert server.connections == 2


@pytest.mark.parametrize("scripted", [[("trickle", 0.12, [OK[:10], OK[10:30], OK[30:-1], OK[-1:]]), OK]], indirect=True)
async def test_the_read_timeout_is_per_read_not_per_response(scripted) -> None:
    # four pieces 0.12 s apart: 0.36 s in all against a 0.3 s read timeout, but no gap reaches it
    server, lane = scripted
    assert (await lane.request("POST", "/x", b"{}")).content == b"{}"
    assert (await lane.request("POST", "/x", b"{}")).status == 200
    assert server.connections == 1


@pytest.mark.parametrize("scripted", [[("trickle", 0.5, [OK[:10], OK[10:]]), OK]], indirect=True)
async def test_a_stall_inside_a_response_is_a_read_timeout(scripted) -> None:
    _, lane = scripted
    with pytest.raises(httpx.ReadTimeout):
        await lane.request("POST", "/x", b"{}")
    assert (await lane.request("POST", "/x", b"{}")).status == 200


@pytest.mark.parametrize("scripted", [[OK]], indirect=True)
async def test_request_head_is_framed_as_h11_frames_it(scripted) -> None:
    server, lane = scripted
    await lane.request("POST", "/v2/orders", b'{"qty":"1"}')
    headers = [
        ("Host", server.requests[0].split(b"Host: ")[1].split(b"\r\n")[0].decode()),
        ("User-Agent", "tickforge"), ("Accept", "application/json"), ("Accept-Encoding", "identity"),
        ("Content-Type", "application/json"), ("APCA-API-KEY-ID", "k"), ("APCA-API-SECRET-KEY", "s"), ("Content-Length", "11"),
    ]
    framed = h11.Connection(h11.CLIENT).send(h11.Request(method="POST", target="/v2/orders", headers=headers))
    assert server.requests[0] == framed + b'{"qty":"1"}'


async def test_a_method_or_path_http_cannot_carry_is_a_local_protocol_error() -> None:
    lane = OrderLane("http://127.0.0.1:1", {}, fast_execution())
    for method, path in (("POST", "/v2/orders x"), ("PO ST", "/v2/orders"), ("POST", "/v2/\r\norders")):
        with pytest.raises(httpx.LocalProtocolError, match="cannot frame"):
            lane._request_head(method, path, 0)


@pytest.mark.parametrize(
    "headers",
    [{"APCA-API-KEY-ID": " s3cr3t"}, {"APCA-API-KEY-ID": "s3cr3t\x00"}, {"Bad Name": "s3cr3t"}, {"": "s3cr3t"}, {"X": "s3cr3t\t"}],
)
def test_invalid_header_fields_are_refused_without_echoing_them(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not valid") as bad:
        OrderLane("http://127.0.0.1:1", headers, fast_execution())
    assert "s3cr3t" not in str(bad.value) and "s3cr3t" not in repr(bad.value)


def test_inner_spaces_and_tabs_in_a_header_value_are_fine() -> None:
    OrderLane("http://127.0.0.1:1", {"X-Note": "a b\tc"}, fast_execution())


# --- the response parser, fed directly ----------------------------------------------------------------


def parse(*pieces: bytes, eof: bool = False, head_only: bool = False) -> _ResponseParser:
    parser = _ResponseParser(head_only=head_only)
    for piece in pieces:
        parser.feed(piece)
    if eof:
        parser.feed_eof()
    return parser


PAD_START, PAD_END = b"HTTP/1.1 200 OK\r\nX-Pad: ", b"\r\nContent-Length: 2\r\n\r\n"


def head_of(size: int) -> bytes:
    """A response head exactly ``size`` bytes long, blank line included, announcing a 2-byte body."""
    return PAD_START + b"p" * (size - len(PAD_START) - len(PAD_END)) + PAD_END


@pytest.mark.parametrize("split", [None, 1000, 7])
def test_a_head_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(split: int | None) -> None:
    for size, ok in ((_MAX_HEAD - 1, True), (_MAX_HEAD, True), (_MAX_HEAD + 1, False)):
        wire = head_of(size) + b"{}"
        assert len(wire) == size + 2
        pieces = [wire] if split is None else [wire[i : i + split] for i in range(0, len(wire), split)]
        if ok:
            parser = parse(*pieces)
            assert parser.complete and parser.response().content == b"{}"
            assert parser.response().headers["x-pad"] == "p" * (size - len(PAD_START) - len(PAD_END))
        else:
            with pytest.raises(httpx.RemoteProtocolError, match="too large"):
                parse(*pieces)


def test_an_unfinished_head_is_refused_as_soon_as_it_passes_the_limit() -> None:
    parser = _ResponseParser()
    assert not parser.feed(PAD_START + b"p" * (_MAX_HEAD - len(PAD_START)))  # exactly the limit, unfinished
    with pytest.raises(httpx.RemoteProtocolError, match="too large"):
        parser.feed(b"p")


CONTINUE_THEN_CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Ratelimit-Remaining:  7 \t\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n"
    b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nTrailer: t\r\n\r\n"
)


def test_any_split_of_the_bytes_parses_the_same() -> None:
    wire = CONTINUE_THEN_CHUNKED
    for cut in range(1, len(wire)):
        parser = parse(wire[:cut], wire[cut:])
        assert parser.complete and not parser.leftover, cut
        reply = parser.response()
        assert (reply.status, reply.reason, reply.content) == (201, "Created", b'{"a":1}'), cut
        assert reply.headers == {"transfer-encoding": "chunked", "x-ratelimit-remaining": "7", "x-dup": "2"}, cut
    assert parse(*(wire[i : i + 1] for i in range(len(wire)))).response().content == b'{"a":1}'


def test_an_interim_reason_does_not_stick_to_a_final_response_without_one() -> None:
    reply = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").response()
    assert (reply.status, reply.reason, reply.content) == (200, "", b"")


def test_bare_lf_line_ends_are_read_as_h11_read_them() -> None:
    reply = parse(b"HTTP/1.1 200 OK\nContent-Length: 2\r\nX-A: b\n\n{}").response()
    assert (reply.status, reply.headers, reply.content) == (200, {"content-length": "2", "x-a": "b"}, b"{}")


def test_blank_lines_before_a_response_are_skipped() -> None:
    assert parse(b"\r\n\r\n", b"\r\n" + OK).response().content == b"{}"


def test_what_comes_after_the_response_is_leftover_and_never_parsed() -> None:
    for extra in (b"junk", b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", b"\r\nX"):
        parser = parse(OK + extra)
        assert parser.complete and parser.leftover and parser.response().status == 200
    assert not parse(OK + b"\r\n").leftover  # blank lines between messages are nothing (llhttp skips them)
    closing = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}junk")
    assert closing.complete and closing.leftover and not closing.keep_alive
    later = parse(OK)
    assert later.complete and not later.leftover and later.keep_alive
    assert later.feed(b"late") and later.leftover


def test_a_response_to_head_has_no_body_whatever_its_length_says() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", head_only=True)
    assert parser.complete and parser.response().content == b"" and parser.response().headers["content-length"] == "5"


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", "protocol switch"),
        (b"HTTP/1.1 99 Low\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "malformed"),
    ],
)
def test_malformed_responses(wire: bytes, message: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        parse(wire)


@pytest.mark.parametrize(
    ("wire", "outcome"),
    [
        (b"", "without sending a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "mid-response"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "mid-response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "mid-response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n", "mid-response"),
        (b"HTTP/1.1 200 OK\r\n\r\n{\"b\":", b'{"b":'),  # no length: the body ends at the close
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", b"zz"),  # not chunked last: likewise
        (b"HTTP/1.1 200 OK\r\n\r\n", b""),
    ],
)
def test_the_end_of_the_connection(wire: bytes, outcome: str | bytes) -> None:
    if isinstance(outcome, str):
        with pytest.raises(httpx.RemoteProtocolError, match=outcome):
            parse(wire, eof=True)
    else:
        parser = parse(wire, eof=True)
        assert parser.complete and not parser.keep_alive and parser.response().content == outcome


def test_only_http_1_1_is_kept_alive() -> None:
    assert parse(OK).keep_alive
    assert not parse(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}").keep_alive
    assert not parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}").keep_alive
