"""The embedded exchange speaks Alpaca's market-data protocol: checked with raw WebSocket clients
and with the unmodified official SDK (alpaca-py), over real sockets."""

from __future__ import annotations

import asyncio
import json
import threading

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine.config import SimConfig
from engine.events import SIDE_ASK, SIDE_BID
from engine.sim.exchange import MarketDataServer, _msgpack_array_header, _Session
from engine.sim.market import LiquiditySource, MessageLoop, SyntheticMarket

KEY, SECRET = "test-key", "test-secret"
CONFIG = SimConfig(key_id=KEY, secret_key=SECRET, messages_per_s=2000, seed=3)
AUTH = {"action": "auth", "key": KEY, "secret": SECRET}


def market() -> SyntheticMarket:
    return SyntheticMarket(["AAPL", "MSFT", "SPY", "BTC/USD", "ETH/USD"], seed=3)


async def recv_json(ws) -> list[dict]:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def subscribe_all(ws) -> None:
    """Connected, authenticated, subscribed to every trade and quote; the replies are consumed."""
    await recv_json(ws)
    await ws.send(json.dumps(AUTH))
    await recv_json(ws)
    await ws.send(json.dumps({"action": "subscribe", "trades": ["*"], "quotes": ["*"]}))
    await recv_json(ws)


async def recv_until(ws, predicate, limit: int = 500) -> dict:
    for _ in range(limit):
        for msg in await recv_json(ws):
            if predicate(msg):
                return msg
    raise AssertionError("message not seen")


async def test_handshake_auth_and_subscription_replies_list_the_full_set():
    async with MarketDataServer(market(), CONFIG) as server:
        async with connect(server.url_for("iex")) as ws:
            assert await recv_json(ws) == [{"T": "success", "msg": "connected"}]
            await ws.send(json.dumps({"action": "subscribe", "trades": ["AAPL"]}))
            assert await recv_json(ws) == [{"T": "error", "code": 401, "msg": "not authenticated"}]
            await ws.send(json.dumps(AUTH))
            assert await recv_json(ws) == [{"T": "success", "msg": "authenticated"}]
            await ws.send(json.dumps(AUTH))
            assert await recv_json(ws) == [{"T": "error", "code": 403, "msg": "already authenticated"}]
            await ws.send(json.dumps({"action": "subscribe", "trades": ["AAPL"], "quotes": ["MSFT", "SPY"]}))
            sub = await recv_until(ws, lambda m: m["T"] == "subscription")
            assert sub == {
                "T": "subscription", "trades": ["AAPL"], "quotes": ["MSFT", "SPY"], "bars": [], "updatedBars": [],
                "dailyBars": [], "statuses": [], "lulds": [], "corrections": ["AAPL"], "cancelErrors": ["AAPL"],
            }
            await ws.send(json.dumps({"action": "subscribe", "bars": ["*"]}))
            sub = await recv_until(ws, lambda m: m["T"] == "subscription")
            assert sub["trades"] == ["AAPL"] and sub["quotes"] == ["MSFT", "SPY"] and sub["bars"] == ["*"]
            await ws.send(json.dumps({"action": "unsubscribe", "quotes": ["SPY"]}))
            sub = await recv_until(ws, lambda m: m["T"] == "subscription")
            assert sub["quotes"] == ["MSFT"] and sub["trades"] == ["AAPL"]
            # data only for what is subscribed
            for _ in range(20):
                for msg in await recv_json(ws):
                    if msg["T"] == "q":
                        assert msg["S"] == "MSFT"
                    elif msg["T"] == "t":
                        assert msg["S"] == "AAPL"
                    else:
                        assert msg["T"] in ("b", "subscription")


async def test_data_frames_are_batched_and_shaped_like_alpaca():
    async with MarketDataServer(market(), CONFIG.model_copy(update={"messages_per_s": 20_000})) as server:
        async with connect(server.url_for("iex")) as ws:
            await subscribe_all(ws)
            sizes = []
            for _ in range(10):
                frame = await recv_json(ws)
                sizes.append(len(frame))
                for msg in frame:
                    assert msg["S"] in ("AAPL", "MSFT", "SPY")  # "*" on a stock feed: stocks only
                    keys = set(msg)
                    assert keys == ({"T", "S", "i", "x", "p", "s", "t", "c", "z"} if msg["T"] == "t" else {"T", "S", "bx", "bp", "bs", "ax", "ap", "as", "t", "c", "z"})
                    assert msg["t"].endswith("Z") and msg["t"][10] == "T"
            assert max(sizes) > 1


