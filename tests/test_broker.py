"""The embedded paper broker over real HTTP and WebSocket on loopback: wire shapes, matching, errors."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import h11
import httpx
import pytest
import websockets
from kit import eventually
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response as WsResponse
from websockets.uri import parse_uri
from test_execution_support import AAPL_ASKS, AAPL_BIDS, SIM, auth_headers, book, broker, standard_book  # noqa: F401

from engine.config import SimConfig
from engine.sim.broker import PaperBroker, StaticBook
from engine.sim.market import LiquiditySource


@pytest.fixture
async def http(broker: PaperBroker):
    async with httpx.AsyncClient(base_url=broker.base_url, headers=auth_headers(), timeout=5.0) as client:
        yield client


async def order(http: httpx.AsyncClient, **fields: object) -> httpx.Response:
    body = {"type": "market", "time_in_force": "day", **fields}
    return await http.post("/v2/orders", json=body)


# --- the standalone book ----------------------------------------------------------------------------


def test_static_book_is_a_liquidity_source_and_validates_levels() -> None:
    book = StaticBook({"X": ([(10.0, 5.0), (10.5, 1.0)], [(11.0, 2.0)])})
    assert isinstance(book, LiquiditySource)
    assert book.top_of_book("X") == (10.5, 1.0, 11.0, 2.0)  # bids sorted best first
    assert book.depth("X", 1, 5) == [(10.5, 1.0), (10.0, 5.0)]
    assert book.top_of_book("NOPE") is None
    with pytest.raises(ValueError, match="crossed"):
        book.set_book("X", [(11.0, 1.0)], [(11.0, 1.0)])
    with pytest.raises(ValueError, match="bad level"):
        book.set_book("X", [(10.0, -1.0)], [])
    seen: list[list[str]] = []
    book.add_listener(seen.append)
    book.set_book("X", [(10.0, 1.0)], [(10.2, 1.0)])
    assert seen == [["X"]]


# --- market orders -------------------------------------------------------------------------------


async def test_market_buy_walks_the_book_and_moves_cash_and_position(http: httpx.AsyncClient) -> None:
    r = await order(http, symbol="AAPL", side="buy", qty="250")
    assert r.status_code == 200
    o = r.json()
    assert o["status"] == "filled" and o["filled_qty"] == "250" and o["qty"] == "250"
    expected_avg = (Decimal("100.01") * 100 + Decimal("100.02") * 150) / 250
    assert Decimal(o["filled_avg_price"]) == expected_avg
    assert o["type"] == o["order_type"] == "market" and o["order_class"] == "simple" and o["asset_class"] == "us_equity"
    assert isinstance(o["qty"], str) and o["limit_price"] is None

    positions = (await http.get("/v2/positions")).json()
    assert [(p["symbol"], p["qty"], p["side"]) for p in positions] == [("AAPL", "250", "long")]
    assert Decimal(positions[0]["avg_entry_price"]) == expected_avg
    account = (await http.get("/v2/account")).json()
    assert Decimal(account["cash"]) == Decimal(1_000_000) - expected_avg * 250
    assert all(isinstance(account[k], str) for k in ("cash", "buying_power", "equity", "portfolio_value"))


async def test_consumed_liquidity_stays_consumed_until_the_book_updates(http: httpx.AsyncClient, book: StaticBook) -> None:
    first = (await order(http, symbol="AAPL", side="buy", qty=60)).json()
    second = (await order(http, symbol="AAPL", side="buy", qty=60)).json()
    assert Decimal(first["filled_avg_price"]) == Decimal("100.01")
    # only 40 left at 100.01: the rest of the second order paid 100.02
    assert Decimal(second["filled_avg_price"]) == (Decimal("100.01") * 40 + Decimal("100.02") * 20) / 60
    book.set_book("AAPL", AAPL_BIDS, AAPL_ASKS)  # the book refreshed: its liquidity is new
    third = (await order(http, symbol="AAPL", side="buy", qty=60)).json()
    assert Decimal(third["filled_avg_price"]) == Decimal("100.01")


async def test_market_order_larger_than_the_book_rests_until_liquidity_arrives(http: httpx.AsyncClient, book: StaticBook) -> None:
    o = (await order(http, symbol="AAPL", side="sell", qty=1000)).json()
    assert o["status"] == "partially_filled" and o["filled_qty"] == "800"
    book.set_book("AAPL", [(99.90, 500.0)], [(100.0, 10.0)])

    async def done() -> bool:
        return (await http.get(f"/v2/orders/{o['id']}")).json()["status"] == "filled"

    await eventually(done)
    position = (await http.get("/v2/positions/AAPL")).json()
    assert position["qty"] == "-1000" and position["side"] == "short"


async def test_ioc_cancels_the_rest_and_fok_fills_all_or_nothing(http: httpx.AsyncClient) -> None:
    ioc = (await order(http, symbol="AAPL", side="buy", qty=1000, time_in_force="ioc")).json()
    assert (ioc["status"], ioc["filled_qty"]) == ("canceled", "800")
    fok_big = (await order(http, symbol="AAPL", side="sell", qty=801, time_in_force="fok")).json()
    assert (fok_big["status"], fok_big["filled_qty"]) == ("canceled", "0")
    fok_ok = (await order(http, symbol="AAPL", side="sell", qty=800, time_in_force="fok")).json()
    assert (fok_ok["status"], fok_ok["filled_qty"]) == ("filled", "800")


# --- limit and stop orders -----------------------------------------------------------------------


async def test_marketable_limit_takes_what_crosses_and_rests_the_rest_then_fills_at_its_own_price(
    http: httpx.AsyncClient, book: StaticBook
) -> None:
    o = (await order(http, symbol="AAPL", side="buy", qty=150, type="limit", limit_price="100.01")).json()
    assert (o["status"], o["filled_qty"], o["filled_avg_price"]) == ("partially_filled", "100", "100.01")
    assert o["limit_price"] == "100.01"
    book.set_book("AAPL", [(99.0, 10.0)], [(99.5, 20.0), (100.0, 100.0)])  # the ask walks through our limit

    async def filled() -> bool:
        return (await http.get(f"/v2/orders/{o['id']}")).json()["status"] == "filled"

    await eventually(filled)
    final = (await http.get(f"/v2/orders/{o['id']}")).json()
    # the resting 50 traded at the order's own limit, not at the crossing ask
    assert Decimal(final["filled_avg_price"]) == Decimal("100.01")


async def test_passive_limit_rests_then_partially_fills_as_the_book_crosses(http: httpx.AsyncClient, book: StaticBook) -> None:
    o = (await order(http, symbol="AAPL", side="buy", qty=100, type="limit", limit_price="99.50", time_in_force="gtc")).json()
    assert (o["status"], o["filled_qty"]) == ("new", "0")
    book.set_book("AAPL", [(99.0, 10.0)], [(99.40, 30.0), (99.60, 500.0)])

    async def partial() -> bool:
        return (await http.get(f"/v2/orders/{o['id']}")).json()["filled_qty"] == "30"

    await eventually(partial)
    assert (await http.get(f"/v2/orders/{o['id']}")).json()["status"] == "partially_filled"


async def test_stop_waits_for_the_touch_then_trades_as_market(http: httpx.AsyncClient, book: StaticBook) -> None:
    stop = (await order(http, symbol="AAPL", side="sell", qty=50, type="stop", stop_price="99.90")).json()
    stop_limit = (
        await order(http, symbol="AAPL", side="sell", qty=50, type="stop_limit", stop_price="99.90", limit_price="99.85")
    ).json()
    assert stop["status"] == stop_limit["status"] == "new"
    book.set_book("AAPL", [(99.88, 60.0), (99.80, 100.0)], [(99.95, 100.0)])

    async def triggered() -> bool:
        a = (await http.get(f"/v2/orders/{stop['id']}")).json()
        b = (await http.get(f"/v2/orders/{stop_limit['id']}")).json()
        return a["status"] == "filled" and b["filled_qty"] == "10"

    await eventually(triggered)  # the stop took 50 of the 60 at 99.88; the stop-limit got the last 10


# --- errors, exactly as Alpaca sends them ------------------------------------------------------------


async def test_auth_errors(broker: PaperBroker) -> None:
    async with httpx.AsyncClient(base_url=broker.base_url) as anon:
        r = await anon.get("/v2/account")
        assert r.status_code == 401 and r.json()["code"] == 40110000
        r = await anon.get("/v2/account", headers={"APCA-API-KEY-ID": "tickforge-sim", "APCA-API-SECRET-KEY": "wrong"})
        assert r.status_code == 403 and r.json() == {"code": 40310000, "message": "forbidden"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"symbol": "AAPL", "side": "buy"}, "qty is required"),
        ({"symbol": "AAPL", "side": "hold", "qty": 1}, "invalid side"),
        ({"symbol": "AAPL", "side": "buy", "qty": -5}, "qty must be > 0"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "type": "trailing"}, "invalid order type"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "time_in_force": "gtd"}, "invalid time_in_force"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "type": "limit"}, "limit_price is required"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "type": "stop"}, "stop_price is required"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "type": "limit", "limit_price": "100.001"}, "sub-penny"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "extended_hours": True}, "extended hours"),
        ({"symbol": "ZZZZ", "side": "buy", "qty": 1}, 'asset "ZZZZ" not found'),
        ({"symbol": "AAPL", "side": "buy", "notional": "100"}, "notional"),
    ],
)
async def test_invalid_orders_are_422_with_alpacas_body(http: httpx.AsyncClient, fields: dict, message: str) -> None:
    r = await order(http, **fields)
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == 40010001 and message in body["message"]


async def test_sub_penny_is_fine_below_one_dollar_and_for_crypto(http: httpx.AsyncClient) -> None:
    r = await order(http, symbol="PENNY", side="buy", qty=10, type="limit", limit_price="0.4999")
    assert r.status_code == 200
    r = await order(http, symbol="BTC/USD", side="buy", qty="0.25", type="limit", limit_price="39000.125", time_in_force="gtc")
    assert r.status_code == 200 and r.json()["asset_class"] == "crypto"


async def test_malformed_body_duplicate_id_and_buying_power(http: httpx.AsyncClient) -> None:
    r = await http.post("/v2/orders", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == 40010000
    assert (await order(http, symbol="AAPL", side="buy", qty=1, client_order_id="same")).status_code == 200
    r = await order(http, symbol="AAPL", side="buy", qty=1, client_order_id="same")
    assert r.status_code == 422 and r.json() == {"code": 40010001, "message": "client_order_id must be unique"}
    # 12 000 shares at ~100 is 1.2M against 1M of buying power; 9 000 is fine
    r = await order(http, symbol="AAPL", side="buy", qty=12_000, type="limit", limit_price="100.00")
    assert r.status_code == 403 and r.json() == {"code": 40310000, "message": "insufficient buying power"}
    assert (await order(http, symbol="AAPL", side="buy", qty=9_000, type="limit", limit_price="99.00")).status_code == 200
    # the resting 9 000 @ 99 reserves 891k: another 2 000 no longer fits
    r = await order(http, symbol="AAPL", side="buy", qty=2_000, type="limit", limit_price="99.00")
    assert r.status_code == 403


async def test_lookup_and_cancel_errors(http: httpx.AsyncClient) -> None:
    missing = "7d9f3c1e-0000-4000-8000-000000000000"
    r = await http.get(f"/v2/orders/{missing}")
    assert r.status_code == 404 and r.json() == {"code": 40410000, "message": "order not found"}
    assert (await http.get("/v2/orders/not-a-uuid")).status_code == 422
    assert (await http.delete(f"/v2/orders/{missing}")).status_code == 404
    r = await http.get("/v2/orders:by_client_order_id", params={"client_order_id": "nope"})
    assert r.status_code == 404
    assert (await http.get("/v2/orders:by_client_order_id")).status_code == 422
    assert (await http.get("/v2/positions/AAPL")).status_code == 404
    assert (await http.get("/v2/nothing")).status_code == 404
    filled = (await order(http, symbol="AAPL", side="buy", qty=1)).json()
    r = await http.delete(f"/v2/orders/{filled['id']}")
    assert r.status_code == 422 and r.json() == {"code": 42210000, "message": 'order is already in "filled" state'}
    for bad in ({"status": "done"}, {"limit": "0"}, {"limit": "501"}, {"direction": "up"}, {"after": "yesterday"}):
        assert (await http.get("/v2/orders", params=bad)).status_code == 422, bad


# --- reads, cancels, listing -----------------------------------------------------------------------


async def test_get_by_id_and_client_id_cancel_and_cancel_all(http: httpx.AsyncClient) -> None:
    resting = []
    for i in range(3):
        r = await order(http, symbol="AAPL", side="buy", qty=10, type="limit", limit_price="95.00", client_order_id=f"c{i}")
        resting.append(r.json())
    by_id = (await http.get(f"/v2/orders/{resting[0]['id']}")).json()
    by_coid = (await http.get("/v2/orders:by_client_order_id", params={"client_order_id": "c0"})).json()
    assert by_id == by_coid
    r = await http.delete(f"/v2/orders/{resting[0]['id']}")
    assert r.status_code == 204 and r.content == b""
    assert (await http.get(f"/v2/orders/{resting[0]['id']}")).json()["status"] == "canceled"
    r = await http.delete("/v2/orders")
    assert r.status_code == 207
    results = r.json()
    assert sorted(x["id"] for x in results) == sorted(o["id"] for o in resting[1:])
    assert all(x["status"] == 200 and x["body"]["status"] == "canceled" for x in results)
    assert (await http.get("/v2/orders")).json() == []


async def test_list_orders_filters(http: httpx.AsyncClient) -> None:
    ids = []
    for i in range(4):
        r = await order(http, symbol="AAPL" if i % 2 else "MSFT", side="buy", qty=1, type="limit", limit_price="90.00")
        ids.append(r.json()["id"])
        time.sleep(0.002)  # distinct submission microseconds
    filled = (await order(http, symbol="AAPL", side="buy", qty=1)).json()
    all_orders = (await http.get("/v2/orders", params={"status": "all"})).json()
    assert [o["id"] for o in all_orders] == [filled["id"], *reversed(ids)]  # newest first by default
    asc = (await http.get("/v2/orders", params={"status": "all", "direction": "asc", "limit": 2})).json()
    assert [o["id"] for o in asc] == ids[:2]
    assert [o["id"] for o in (await http.get("/v2/orders", params={"status": "closed"})).json()] == [filled["id"]]
    assert len((await http.get("/v2/orders", params={"symbols": "MSFT"})).json()) == 2
    after = all_orders[-1]["submitted_at"]  # the oldest: "after" is exclusive
    later = (await http.get("/v2/orders", params={"status": "all", "after": after})).json()
    assert ids[0] not in {o["id"] for o in later} and len(later) == 4


# --- rate limit and faults ---------------------------------------------------------------------------


async def test_rate_limit_headers_and_429() -> None:
    async with PaperBroker(standard_book(), SimConfig(rate_limit_per_min=3)) as limited:
        async with httpx.AsyncClient(base_url=limited.base_url, headers=auth_headers()) as http:
            remaining = []
            for _ in range(3):
                r = await http.get("/v2/account")
                assert r.status_code == 200 and r.headers["X-Ratelimit-Limit"] == "3"
                remaining.append(int(r.headers["X-Ratelimit-Remaining"]))
            assert remaining == [2, 1, 0]
            r = await http.get("/v2/account")
            assert r.status_code == 429 and r.json()["code"] == 42910000
            assert int(r.headers["Retry-After"]) >= 1
            assert int(r.headers["X-Ratelimit-Reset"]) > time.time()


async def test_fault_switches(http: httpx.AsyncClient, broker: PaperBroker) -> None:
    broker.faults.error_next = 1
    assert (await http.get("/v2/account")).status_code == 503
    broker.faults.throttle_next = 1
    r = await http.get("/v2/account")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    broker.faults.drop_after_accept = 1
    with pytest.raises(httpx.RemoteProtocolError):
        await order(http, symbol="AAPL", side="buy", qty=1, client_order_id="dropped")
    assert [o["client_order_id"] for o in broker.orders()] == ["dropped"]  # accepted all the same
    assert (await http.get("/v2/account")).status_code == 200


async def test_chunked_request_body_is_read(http: httpx.AsyncClient) -> None:
    async def body():
        yield b'{"symbol":"AAPL","side":"buy",'
        yield b'"qty":"2","type":"market","time_in_force":"day"}'

    r = await http.post("/v2/orders", content=body())
    assert r.status_code == 200 and r.json()["filled_qty"] == "2"


async def test_day_orders_expire_at_end_of_day(http: httpx.AsyncClient, broker: PaperBroker) -> None:
    day = (await order(http, symbol="AAPL", side="buy", qty=1, type="limit", limit_price="90.00")).json()
    gtc = (await order(http, symbol="AAPL", side="buy", qty=1, type="limit", limit_price="90.00", time_in_force="gtc")).json()
    assert broker.expire_day_orders() == 1
    assert (await http.get(f"/v2/orders/{day['id']}")).json()["status"] == "expired"
    assert (await http.get(f"/v2/orders/{gtc['id']}")).json()["status"] == "new"


# --- HTTP/1.1 on the wire (raw bytes in, responses parsed with h11) ------------------------------------


def wire_request(method: str, target: str, body: bytes = b"", *, extra: str = "", version: str = "1.1") -> bytes:
    auth = "".join(f"{name}: {value}\r\n" for name, value in auth_headers().items())
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {target} HTTP/{version}\r\nHost: t\r\n{auth}{length}{extra}\r\n".encode() + body


async def exchange(broker: PaperBroker, wire: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Write ``wire`` at once, read until the broker closes the connection, and split what came back into responses."""
    reader, writer = await asyncio.open_connection(*broker.base_url.removeprefix("http://").split(":"))
    writer.write(wire)
    received = await asyncio.wait_for(reader.read(), 5)  # to EOF: the broker must close by itself
    writer.close()
    parser = h11.Connection(h11.CLIENT)
    parser.receive_data(received)
    parser.receive_data(b"")
    responses = []
    while parser.their_state is not h11.CLOSED and (parser.trailing_data[0] or parser.their_state is not h11.MUST_CLOSE):
        parser.send(h11.Request(method="GET", target="/", headers=[("Host", "t")]))  # lets h11 expect a response
        parser.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while (event := parser.next_event()) and type(event) is not h11.EndOfMessage:
            if type(event) is h11.Response:
                status, headers = event.status_code, {k.decode(): v.decode() for k, v in event.headers}
            elif type(event) is h11.Data:
                body += event.data
        responses.append((status, headers, body))
        if parser.their_state is h11.MUST_CLOSE:
            break
        parser.start_next_cycle()
    return responses


