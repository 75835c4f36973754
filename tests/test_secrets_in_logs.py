"""Credentials never reach log lines, even with every logger at DEBUG (websockets logs each frame and
header there): market-data auth by message (JSON text and msgpack) and by headers, on both ends."""

import asyncio
import logging

import pytest

from engine.config import FeedConfig, SimConfig
from engine.marketdata.client import StreamClient
from engine.sim.exchange import MarketDataServer
from engine.sim.market import SyntheticMarket

SECRET = "s3cret-value-that-must-not-be-logged"


@pytest.mark.parametrize(("msgpack", "auth"), [(False, "message"), (True, "message"), (False, "headers")])
async def test_market_data_auth_is_not_logged(caplog, msgpack, auth):
    caplog.set_level(logging.DEBUG)
    sim = SimConfig(key_id="key-id", secret_key=SECRET)
    async with MarketDataServer(SyntheticMarket(["AAPL"], seed=3), sim) as server:
        client = StreamClient(
            server.url_for("iex"), key_id="key-id", secret_key=SECRET, auth=auth,
            feed=FeedConfig(msgpack=msgpack), subscriptions={"trades": ["AAPL"]},
        )
        await client.connect(timeout=30)
        await asyncio.sleep(0.1)
        await client.disconnect()
    lines = [r.getMessage() for r in caplog.records]
    assert any("redacted" in line for line in lines) or auth == "headers" or msgpack
    assert not [line for line in lines if SECRET in line]