async def _mean_frame_size(interval_ms: float, frames: int = 25) -> float:
    cfg = CONFIG.model_copy(update={"messages_per_s": 20_000, "frame_interval_ms": interval_ms})
    async with MarketDataServer(market(), cfg) as server:
        async with connect(server.url_for("iex")) as ws:
            await subscribe_all(ws)
            await recv_json(ws)  # the first data frame may hold a partial interval
            sizes = [len(await recv_json(ws)) for _ in range(frames)]
    return sum(sizes) / len(sizes)


async def test_frame_interval_sets_how_many_messages_a_frame_carries():
    # 20k msg/s over three stock symbols: about 20 messages per 1 ms interval, about 400 per 20 ms
    small, large = await _mean_frame_size(1.0), await _mean_frame_size(20.0)
    assert small < 120 and large > 150 and large > 3 * small


@pytest.mark.parametrize("interval_ms", [0.0, -1.0, 1000.5])
def test_frame_interval_outside_its_range_is_a_config_error(interval_ms):
    with pytest.raises(ValueError, match="frame_interval_ms"):
        SimConfig(frame_interval_ms=interval_ms)


async def test_msgpack_is_negotiated_by_content_type_and_crypto_orderbooks_start_with_a_reset():
    async with MarketDataServer(market(), CONFIG) as server:
        async with connect(server.url_for("crypto"), additional_headers={"Content-Type": "application/msgpack"}) as ws:
            first = await ws.recv()
            assert isinstance(first, bytes) and msgspec.msgpack.decode(first) == [{"T": "success", "msg": "connected"}]
            await ws.send(msgspec.msgpack.encode(AUTH))
            assert msgspec.msgpack.decode(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
            await ws.send(msgspec.msgpack.encode({"action": "subscribe", "orderbooks": ["BTC/USD"]}))
            sub = msgspec.msgpack.decode(await ws.recv())[0]
            assert sub == {"T": "subscription", "trades": [], "quotes": [], "bars": [], "updatedBars": [], "dailyBars": [], "orderbooks": ["BTC/USD"]}
            raw = await ws.recv()
            assert b"\xd7\xff" in raw or b"\xc7\x0c\xff" in raw or b"\xd6\xff" in raw  # timestamp ext -1
            snapshot = msgspec.msgpack.decode(raw)[0]
            assert snapshot["T"] == "o" and snapshot["S"] == "BTC/USD" and snapshot["r"] is True
            assert len(snapshot["b"]) == 10 and len(snapshot["a"]) == 10
            bids = [lv["p"] for lv in snapshot["b"]]
            assert bids == sorted(bids, reverse=True) and bids[0] < snapshot["a"][0]["p"]


async def test_header_auth():
    async with MarketDataServer(market(), CONFIG) as server:
        async with connect(server.url_for("iex"), additional_headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}) as ws:
            assert await recv_json(ws) == [{"T": "success", "msg": "connected"}]
            assert await recv_json(ws) == [{"T": "success", "msg": "authenticated"}]
        async with connect(server.url_for("iex"), additional_headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": "nope"}) as ws:
            await recv_json(ws)
            assert await recv_json(ws) == [{"T": "error", "code": 402, "msg": "auth failed"}]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ("{not json", 400),
        (json.dumps({"action": "dance"}), 400),
        (json.dumps(["auth"]), 400),
    ],
)
async def test_invalid_syntax(request_, code):
    async with MarketDataServer(market(), CONFIG) as server:
        async with connect(server.url_for("iex")) as ws:
            await recv_json(ws)
            await ws.send(request_)
            assert await recv_json(ws) == [{"T": "error", "code": code, "msg": "invalid syntax"}]


async def test_bad_credentials_get_402_and_are_disconnected():
    async with MarketDataServer(market(), CONFIG) as server:
        async with connect(server.url_for("iex")) as ws:
            await recv_json(ws)
            await ws.send(json.dumps({"action": "auth", "key": KEY, "secret": SECRET + "x"}))
            assert await recv_json(ws) == [{"T": "error", "code": 402, "msg": "auth failed"}]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert server.stats.auth_failures == 1


