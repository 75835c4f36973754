"""The stream client against the embedded exchange over real sockets: auth, subscriptions,
reconnects, the watchdog, backoff, 1,000 symbols, and the book it feeds."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from kit import eventually

from engine.book import BookManager
from engine.config import AlpacaConfig, FeedConfig, SimConfig
from engine.events import SIDE_ASK, SIDE_BID
from engine.marketdata.client import FAILED, STREAMING, FeedError, StreamClient, stream_url
from engine.sim.exchange import MarketDataServer
from engine.sim.market import SyntheticMarket, default_symbols

KEY, SECRET = "client-key", "client-secret-do-not-log"
SIM = SimConfig(key_id=KEY, secret_key=SECRET, messages_per_s=3000, seed=9)
FAST = FeedConfig(stale_after_s=2.0, reconnect_base_s=0.05, reconnect_max_s=0.4, healthy_after_s=5.0, ping_interval_s=5.0)


def client_for(server: MarketDataServer, stream: str = "iex", **kwargs) -> StreamClient:
    kwargs.setdefault("feed", FAST)
    return StreamClient(server.url_for(stream), key_id=KEY, secret_key=SECRET, **kwargs)


async def test_bad_credentials_stop_with_402_and_no_retry(caplog):
    caplog.set_level(logging.DEBUG)
    async with MarketDataServer(SyntheticMarket(["AAPL"], seed=1), SIM) as server:
        client = StreamClient(server.url_for("iex"), key_id=KEY, secret_key="wrong-secret-do-not-log", feed=FAST, subscriptions={"trades": ["AAPL"]})
        with pytest.raises(FeedError) as info:
            await client.connect(timeout=10)
        assert info.value.code == 402 and "auth failed" in str(info.value)
        assert client.state == FAILED and client.stats.connect_attempts == 1
        await asyncio.sleep(0.3)
        assert server.stats.connections_accepted == 1  # a fatal error is not retried
    text = " ".join(r.getMessage() for r in caplog.records) + repr(client) + str(info.value)
    assert "wrong-secret-do-not-log" not in text and SECRET not in text


@pytest.mark.parametrize(("feed", "code"), [("sip", 409)])
async def test_insufficient_subscription_is_fatal(feed, code):
    async with MarketDataServer(SyntheticMarket(["AAPL"], seed=1), SIM) as server:
        client = client_for(server, feed, subscriptions={"trades": ["AAPL"]})
        with pytest.raises(FeedError) as info:
            await client.connect(timeout=10)
        assert info.value.code == code


async def test_symbol_limit_is_fatal_and_at_the_limit_is_fine():
    async with MarketDataServer(SyntheticMarket(["AAPL", "MSFT", "SPY"], seed=1), SIM, symbol_limit=2) as server:
        ok = client_for(server, subscriptions={"trades": ["AAPL"], "quotes": ["MSFT"]})
        await ok.connect(timeout=10)
        assert ok.subscription.symbols("trades") == ("AAPL",)
        await ok.disconnect()
        over = client_for(server, subscriptions={"trades": ["AAPL", "MSFT", "SPY"]})
        with pytest.raises(FeedError) as info:
            await over.connect(timeout=10)
        assert info.value.code == 405


@pytest.mark.parametrize(("msgpack", "auth"), [(True, "message"), (False, "message"), (True, "headers"), (False, "headers")])
async def test_trades_and_quotes_arrive_decoded(msgpack, auth):
    market = SyntheticMarket(["AAPL", "MSFT", "SPY"], seed=2)
    async with MarketDataServer(market, SIM) as server:
        batches = []
        client = client_for(server, feed=FAST.model_copy(update={"msgpack": msgpack}), auth=auth, subscriptions={"trades": ["AAPL"], "quotes": ["MSFT"]}, on_batch=batches.append)
        await client.connect(timeout=10)
        await eventually(lambda: sum(len(b.trades) for b in batches) >= 3 and sum(len(b.quotes) for b in batches) >= 3, timeout=10)
        await client.disconnect()
    trades = np.concatenate([b.trades for b in batches])
    quotes = np.concatenate([b.quotes for b in batches])
    assert {client.symbols.name(int(s)) for s in trades["symbol_id"]} == {"AAPL"}
    assert {client.symbols.name(int(s)) for s in quotes["symbol_id"]} == {"MSFT"}
    assert (quotes["bid_price"] < quotes["ask_price"]).all() and (trades["price"] > 0).all()
    assert (np.diff(trades["trade_id"]) > 0).all()  # in order, nothing repeated
    assert client.stats.drops == 0 and client.stats.connects == 1


async def test_subscription_changes_take_effect_and_are_confirmed():
    async with MarketDataServer(SyntheticMarket(["AAPL", "MSFT", "SPY"], seed=3), SIM) as server:
        batches = []
        client = client_for(server, subscriptions={"trades": ["AAPL"]}, on_batch=batches.append)
        await client.connect(timeout=10)
        sub = await client.subscribe(quotes=["MSFT", "SPY"])
        assert sub is not None and sub.symbols("quotes") == ("MSFT", "SPY") and sub.symbols("trades") == ("AAPL",)
        sub = await client.unsubscribe(trades=["AAPL"], quotes=["SPY"])
        assert sub is not None and sub.symbols("trades") == () and sub.symbols("quotes") == ("MSFT",)
        batches.clear()  # everything from here on was sent after the server confirmed the change
        await eventually(lambda: sum(len(b.quotes) for b in batches) >= 5, timeout=10)
        assert sum(len(b.trades) for b in batches) == 0
        msft = client.symbols.get("MSFT")
        assert all((b.quotes["symbol_id"] == msft).all() for b in batches)
        with pytest.raises(ValueError):
            await client.subscribe(orderbooks=["AAPL"])  # not a stock channel
        await client.disconnect()


async def test_async_iteration_ends_on_disconnect():
    async with MarketDataServer(SyntheticMarket(["AAPL", "MSFT"], seed=4), SIM) as server:
        client = client_for(server, subscriptions={"quotes": ["*"]})
        await client.connect(timeout=10)
        seen = 0
        async for batch in client:
            seen += len(batch.quotes)
            if seen >= 10:
                await client.disconnect()
        assert seen >= 10


def _books_match(book: BookManager, client: StreamClient, market: SyntheticMarket, symbols: list[str]) -> bool:
    for sym in symbols:
        sid = client.symbols.get(sym)
        if sid is None:
            return False
        depth = book.depth(sid, 10)
        bids = list(zip(depth.bid_prices.tolist(), depth.bid_sizes.tolist()))
        asks = list(zip(depth.ask_prices.tolist(), depth.ask_sizes.tolist()))
        if bids != market.depth(sym, SIDE_BID, 10) or asks != market.depth(sym, SIDE_ASK, 10):
            return False
        if book.n_levels(sid) != (10, 10):  # no stale level left behind
            return False
    return True


async def test_server_restart_mid_stream_reconnects_resubscribes_and_the_book_has_nothing_stale():
    pairs = ["BTC/USD", "ETH/USD"]
    market = SyntheticMarket(["AAPL"] + pairs, seed=5)
    book = BookManager(8, 0.01)
    async with MarketDataServer(market, SIM) as server:
        def on_batch(batch) -> None:
            if len(batch.book_deltas):
                book.apply_deltas(batch.book_deltas)

        client = client_for(server, "crypto", subscriptions={"orderbooks": pairs, "trades": ["BTC/USD"]}, on_batch=on_batch)
        await client.connect(timeout=10)
        await eventually(lambda: client.decoder.stats.book_messages > 50, timeout=10)
        restart = asyncio.create_task(server.restart(down_s=0.3))
        await eventually(lambda: client.state != STREAMING, timeout=5)
        market.step(400)  # the market moves on while the client is away: its book is now stale
        assert not _books_match(book, client, market, pairs)
        await restart
        await eventually(lambda: client.stats.connects == 2 and client.state == STREAMING, timeout=10)
        assert client.subscription.symbols("orderbooks") == tuple(pairs)  # resubscribed by itself
        before = client.decoder.stats.book_messages
        await eventually(lambda: client.decoder.stats.book_messages > before + 50, timeout=10)
        server.stall()
        await eventually(lambda: _books_match(book, client, market, pairs), timeout=10)
        assert client.stats.connects == 2 and client.stats.reconnects >= 1 and client.stats.drops == 0
        assert book.stats()["crossed"] == 0
        await client.disconnect()


async def test_accepting_then_closing_server_causes_no_reconnect_storm():
    async with MarketDataServer(SyntheticMarket(["AAPL"], seed=6), SIM) as server:
        server.accept_then_close()
        client = client_for(server, subscriptions={"trades": ["AAPL"]})
        with pytest.raises(TimeoutError):
            await client.connect(timeout=2.0)
        # backoff 0.05 s doubling to 0.4 s, jittered down to half: at most ~13 tries in 2 s, not hundreds
        assert 2 <= server.stats.connections_accepted <= 14
        assert client.stats.connects == 0
        server.accept_then_close(False)
        await eventually(lambda: client.state == STREAMING, timeout=5)
        await client.disconnect()


async def test_stalled_feed_is_caught_by_the_watchdog():
    feed = FAST.model_copy(update={"stale_after_s": 0.3})
    async with MarketDataServer(SyntheticMarket(["AAPL", "MSFT"], seed=7), SIM) as server:
        client = client_for(server, feed=feed, subscriptions={"quotes": ["*"]})
        await client.connect(timeout=10)
        await eventually(lambda: client.stats.events > 10, timeout=10)
        server.stall()
        await eventually(lambda: client.stats.stale_events >= 1 and client.stats.connects >= 2, timeout=10)
        server.stall(False)
        events = client.stats.events
        await eventually(lambda: client.stats.events > events + 10, timeout=10)
        await client.disconnect()


async def test_a_thousand_symbols():
    names = default_symbols(1000)
    market = SyntheticMarket(names, seed=8, levels=2)
    async with MarketDataServer(market, SIM.model_copy(update={"messages_per_s": 20_000})) as server:
        seen: set[int] = set()

        def on_batch(batch) -> None:
            seen.update(batch.quotes["symbol_id"].tolist())
            seen.update(batch.trades["symbol_id"].tolist())

        client = client_for(server, subscriptions={"trades": names, "quotes": names}, on_batch=on_batch)
        await client.connect(timeout=20)
        assert len(client.subscription.symbols("quotes")) == 1000
        assert client.symbols.names == names  # ids follow the subscription order
        await eventually(lambda: len(seen) >= 900, timeout=20)
        assert max(seen) < 1000 and client.stats.drops == 0
        await client.disconnect()


async def test_pings_are_answered_while_the_consumer_is_busy():
    feed = FAST.model_copy(update={"ping_interval_s": 1.0})
    async with MarketDataServer(SyntheticMarket(["AAPL", "MSFT"], seed=9), SIM.model_copy(update={"messages_per_s": 20_000}), ping_interval_s=1.0) as server:
        import time

        def slow_consumer(batch) -> None:
            time.sleep(0.02)  # a heavy strategy step holding the event loop

        client = client_for(server, feed=feed, subscriptions={"quotes": ["*"], "trades": ["*"]}, on_batch=slow_consumer)
        await client.connect(timeout=10)
        await asyncio.sleep(2.5)  # both sides ping twice meanwhile; a missed pong would drop the link
        assert client.stats.connects == 1 and client.stats.reconnects == 0 and client.state == STREAMING
        await client.disconnect()


async def test_consumer_errors_are_counted_not_fatal():
    async with MarketDataServer(SyntheticMarket(["AAPL"], seed=10), SIM) as server:
        def broken(batch) -> None:
            raise RuntimeError("strategy bug")

        client = client_for(server, subscriptions={"quotes": ["AAPL"]}, on_batch=broken)
        await client.connect(timeout=10)
        await eventually(lambda: client.stats.consumer_errors >= 3, timeout=10)
        assert client.state == STREAMING
        await client.disconnect()


def test_stream_urls_and_config():
    alpaca = AlpacaConfig(key_id="k", secret_key="s")
    assert stream_url(alpaca) == "wss://stream.data.alpaca.markets/v2/iex"
    assert stream_url(alpaca.model_copy(update={"feed": "sip"})) == "wss://stream.data.alpaca.markets/v2/sip"
    assert stream_url(alpaca, "crypto") == "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
    client = StreamClient.from_config(alpaca, FeedConfig(symbols=("AAPL",), crypto_symbols=("BTC/USD",)), "crypto")
    assert client.crypto and client.wanted == {"trades": ["BTC/USD"], "quotes": ["BTC/USD"], "bars": ["BTC/USD"]}
    assert "s" not in repr(client).split("key_id=")[1].replace("SecretStr", "").strip("(')*")


async def test_a_server_error_mid_stream_reconnects_and_a_fatal_one_stops():
    async with MarketDataServer(SyntheticMarket(["AAPL", "MSFT"], seed=11), SIM) as server:
        client = client_for(server, subscriptions={"quotes": ["*"]})
        await client.connect(timeout=10)
        server.inject_error(500)  # internal error: worth another try
        await eventually(lambda: client.stats.connects == 2 and client.state == STREAMING, timeout=10)
        assert client.stats.errors[500] == 1 and client.subscription.symbols("quotes") == ("*",)
        server.inject_error(403)  # already authenticated: harmless, logged
        await asyncio.sleep(0.1)
        assert client.state == STREAMING and client.stats.connects == 2
        server.inject_error(406)  # connection limit: no point retrying
        with pytest.raises(FeedError) as info:
            await asyncio.wait_for(client.wait_closed(), 10)
        assert info.value.code == 406 and client.state == FAILED