async def test_pipelined_keep_alive_requests_then_connection_close(broker: PaperBroker) -> None:
    order_body = json.dumps({"symbol": "AAPL", "side": "buy", "qty": "3", "type": "market", "time_in_force": "day"}).encode()
    wire = (
        wire_request("GET", "/v2/account")
        + wire_request("POST", "/v2/orders", order_body)
        + wire_request("GET", "/v2/positions", extra="Connection: close\r\n")
    )
    (s1, h1, _), (s2, _, b2), (s3, h3, b3) = await exchange(broker, wire)
    assert (s1, s2, s3) == (200, 200, 200)
    assert "connection" not in h1 and int(h1["x-ratelimit-remaining"]) == int(h1["x-ratelimit-limit"]) - 1
    assert json.loads(b2)["filled_qty"] == "3"
    assert h3["connection"] == "close" and [p["qty"] for p in json.loads(b3)] == ["3"]


async def test_http_1_0_gets_one_response_and_a_close(broker: PaperBroker) -> None:
    [(status, headers, body)] = await exchange(broker, wire_request("GET", "/v2/account", version="1.0"))
    assert status == 200 and headers["connection"] == "close" and headers["content-type"] == "application/json; charset=UTF-8"
    assert json.loads(body)["status"] == "ACTIVE"