async def test_auth_timeout_404():
    async with MarketDataServer(market(), CONFIG, auth_timeout_s=0.2) as server:
        async with connect(server.url_for("iex")) as ws:
            await recv_json(ws)
            assert await recv_json(ws) == [{"T": "error", "code": 404, "msg": "auth timeout"}]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)


async def test_symbol_limit_405_on_both_sides_of_the_limit():
    async with MarketDataServer(market(), CONFIG, symbol_limit=3) as server:
        async with connect(server.url_for("iex")) as ws:
            await recv_json(ws)
            await ws.send(json.dumps(AUTH))
            await recv_json(ws)
            await ws.send(json.dumps({"action": "subscribe", "trades": ["AAPL", "MSFT"], "quotes": ["SPY"]}))
            sub = await recv_until(ws, lambda m: m["T"] in ("subscription", "error"))
            assert sub["T"] == "subscription"  # exactly at the limit: fine
            await ws.send(json.dumps({"action": "subscribe", "quotes": ["QQQ"]}))
            err = await recv_until(ws, lambda m: m["T"] in ("subscription", "error"))
            assert err == {"T": "error", "code": 405, "msg": "symbol limit exceeded"}
            await ws.send(json.dumps({"action": "subscribe", "bars": ["QQQ", "NFLX"]}))  # bars are not limited
            sub = await recv_until(ws, lambda m: m["T"] in ("subscription", "error"))
            assert sub["T"] == "subscription" and sub["quotes"] == ["SPY"] and sub["bars"] == ["NFLX", "QQQ"]


async def test_connection_limit_406():
    async with MarketDataServer(market(), CONFIG, connection_limit=1) as server:
        async with connect(server.url_for("iex")) as first:
            await recv_json(first)
            await first.send(json.dumps(AUTH))
            assert (await recv_json(first))[0]["msg"] == "authenticated"
            async with connect(server.url_for("crypto")) as other_stream:  # another endpoint: its own limit
                await recv_json(other_stream)
                await other_stream.send(json.dumps(AUTH))
                assert (await recv_json(other_stream))[0]["msg"] == "authenticated"
            async with connect(server.url_for("iex")) as second:
                await recv_json(second)
                await second.send(json.dumps(AUTH))
                assert await recv_json(second) == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]


async def test_sip_needs_a_subscription_409():
    async with MarketDataServer(market(), CONFIG) as server:
        async with connect(server.url_for("sip")) as ws:
            await recv_json(ws)
            await ws.send(json.dumps(AUTH))
            assert await recv_json(ws) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]
    async with MarketDataServer(market(), CONFIG, allow_sip=True) as server:
        async with connect(server.url_for("sip")) as ws:
            await recv_json(ws)
            await ws.send(json.dumps(AUTH))
            assert await recv_json(ws) == [{"T": "success", "msg": "authenticated"}]


async def test_invalid_subscribe_action_410():
    async with MarketDataServer(market(), CONFIG) as server:
        async with connect(server.url_for("iex")) as ws:
            await recv_json(ws)
            await ws.send(json.dumps(AUTH))
            await recv_json(ws)
            await ws.send(json.dumps({"action": "subscribe", "orderbooks": ["AAPL"]}))  # crypto only
            assert await recv_json(ws) == [{"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"}]
        async with connect(server.url_for("crypto")) as ws:
            await recv_json(ws)
            await ws.send(json.dumps(AUTH))
            await recv_json(ws)
            await ws.send(json.dumps({"action": "subscribe", "lulds": ["BTC/USD"]}))  # stocks only
            assert (await recv_json(ws))[0]["code"] == 410
            await ws.send(json.dumps({"action": "subscribe", "orderbooks": ["BTC/USD"]}))
            assert (await recv_json(ws))[0]["T"] == "subscription"


