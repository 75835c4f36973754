"""``tickforge sim`` and ``SimStack``: the exchange and broker served together; lock-step grants frames."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from engine.cli import main
from engine.config import SimConfig
from engine.sim.server import SimStack, describe

SECRET = "tickforge-sim-secret"


async def _subscribe(url: str, symbols: list[str]):
    ws = await connect(url)
    assert json.loads(await ws.recv())[0]["msg"] == "connected"
    await ws.send(json.dumps({"action": "auth", "key": "tickforge-sim", "secret": SECRET}))
    assert json.loads(await ws.recv())[0]["msg"] == "authenticated"
    await ws.send(json.dumps({"action": "subscribe", "trades": symbols, "quotes": symbols, "bars": symbols}))
    assert json.loads(await ws.recv())[0]["T"] == "subscription"
    return ws


async def _frames_after_grants(seed: int, grants: int) -> list[list[dict]]:
    async with SimStack(SimConfig(seed=seed, n_symbols=3), lockstep_frame_messages=25) as stack:
        ws = await _subscribe(stack.feed_url, stack.symbols)
        with pytest.raises(TimeoutError):  # nothing flows before the first grant
            await asyncio.wait_for(ws.recv(), 0.1)
        frames = []
        for _ in range(grants):
            stack.grant()
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            with pytest.raises(TimeoutError):  # exactly one frame per grant
                await asyncio.wait_for(ws.recv(), 0.05)
        await ws.close()
        return frames


async def test_lockstep_grants_release_one_frame_each_and_repeat_for_a_seed():
    first = await _frames_after_grants(seed=3, grants=3)
    assert [len(f) for f in first] == [25, 25, 25]
    assert first == await _frames_after_grants(seed=3, grants=3)   # synthetic clock: same bytes again
    assert first != await _frames_after_grants(seed=4, grants=3)


async def test_stack_serves_broker_and_exchange_on_one_market():
    async with SimStack(SimConfig(seed=1, n_symbols=2)) as stack:
        headers = {"APCA-API-KEY-ID": "tickforge-sim", "APCA-API-SECRET-KEY": SECRET}
        async with httpx.AsyncClient(base_url=stack.trading_url, headers=headers) as http:
            account = (await http.get("/v2/account")).json()
            assert float(account["cash"]) == SimConfig().starting_cash
            order = (await http.post("/v2/orders", json={"symbol": stack.symbols[0], "side": "buy", "type": "market",
                                                          "qty": "3", "time_in_force": "day"})).json()
            assert order["status"] == "filled"
            # the fill price is the exchange's own ask: both serve the same book
            bid, _, ask, _ = stack.market.top_of_book(stack.symbols[0])
            assert float(order["filled_avg_price"]) == pytest.approx(ask)
        with pytest.raises(RuntimeError):
            stack.grant()  # not a lock-step stack
        text = describe(stack)
        assert "tickforge-sim" in text and SECRET not in text and stack.trading_url in text


def test_sim_command_prints_urls_not_the_secret(capsys):
    assert main(["sim", "--duration", "0.3", "--symbols", "2", "--seed", "9"]) == 0
    out = capsys.readouterr().out
    assert "ws://127.0.0.1:" in out and "http://127.0.0.1:" in out and "key id" in out
    assert SECRET not in out
    assert "seed 9" in out
    assert main(["sim", "--symbols", "0"]) == 2
    assert "n_symbols" in capsys.readouterr().err
    assert main(["sim", "--duration", "-1"]) == 2