LIMIT = 1024 * 1024  # request body limit; request heads are limited to 64 KiB


@pytest.mark.parametrize(
    ("wire", "status", "message"),
    [
        (b"garbage\r\n\r\n", 400, "malformed request"),
        (wire_request("GET", "/v2/account", extra=f"X-Pad: {'p' * 70_000}\r\n"), 413, "request header too large"),
        (wire_request("GET", "/v2/account", extra=f"X-Pad: {'p' * 60_000}\r\n"), 200, None),
        (wire_request("POST", "/v2/orders", extra=f"Content-Length: {LIMIT + 1}\r\n"), 413, "request body too large"),
        (wire_request("POST", "/v2/orders", b"{" + b" " * (LIMIT - 2) + b"}"), 422, None),  # at the limit: read, then validated
        (wire_request("POST", "/v2/orders", extra="Transfer-Encoding: chunked\r\n") + b"zz\r\n", 400, "malformed chunked body"),
        (wire_request("POST", "/v2/orders", extra="Transfer-Encoding: chunked\r\n") + b"%x\r\n" % (LIMIT + 1) + b"x" * (LIMIT + 1), 413, "request body too large"),
    ],
    ids=["bad-request-line", "head-over-64k", "head-under-64k", "body-over-1m", "body-at-1m", "bad-chunk", "chunked-over-1m"],
)
async def test_request_limits_and_malformed_requests(broker: PaperBroker, wire: bytes, status: int, message: str | None) -> None:
    if message is None:
        wire += wire_request("GET", "/v2/account", extra="Connection: close\r\n")  # the connection lives on
    replies = await exchange(broker, wire)
    assert replies[0][0] == status
    if message is not None:
        assert replies == [(status, replies[0][1], json.dumps({"code": 40010000, "message": message}, separators=(",", ":")).encode())]
        assert replies[0][1]["connection"] == "close"
    else:
        assert [r[0] for r in replies] == [status, 200]