async def test_slow_client_407_is_disconnected():
    fast = CONFIG.model_copy(update={"messages_per_s": 50_000})
    async with MarketDataServer(market(), fast, slow_client_messages=2_000) as server:
        async with connect(server.url_for("iex"), max_queue=1) as ws:
            await recv_json(ws)
            await ws.send(json.dumps(AUTH))
            await recv_json(ws)
            await ws.send(json.dumps({"action": "subscribe", "quotes": ["*"], "trades": ["*"]}))
            # do not read: the server's queue for us grows past the limit
            for _ in range(200):
                if server.stats.errors_sent[407]:
                    break
                await asyncio.sleep(0.02)
            assert server.stats.errors_sent[407] == 1
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1008


async def test_unknown_path_is_refused():
    async with MarketDataServer(market(), CONFIG) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url + "/v2/nasdaq"):
                pass
        assert info.value.response.status_code == 404


async def test_faults_accept_then_close_and_restart_keep_the_port():
    async with MarketDataServer(market(), CONFIG) as server:
        url = server.url_for("iex")
        server.accept_then_close()
        async with connect(url) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        server.accept_then_close(False)
        async with connect(url) as ws:
            await recv_json(ws)
            await server.restart(down_s=0.05)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        async with connect(url) as ws:
            assert await recv_json(ws) == [{"T": "success", "msg": "connected"}]


def test_synthetic_market_is_deterministic_and_a_liquidity_source():
    a = SyntheticMarket(["AAPL", "BTC/USD"], seed=11)
    b = SyntheticMarket(["AAPL", "BTC/USD"], seed=11)
    assert a.step(500) == b.step(500)
    assert a.step(7) == b.step(7) and len(a.step(7)) == 7
    c = SyntheticMarket(["AAPL", "BTC/USD"], seed=12)
    assert c.step(50) != SyntheticMarket(["AAPL", "BTC/USD"], seed=11).step(50)
    assert isinstance(a, LiquiditySource)
    assert a.top_of_book("NOPE") is None and a.depth("NOPE", SIDE_BID, 5) == []
    for sym in a.symbols():
        bid_px, bid_sz, ask_px, ask_sz = a.top_of_book(sym)
        assert bid_px < ask_px and bid_sz > 0 and ask_sz > 0
        bids, asks = a.depth(sym, SIDE_BID, 5), a.depth(sym, SIDE_ASK, 5)
        assert len(bids) == 5 and bids[0] == (bid_px, bid_sz) and asks[0] == (ask_px, ask_sz)
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)


def test_market_listeners_hear_which_books_changed_and_quotes_follow_the_book():
    m = SyntheticMarket(["AAPL", "MSFT", "ETH/USD"], seed=5)
    heard: list[list[str]] = []
    m.add_listener(heard.append)
    msgs = m.step(300)
    assert heard and set(heard[0]) <= {"AAPL", "MSFT", "ETH/USD"}
    last_quote = {msg["S"]: msg for msg in msgs if msg["T"] == "q"}
    for sym, q in last_quote.items():
        assert m.top_of_book(sym) == (q["bp"], q["bs"], q["ap"], q["as"])
    assert not any(msg["T"] == "q" for msg in msgs if msg["S"] == "ETH/USD")  # crypto books go out as "o"
    assert any(msg["T"] == "o" for msg in msgs)


def test_minute_bars_aggregate_the_trades():
    m = SyntheticMarket(["AAPL"], seed=2, event_interval_ns=100_000_000)  # 600 messages a minute
    msgs = m.step(2000)
    bars = [x for x in msgs if x["T"] == "b"]
    assert bars
    first_minute = bars[0]["t"]
    trades = [x for x in msgs if x["T"] == "t" and first_minute <= x["t"] < first_minute + 60_000_000_000]
    bar = bars[0]
    assert bar["o"] == trades[0]["p"] and bar["c"] == trades[-1]["p"]
    assert bar["h"] == max(t["p"] for t in trades) and bar["l"] == min(t["p"] for t in trades)
    assert bar["n"] == len(trades) and bar["v"] == sum(t["s"] for t in trades)