async def stream_handshake(broker: PaperBroker, path: str, *, then: bytes = b"") -> tuple[WsResponse, list[Frame]]:
    client = ClientProtocol(parse_uri(broker.stream_url.removesuffix("/stream") + path))
    client.send_request(client.connect())
    reader, writer = await asyncio.open_connection(*broker.base_url.removeprefix("http://").split(":"))
    writer.write(b"".join(client.data_to_send()) + then)  # the handshake and the first frame in one write
    events: list[object] = []
    while not events or (then and len(events) < 2):
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            client.receive_eof()
            events += client.events_received()
            break
        client.receive_data(data)
        events += client.events_received()
    writer.close()
    return events[0], events[1:]  # type: ignore[return-value]


async def test_stream_upgrade_hands_bytes_sent_behind_the_handshake_to_websockets(broker: PaperBroker) -> None:
    auth = {"action": "authenticate", "data": {"key_id": "tickforge-sim", "secret_key": "tickforge-sim-secret"}}
    frame = Frame(Opcode.TEXT, json.dumps(auth).encode()).serialize(mask=True)
    response, frames = await stream_handshake(broker, "/stream", then=frame)
    assert response.status_code == 101
    assert json.loads(frames[0].data) == {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}


async def test_upgrade_anywhere_but_stream_is_404(broker: PaperBroker) -> None:
    response, _ = await stream_handshake(broker, "/v2/stream")
    assert response.status_code == 404


# --- the trade_updates stream ----------------------------------------------------------------------


async def test_trade_updates_stream_authenticate_listen_and_binary_events(broker: PaperBroker, http: httpx.AsyncClient) -> None:
    async with websockets.connect(broker.stream_url) as ws:
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert json.loads(await ws.recv())["data"]["status"] == "unauthorized"
        await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": "tickforge-sim", "secret_key": "tickforge-sim-secret"}}))
        reply = await ws.recv()
        assert isinstance(reply, bytes)  # Alpaca's trade_updates stream uses binary frames
        assert json.loads(reply) == {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert json.loads(await ws.recv()) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}

        placed = (await order(http, symbol="AAPL", side="buy", qty=150)).json()
        events = [json.loads(await ws.recv()) for _ in range(3)]
        assert [e["stream"] for e in events] == ["trade_updates"] * 3
        assert [e["data"]["event"] for e in events] == ["new", "partial_fill", "fill"]
        fills = [e["data"] for e in events[1:]]
        assert [(f["qty"], f["price"], f["position_qty"]) for f in fills] == [("100", "100.01", "100"), ("50", "100.02", "150")]
        assert fills[0]["execution_id"] != fills[1]["execution_id"]
        assert fills[1]["order"]["id"] == placed["id"] and fills[1]["order"]["filled_qty"] == "150"
        assert fills[0]["order"]["filled_qty"] == "100"  # each event carries the order as it was then


async def test_trade_updates_rejects_bad_credentials_and_refused_upgrade(broker: PaperBroker) -> None:
    async with websockets.connect(broker.stream_url) as ws:
        await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": "tickforge-sim", "secret_key": "nope"}}))
        assert json.loads(await ws.recv())["data"]["status"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
    broker.faults.refuse_streams = True
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(broker.stream_url):
            pass
    assert refused.value.response.status_code == 503


# --- the official SDK, unmodified --------------------------------------------------------------------


async def test_alpaca_py_trading_client_works_against_the_broker(broker: PaperBroker) -> None:
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

    def session() -> tuple:
        client = TradingClient(SIM.key_id.get_secret_value(), SIM.secret_key.get_secret_value(), url_override=broker.base_url)
        bought = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=120, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        resting = client.submit_order(
            LimitOrderRequest(symbol="MSFT", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=390.0, client_order_id="sdk-1")
        )
        by_client = client.get_order_by_client_id("sdk-1")
        positions = client.get_all_positions()
        account = client.get_account()
        cancels = client.cancel_orders()
        return bought, resting, by_client, positions, account, cancels

    bought, resting, by_client, positions, account, cancels = await asyncio.to_thread(session)
    assert bought.status == OrderStatus.FILLED and float(bought.filled_qty) == 120
    assert resting.status == OrderStatus.NEW and by_client.id == resting.id
    assert [(p.symbol, p.qty) for p in positions] == [("AAPL", "120")]
    assert float(account.cash) == pytest.approx(1_000_000 - (100 * 100.01 + 20 * 100.02))
    assert [str(c.id) for c in cancels] == [str(resting.id)] and cancels[0].status == 200


# --- HTTP/1.1 request parsing: exact limits, pacing of pipelined requests, framing -------------------


def padded_request(size: int, *, extra: str = "") -> bytes:
    """A GET /v2/account whose head is exactly ``size`` bytes long, blank line included."""
    base = wire_request("GET", "/v2/account", extra=extra + "X-Pad: \r\n")
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (size - len(base)), 1)


@pytest.mark.parametrize(("size", "status"), [(64 * 1024 - 1, 200), (64 * 1024, 200), (64 * 1024 + 1, 413)])
async def test_request_head_limit_is_exact(broker: PaperBroker, size: int, status: int) -> None:
    wire = padded_request(size, extra="Connection: close\r\n")
    assert len(wire) == size
    [(got, _, _)] = await exchange(broker, wire)
    assert got == status


async def test_a_head_trickled_in_pieces_is_read_and_still_limited(broker: PaperBroker) -> None:
    host, port = broker.base_url.removeprefix("http://").split(":")
    for wire, status in ((padded_request(64 * 1024, extra="Connection: close\r\n"), 200), (padded_request(64 * 1024 + 1), 413)):
        reader, writer = await asyncio.open_connection(host, int(port))
        for i in range(0, len(wire), 4096):
            writer.write(wire[i : i + 4096])
            await writer.drain()
            await asyncio.sleep(0.001)
        received = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert received.startswith(b"HTTP/1.1 %d " % status)


async def test_pipelined_requests_behind_a_chunked_body_wait_their_turn(broker: PaperBroker) -> None:
    # chunk data holding CRLF CRLF, chunk extensions and a trailer; then two more requests in the same write
    body = b'{"symbol":"AAPL","side":"buy",\r\n\r\n"qty":"2","type":"market","time_in_force":"day"}'
    chunked = b"%x;ext=1\r\n%s\r\n0\r\nHost: trailer\r\n\r\n" % (len(body), body)  # a trailer is no second Host
    wire = (
        wire_request("POST", "/v2/orders", extra="Transfer-Encoding: chunked\r\n") + chunked
        + wire_request("POST", "/v2/orders", json.dumps({"symbol": "AAPL", "side": "sell", "qty": "1", "type": "market", "time_in_force": "day"}).encode())
        + wire_request("GET", "/v2/positions", extra="Connection: close\r\n")
    )
    (s1, _, b1), (s2, _, b2), (s3, _, b3) = await exchange(broker, wire)
    assert (s1, s2, s3) == (200, 200, 200)
    assert (json.loads(b1)["filled_qty"], json.loads(b2)["side"]) == ("2", "sell")
    assert [p["qty"] for p in json.loads(b3)] == ["1"]


async def test_blank_lines_before_a_request_are_skipped(broker: PaperBroker) -> None:
    [(status, _, _)] = await exchange(broker, b"\r\n\r\n\r\n" + wire_request("GET", "/v2/account", extra="Connection: close\r\n"))
    assert status == 200


@pytest.mark.parametrize(
    "wire",
    [
        b"GET /v2/account HTTP/1.1\r\nAPCA-API-KEY-ID: x\r\n\r\n",  # HTTP/1.1 requires Host
        wire_request("GET", "/v2/account", extra="Host: again\r\n"),  # one Host only
        wire_request("POST", "/v2/orders", b"{}", extra="Transfer-Encoding: chunked\r\n"),  # both framings
        wire_request("GET", "/v2/account", extra="Content-Length: x\r\n"),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to the plain-HTTP port: refused without waiting
    ],
    ids=["no-host", "two-hosts", "length-and-chunked", "bad-length", "tls-hello"],
)
async def test_more_malformed_requests_are_400(broker: PaperBroker, wire: bytes) -> None:
    replies = await exchange(broker, wire)
    assert replies == [(400, replies[0][1], b'{"code":40010000,"message":"malformed request"}')]
    assert replies[0][1]["connection"] == "close"


async def test_bare_lf_line_ends_in_a_head_are_read_as_h11_read_them(broker: PaperBroker) -> None:
    wire = wire_request("GET", "/v2/account").replace(b"\r\n", b"\n") + wire_request("GET", "/v2/account", extra="Connection: close\r\n")
    assert [status for status, _, _ in await exchange(broker, wire)] == [200, 200]


async def test_http_1_0_needs_no_host(broker: PaperBroker) -> None:
    [(status, headers, _)] = await exchange(broker, b"GET /v2/account HTTP/1.0\r\n" + wire_request("GET", "/").split(b"\r\n", 2)[2])
    assert status == 200 and headers["connection"] == "close"


async def test_a_client_that_hangs_up_mid_body_gets_no_answer(broker: PaperBroker) -> None:
    host, port = broker.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(wire_request("POST", "/v2/orders", extra="Content-Length: 100\r\n") + b'{"symbol"')
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert broker.orders() == []