def test_official_alpaca_sdk_receives_trades():
    """alpaca-py's StockDataStream, unmodified, against the embedded exchange (its loop in a thread)."""
    from alpaca.data.live import StockDataStream

    got: list[object] = []
    ready = threading.Event()
    state: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            async with MarketDataServer(market(), CONFIG) as server:
                state["url"] = server.url_for("iex")
                state["loop"] = asyncio.get_running_loop()
                stop = asyncio.Event()
                state["stop"] = stop
                ready.set()
                await stop.wait()

        asyncio.run(main())

    server_thread = threading.Thread(target=serve, daemon=True)
    server_thread.start()
    assert ready.wait(10)
    stream = StockDataStream(KEY, SECRET, url_override=str(state["url"]))

    async def on_trade(trade) -> None:
        got.append(trade)
        if len(got) >= 5:
            await stream.stop_ws()

    stream.subscribe_trades(on_trade, "AAPL", "MSFT")
    client_thread = threading.Thread(target=stream.run, daemon=True)
    client_thread.start()
    client_thread.join(timeout=30)
    loop = state["loop"]
    loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
    server_thread.join(timeout=10)
    assert not client_thread.is_alive(), "alpaca-py stream did not finish"
    assert len(got) >= 5
    for trade in got:
        assert trade.symbol in ("AAPL", "MSFT") and trade.price > 0 and trade.size > 0
        assert trade.timestamp.tzinfo is not None


@pytest.mark.parametrize(
    "subs",
    [
        {"trades": {"*"}, "quotes": {"*"}},  # the wildcard fast path
        {"trades": {"*"}},
        {"trades": {"*"}, "quotes": {"AAPL"}},  # mixed: the general path
        {"quotes": {"MSFT", "NOPE"}},
        {"trades": {"*", "AAPL"}, "quotes": {"*"}, "bars": {"*"}},
        {},
    ],
)
def test_select_gives_what_the_subscription_asks_for_on_either_path(subs):
    m = SyntheticMarket(["AAPL", "MSFT", "BTC/USD"], seed=4, event_interval_ns=50_000_000)
    msgs = m.step(3000) + [{"T": "t", "S": "ZZZZ", "p": 1.0}]  # a symbol outside the universe: never sent
    session = _Session(None, "iex", False, frozenset({"AAPL", "MSFT"}))  # type: ignore[arg-type]
    for channel, symbols in subs.items():
        session.subs[channel] = set(symbols)
    session.refresh_wants()
    assert (session.wildcard_types is not None) == (bool(subs) and all("*" in v for v in subs.values()))
    types = {"t": "trades", "q": "quotes", "b": "bars"}
    expected = [
        x for x in msgs
        if x["T"] in types and (wanted := subs.get(types[x["T"]]))
        and x["S"] in ({"AAPL", "MSFT"} if "*" in wanted else wanted)
    ]
    assert session.select(msgs) == expected
    assert any(x["T"] == "b" for x in msgs) and any(x["S"] == "BTC/USD" for x in msgs)


@pytest.mark.parametrize("wire", ["msgpack", "json"])
def test_pre_encoded_messages_make_the_same_frames_as_encoding_them(wire):
    m = market()
    loop = MessageLoop(m.step(2000), m, wire=wire)
    server = MarketDataServer(loop, CONFIG)
    msgs = loop.step(1500)
    plain = [dict(x) for x in msgs]
    for binary in (True, False) if wire == "json" else (True,):  # a msgpack timestamp has no JSON form
        for n in (0, 1, 15, 16, 17, 1500):
            assert server.encode(msgs[:n], binary) == server.encode(plain[:n], binary)
    mixed = msgs[:3] + [m.snapshot("BTC/USD")]  # a message not pre-encoded in the frame: encoded here
    assert msgspec.msgpack.decode(server.encode(mixed, True))[:3] == msgspec.msgpack.decode(server.encode(plain[:3], True))


def test_msgpack_array_header_matches_msgspec():
    for n in (0, 15, 16, 65535, 65536):
        assert _msgpack_array_header(n) == msgspec.msgpack.encode([None] * n)[: -n or None]


async def test_a_pre_encoded_loop_is_served_as_the_messages_it_holds():
    m = market()
    msgs = m.step(500)
    async with MarketDataServer(MessageLoop(msgs, m, wire="json"), CONFIG) as server, connect(server.url_for("iex")) as ws:
        await subscribe_all(ws)
        got = await recv_json(ws)
    sent = [x for x in MessageLoop(msgs, m, wire="json").step(500) if x["T"] in ("t", "q") and "/" not in x["S"]]
    assert got and got == sent[: len(got)]