async def test_head_gets_the_headers_without_the_body(broker: PaperBroker) -> None:
    host, port = broker.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(wire_request("HEAD", "/v2/account", extra="Connection: close\r\n"))
    received = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ") and b"Content-Length: 48" in head and body == b""


async def test_responses_are_framed_as_h11_framed_them(broker: PaperBroker) -> None:
    from engine.sim.broker import _http_response

    def by_h11(request: bytes, status: int, headers: list[tuple[str, str]], payload: bytes, reason: str) -> bytes:
        server = h11.Connection(h11.SERVER)
        server.receive_data(request)
        server.next_event()
        wire = server.send(h11.Response(status_code=status, headers=headers, reason=reason))
        if payload:
            wire += server.send(h11.Data(data=payload))
        return wire + server.send(h11.EndOfMessage())

    json_headers = [("Content-Type", "application/json; charset=UTF-8"), ("Content-Length", "2")]
    rate = [("X-Ratelimit-Limit", "200"), ("Retry-After", "1")]
    keep = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    old = b"GET / HTTP/1.0\r\n\r\n"
    assert _http_response(200, b"{}", rate) == by_h11(keep, 200, json_headers + rate, b"{}", "OK")
    assert _http_response(422, b"{}", rate, close=True) == by_h11(old, 422, json_headers + rate, b"{}", "Unprocessable Entity")
    assert _http_response(204, None) == by_h11(keep, 204, [], b"", "No Content")
    assert _http_response(404, None, close=True) == by_h11(old, 404, [("Content-Length", "0")], b"", "Not Found")


async def test_an_orders_events_follow_its_response_and_survive_a_dropped_one(broker: PaperBroker, http: httpx.AsyncClient) -> None:
    async with websockets.connect(broker.stream_url) as ws:
        await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": "tickforge-sim", "secret_key": "tickforge-sim-secret"}}))
        await ws.recv()
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        await ws.recv()
        broker.faults.drop_after_accept = 1
        with pytest.raises(httpx.RemoteProtocolError):
            await order(http, symbol="AAPL", side="buy", qty=1, client_order_id="dropped")
        events = [json.loads(await asyncio.wait_for(ws.recv(), 5))["data"] for _ in range(2)]
        assert [(e["event"], e["order"]["client_order_id"]) for e in events] == [("new", "dropped"), ("fill", "dropped")]
        assert events[0]["order"]["status"] == "new" and events[1]["order"]["status"] == "filled"


def read_requests(*pieces: bytes) -> list[tuple[str, str, bytes]]:
    """Feed ``pieces`` to the broker's request reader as separate reads; the requests it yields, in order."""
    from engine.sim.broker import _RequestReader

    incoming, out, request = _RequestReader(), [], None
    for piece in pieces:
        incoming.feed(piece)
        while True:
            if request is None:
                request = incoming.next_head()
                if request is None:
                    break
            body = incoming.body()
            if body is None:
                break
            out.append((request.method, request.target, body))
            request = None
    return out


def test_the_request_reader_gives_the_same_requests_however_the_bytes_are_split() -> None:
    chunked = b"5\r\n{\r\n\r\n\r\n0\r\nX-T: t\r\n\r\n"  # chunk data that is itself CRLF CRLF
    wire = (
        wire_request("POST", "/a", extra="Transfer-Encoding: chunked\r\n") + chunked
        + wire_request("POST", "/b?x=1", b'{"k":1}')
        + b"\r\n" + wire_request("GET", "/c")
    )
    expected = [("POST", "/a", b"{\r\n\r\n"), ("POST", "/b?x=1", b'{"k":1}'), ("GET", "/c", b"")]
    assert read_requests(wire) == expected
    for cut in range(1, len(wire)):
        assert read_requests(wire[:cut], wire[cut:]) == expected, cut
    assert read_requests(*(wire[i : i + 1] for i in range(len(wire)))) == expected


def test_a_parsed_request_never_shows_its_credentials() -> None:
    from engine.sim.broker import _RequestReader

    incoming = _RequestReader()
    incoming.feed(wire_request("GET", "/v2/account"))
    request = incoming.next_head()
    secret = SIM.secret_key.get_secret_value()
    assert request is not None and request.headers["apca-api-secret-key"] == secret
    assert secret not in repr(request) and secret not in str(request)


# --- answering in the loop turn the bytes arrive: pacing, faults, and the cached account figures -----


async def test_a_request_split_into_single_bytes_is_answered(broker: PaperBroker) -> None:
    body = json.dumps({"symbol": "AAPL", "side": "buy", "qty": "5", "type": "market", "time_in_force": "day"}).encode()
    wire = wire_request("POST", "/v2/orders", body, extra="Connection: close\r\n")
    reader, writer = await asyncio.open_connection(*broker.base_url.removeprefix("http://").split(":"))
    for i in range(len(wire)):
        writer.write(wire[i : i + 1])
        await writer.drain()
        if i % 16 == 0:
            await asyncio.sleep(0)  # separate segments, read one by one
    received = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and json.loads(answer)["filled_qty"] == "5"


async def test_a_delayed_request_holds_back_the_requests_behind_it(broker: PaperBroker) -> None:
    broker.faults.delay_s, broker.faults.delay_requests = 0.2, 1
    order_body = json.dumps({"symbol": "AAPL", "side": "buy", "qty": "1", "type": "market", "time_in_force": "day"}).encode()
    wire = wire_request("POST", "/v2/orders", order_body) + wire_request("GET", "/v2/positions", extra="Connection: close\r\n")
    started = time.monotonic()
    (s1, _, b1), (s2, _, b2) = await exchange(broker, wire)
    assert time.monotonic() - started >= 0.2
    assert (s1, s2) == (200, 200) and json.loads(b1)["status"] == "filled"
    assert [p["qty"] for p in json.loads(b2)] == ["1"]  # answered after the delayed order, in order
    assert broker.faults.delay_requests == 0


async def test_pipelined_requests_then_a_half_close_are_all_answered(broker: PaperBroker) -> None:
    reader, writer = await asyncio.open_connection(*broker.base_url.removeprefix("http://").split(":"))
    writer.write(wire_request("GET", "/v2/account") * 3)
    writer.write_eof()
    received = await asyncio.wait_for(reader.read(), 5)  # the broker answers all three, then closes
    writer.close()
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3


async def test_a_bad_request_behind_a_good_one_gets_a_400_and_a_close(broker: PaperBroker) -> None:
    (s1, _, _), (s2, headers, body) = await exchange(broker, wire_request("GET", "/v2/account") + b"\x00BAD\r\n\r\n")
    assert (s1, s2) == (200, 400) and headers["connection"] == "close"
    assert json.loads(body) == {"code": 40010000, "message": "malformed request"}


async def test_buying_power_follows_resting_orders_fills_and_book_changes(http: httpx.AsyncClient, book: StaticBook) -> None:
    async def buying_power() -> Decimal:
        return Decimal((await http.get("/v2/account")).json()["buying_power"])

    start = await buying_power()
    await order(http, symbol="AAPL", side="buy", qty=10, type="limit", limit_price="99.00")
    await order(http, symbol="MSFT", side="buy", qty=2, type="limit", limit_price="390.00")
    resting = await order(http, symbol="MSFT", side="sell", qty=100, type="limit", limit_price="401.00")
    assert await buying_power() == start - 10 * Decimal("99.00") - 2 * Decimal("390.00") - 100 * Decimal("401.00")
    book.set_book("MSFT", [(401.50, 60.0)], [(402.00, 50.0)])  # the resting sell fills 60 at its limit

    async def sold() -> bool:
        return (await http.get(f"/v2/orders/{resting.json()['id']}")).json()["filled_qty"] == "60"

    await eventually(sold)
    account = (await http.get("/v2/account")).json()
    short_mv = -60 * Decimal("401.75")  # marked at the new mid
    # cash went up by the sale; the short's market value counts twice (equity, and buying power used);
    # the 40 still resting and the AAPL buy hold theirs; the MSFT buy now closes short first: it needs none
    expected = Decimal(account["cash"]) + 2 * short_mv - 10 * Decimal("99.00") - 40 * Decimal("401.00")
    assert Decimal(account["buying_power"]) == expected


def test_reserved_sums_exactly_as_order_by_order_however_many_digits() -> None:
    source = StaticBook({"X/USD": ([(1.0, 1e12)], [(3.0, 1e12)]), "Y/USD": ([(1.0, 1e12)], [(3.0, 1e12)])})
    broker = PaperBroker(source, SimConfig(starting_cash=1e15))
    # tiny and huge resting orders: once both are in, the exact sum needs more digits than a Decimal
    # keeps, and it must round just as adding order by order did
    prices = [("X/USD", "1.0001"), ("Y/USD", "2.9999"), ("X/USD", "2.1234"), ("Y/USD", "1.0002")]
    for i, (symbol, price) in enumerate(prices * 3):
        qty = "9999999999.123456789" if i % 2 else "0.000000000000001"
        broker._submit(json.dumps({"symbol": symbol, "side": "buy", "type": "limit", "time_in_force": "gtc",
                                   "qty": qty, "limit_price": price}).encode())
        assert broker._reserved() == broker._reserved_one_by_one()
    source.set_book("X/USD", [(1.5, 1e12)], [(2.5, 1e12)])
    assert broker._reserved() == broker._reserved_one_by_one()


# --- what is built once and reused ------------------------------------------------------------------


def test_an_orders_json_is_encoded_once_per_state_and_again_when_it_changes() -> None:
    import msgspec

    from engine.sim.broker import _Order

    o = _Order(id="i", client_order_id="c", symbol="AAPL", asset_id="a", crypto=False, side="buy", type="limit",
               time_in_force="day", qty=Decimal(3), limit_price=Decimal("100.5"), stop_price=None,
               extended_hours=False, created_ns=1_704_205_800_000_001_000)
    first = o.wire()
    assert o.wire() is first and first == msgspec.json.encode(o.to_json())
    states = [first]
    for change in (
        lambda: setattr(o, "updated_ns", o.updated_ns + 1000),
        lambda: (setattr(o, "filled_qty", Decimal(1)), setattr(o, "filled_notional", Decimal("100.5")), setattr(o, "status", "partially_filled")),
        lambda: setattr(o, "filled_notional", Decimal("100.4")),  # same qty, another price
        lambda: (setattr(o, "status", "canceled"), setattr(o, "canceled_ns", 1_704_205_801_000_000_000)),
    ):
        change()
        assert o.wire() == msgspec.json.encode(o.to_json()) and o.wire() not in states
        states.append(o.wire())


async def test_an_orders_response_and_events_carry_its_json_as_it_was(broker: PaperBroker, http: httpx.AsyncClient) -> None:
    async with websockets.connect(broker.stream_url) as ws:
        await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": "tickforge-sim", "secret_key": "tickforge-sim-secret"}}))
        await ws.recv()
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        await ws.recv()
        response = await order(http, symbol="AAPL", side="buy", qty=150)
        events = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
        canceled = await order(http, symbol="AAPL", side="buy", qty=1, type="limit", limit_price="90")
        await http.delete(f"/v2/orders/{canceled.json()['id']}")
        events += [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)]
    orders = [json.loads(e)["data"]["order"] for e in events]
    assert [o["status"] for o in orders] == ["new", "partially_filled", "filled", "new", "canceled"]
    assert events[2].split(b'"order":', 1)[1].startswith(response.content)  # the response's bytes, as they are
    assert orders[2] == response.json() == (await http.get(f"/v2/orders/{orders[2]['id']}")).json()
    assert orders[4] == (await http.get(f"/v2/orders/{orders[4]['id']}")).json() != orders[3]
    assert [o["id"] for o in (await http.get("/v2/orders", params={"status": "all"})).json()] == [orders[4]["id"], orders[2]["id"]]


class _Written:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


def test_trade_updates_frames_built_once_are_what_the_protocol_writes() -> None:
    import logging

    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from engine.sim.broker import _binary_frames, _StreamClient

    payloads = [b'{"stream":"trade_updates"}', b"x" * 200, b"y" * 70_000]  # the three length encodings
    written = []
    for debug in (False, True):
        logger = logging.getLogger("test_broker.frames")
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
        protocol = ServerProtocol(logger=logger)
        protocol.state = State.OPEN
        by_protocol, prebuilt = _StreamClient(protocol, _Written()), _StreamClient(protocol, _Written())  # type: ignore[arg-type]
        by_protocol.send(*payloads)
        prebuilt.send_framed(_binary_frames(payloads), payloads)  # with frame logging on: through the protocol
        written.append((by_protocol.transport.data, prebuilt.transport.data))
    assert all(a == b for a, b in written) and written[0] == written[1]
    protocol.state = State.CLOSING
    closing = _StreamClient(protocol, _Written())  # type: ignore[arg-type]
    closing.send_framed(_binary_frames(payloads), payloads)
    assert closing.transport.data == b""


async def test_account_values_follow_fills_and_book_changes(http: httpx.AsyncClient, book: StaticBook) -> None:
    await order(http, symbol="AAPL", side="buy", qty=10)
    before = (await http.get("/v2/account")).json()
    assert before == (await http.get("/v2/account")).json()
    book.set_book("AAPL", [(109.99, 100.0)], [(110.01, 100.0)])  # marks move: long market value with them
    moved = (await http.get("/v2/account")).json()
    assert Decimal(moved["long_market_value"]) == 10 * Decimal("110.00") != Decimal(before["long_market_value"])
    await order(http, symbol="MSFT", side="sell", qty=5)  # a fill with no book change
    after = (await http.get("/v2/account")).json()
    assert Decimal(after["short_market_value"]) == -5 * Decimal("400.00")
    assert Decimal(after["long_market_value"]) == Decimal(moved["long_market_value"])


def test_new_ids_are_uuid4_text_as_the_uuid_module_writes_it() -> None:
    import uuid

    from engine.sim.broker import _uuid4

    ids = {_uuid4() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_an_event_encoded_after_its_order_moved_on_carries_the_order_as_it_was() -> None:
    import msgspec

    from engine.sim.broker import _Order

    o = _Order(id="i", client_order_id="c", symbol="AAPL", asset_id="a", crypto=False, side="buy", type="market",
               time_in_force="day", qty=Decimal(2), limit_price=None, stop_price=None, extended_hours=False,
               created_ns=1_704_205_800_000_001_000, updated_ns=1_704_205_800_000_001_000)
    new_state, as_new = o.state(), msgspec.json.encode(o.to_json())
    o.filled_qty, o.filled_notional, o.status, o.filled_ns = Decimal(2), Decimal("201"), "filled", 1_704_205_800_000_002_000
    o.updated_ns = o.filled_ns
    filled = o.wire()
    assert o.wire(new_state) == as_new and o.wire(o.state()) is filled and o.wire() is filled


async def test_uuids_in_responses_and_events(broker: PaperBroker, http: httpx.AsyncClient) -> None:
    import uuid

    async with websockets.connect(broker.stream_url) as ws:
        await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": "tickforge-sim", "secret_key": "tickforge-sim-secret"}}))
        await ws.recv()
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        await ws.recv()
        body = (await order(http, symbol="AAPL", side="buy", qty=1)).json()
        events = [json.loads(await asyncio.wait_for(ws.recv(), 5))["data"] for _ in range(2)]
    for text in (body["id"], body["client_order_id"], events[1]["execution_id"]):
        assert uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
    assert [e["event"] for e in events] == ["new", "fill"] and events[0]["order"]["status"] == "new"
    assert events[1]["order"] == body


ODD_ORDER_BODIES = [
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1"}',  # the usual: msgspec's
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1","qty":"2"}',  # last one wins
    b' \n{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1","extended_hours":null} ',
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":1}',
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":1.50}',
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":NaN}',
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":Infinity}',
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":1e400}',
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":123456789012345678901234567890}',
    b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":true}',
    b'{"symbol":"AAPL","side":[1.5],"type":"market","time_in_force":"day","qty":"1"}',
    b'{"symbol":"AAPL","side":{"a":1.5},"type":"market","time_in_force":"day","qty":"1"}',
    b'{"symbol":"AAPL","side":"\\ud800","type":"market","time_in_force":"day","qty":"1"}',
    b'{"symbol":"AAPL","side":"\xed\xa0\x80","type":"market","time_in_force":"day","qty":"1"}',
    b'{"symbol":"AAPL","side":"\xff","type":"market","time_in_force":"day","qty":"1"}',
    b'{"symbol":"AAPL","side":"\\ud83d\\ude00","type":"market","time_in_force":"day","qty":"1"}',
    b'\xef\xbb\xbf{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1"}',
    '{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1"}'.encode("utf-16-le"),
    '{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1"}'.encode("utf-32"),
    b'{"symbol":"AAPL","side":"x\x01","type":"market","time_in_force":"day","qty":"1"}',
    b'{"symbol":"AAPL","side":"buy","qty":"1",}',
    b'{"symbol":"AAPL","side":"buy","qty":"1"} x',
    b'["symbol","AAPL"]',
    b'"AAPL"',
    b"null",
    b"[" * 100_000 + b"]" * 100_000,
]


def _decoded(decode, body: bytes) -> object:  # noqa: ANN001 - a decoder
    try:
        return ("ok", repr(decode(body)))  # repr: NaN compares unequal to itself
    except Exception as exc:  # noqa: BLE001 - what either decoder raises is the point
        return ("error", type(exc))


@pytest.mark.parametrize("body", ODD_ORDER_BODIES)
def test_an_order_body_decodes_as_json_decodes_it(body: bytes) -> None:
    from engine.sim.broker import _json_loads_decimal, _order_fields

    assert _decoded(_order_fields, body) == _decoded(_json_loads_decimal, body)


async def test_odd_order_bodies_get_the_answers_json_decoding_gives(broker: PaperBroker, http: httpx.AsyncClient) -> None:
    from engine.sim import broker as module

    answers = {}
    for decode in (module._order_fields, module._json_loads_decimal):
        module_decode, module._order_fields = module._order_fields, decode
        try:
            for i, body in enumerate(ODD_ORDER_BODIES[:-1]):  # the deeply nested one drops the connection either way
                body = body.replace(b'"qty"', f'"client_order_id":"{decode.__name__}-{i}","qty"'.encode(), 1)
                try:
                    r = await http.post("/v2/orders", content=body, headers={"Content-Type": "application/json"})
                except httpx.RemoteProtocolError:  # a lone surrogate in an error message: no answer either way
                    answers.setdefault(i, []).append(("dropped", None))
                    continue
                answers.setdefault(i, []).append((r.status_code, r.json() if r.status_code != 200 else r.json()["qty"]))
        finally:
            module._order_fields = module_decode
    assert all(fast == slow for fast, slow in answers.values()), answers
    assert answers[0][0] == (200, "1") and answers[1][0] == (200, "2") and answers[5][0][0] == 422
