"""Recording a live stream and replaying it: frames round-trip exactly, the replayed book ends where
the market was, a recording can be served again by the embedded exchange, and the CLI commands."""

from __future__ import annotations

import asyncio
import math

import pytest
from kit import eventually

from engine.cli import main
from engine.config import FeedConfig, SimConfig
from engine.errors import InputError
from engine.marketdata.client import StreamClient
from engine.marketdata.recorder import Recorder
from engine.marketdata.replay import RecordedMarket, apaced, paced, read_frames, replay_into_book
from engine.sim.exchange import MarketDataServer
from engine.sim.market import SyntheticMarket

SIM = SimConfig(key_id="k", secret_key="s", messages_per_s=4000, seed=21)
FEED = FeedConfig(stale_after_s=5.0, reconnect_base_s=0.05, reconnect_max_s=0.4)


async def record(path, market: SyntheticMarket, stream: str, subscriptions: dict, msgpack: bool) -> list:
    seen: list = []
    async with MarketDataServer(market, SIM) as server:
        with Recorder(path, source="test") as recorder:
            def on_frame(frame, recv_ns) -> None:
                # the client hands text frames over as their UTF-8 bytes; the recording keeps them as text
                seen.append((recv_ns, frame.decode() if isinstance(frame, bytes) and frame[:1] == b"[" else frame))
                recorder.write(frame, recv_ns)

            client = StreamClient(
                server.url_for(stream), key_id="k", secret_key="s", feed=FEED.model_copy(update={"msgpack": msgpack}),
                subscriptions=subscriptions, on_batch=lambda b: None, on_frame=on_frame,
            )
            await client.connect(timeout=10)
            await eventually(lambda: client.stats.events > 300, timeout=10)
            server.stall()
            sent = server.stats.messages_sent
            await eventually(lambda: client.stats.messages == sent, timeout=10)
            await client.disconnect()
    return seen


@pytest.mark.parametrize(("suffix", "msgpack"), [(".jsonl.gz", True), (".jsonl.zst", False), (".jsonl", True)])
async def test_stock_recording_round_trips_and_replays_to_the_markets_top_of_book(tmp_path, suffix, msgpack):
    if suffix.endswith("zst"):
        pytest.importorskip("zstandard")
    market = SyntheticMarket(["AAPL", "MSFT", "SPY", "QQQ"], seed=1)
    path = tmp_path / f"stocks{suffix}"
    seen = await record(path, market, "iex", {"quotes": ["*"], "trades": ["*"]}, msgpack)
    assert list(read_frames(path)) == seen
    summary = replay_into_book(path)
    assert summary.frames == len(seen) and summary.stats.dropped == 0 and summary.book_drops == 0
    assert summary.stats.quotes > 0 and summary.stats.trades > 0
    assert sorted(summary.top_of_book) == ["AAPL", "MSFT", "QQQ", "SPY"]
    for symbol, top in summary.top_of_book.items():
        assert top == market.top_of_book(symbol)


async def test_crypto_orderbook_recording_replays_to_the_markets_depth(tmp_path):
    market = SyntheticMarket(["BTC/USD", "ETH/USD", "AAPL"], seed=2)
    path = tmp_path / "crypto.jsonl.gz"
    await record(path, market, "crypto", {"orderbooks": ["BTC/USD", "ETH/USD"]}, True)
    summary = replay_into_book(path)
    assert summary.stats.book_messages > 0 and summary.stats.dropped == 0
    for symbol in ("BTC/USD", "ETH/USD"):
        assert summary.top_of_book[symbol] == market.top_of_book(symbol)


async def test_a_recording_served_by_the_exchange(tmp_path):
    source = SyntheticMarket(["AAPL", "MSFT"], seed=3)
    path = tmp_path / "rec.jsonl.gz"
    await record(path, source, "iex", {"quotes": ["*"], "trades": ["*"]}, False)
    replayed = RecordedMarket(path)
    assert replayed.symbols() == ["AAPL", "MSFT"]
    recorded_quotes = [m for m in replayed._messages if m["T"] == "q"]
    async with MarketDataServer(replayed, SIM, wall_clock=False) as server:
        got = []
        client = StreamClient(server.url_for("iex"), key_id="k", secret_key="s", feed=FEED, subscriptions={"quotes": ["*"]}, on_batch=got.append)
        await client.connect(timeout=10)
        await eventually(lambda: sum(len(b.quotes) for b in got) >= len(recorded_quotes), timeout=10)
        await client.disconnect()
    quotes = [q for b in got for q in b.quotes]
    assert [(float(q["bid_price"]), int(q["ts_ns"])) for q in quotes] == [(m["bp"], m["t"]) for m in recorded_quotes]
    assert replayed.top_of_book("AAPL") == source.top_of_book("AAPL")


def test_pacing_and_bad_input(tmp_path):
    frames = [(1_000_000_000 + k * 1_000_000, f"[{k}]") for k in range(5)]
    assert list(paced(frames, math.inf)) == frames
    assert list(paced(frames, 1e6)) == frames
    with pytest.raises(InputError):
        list(paced(frames, 0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tickforge_recording":1}\nnot json\n')
    with pytest.raises(InputError, match="bad.jsonl:2"):
        list(read_frames(bad))
    with pytest.raises(InputError, match="not found"):
        list(read_frames(tmp_path / "missing.jsonl.gz"))


async def test_async_pacing_yields_every_frame_in_order():
    frames = [(1_000_000_000 + k * 1_000_000, f"[{k}]") for k in range(5)]
    assert [f async for f in apaced(frames, math.inf)] == frames
    assert [f async for f in apaced(frames, 1e6)] == frames
    with pytest.raises(InputError):
        [f async for f in apaced(frames, -1.0)]


def test_record_and_replay_commands(tmp_path, capsys):
    out = tmp_path / "cli.jsonl.gz"
    assert main(["--log-level", "WARNING", "record", "--out", str(out), "--seconds", "0.5", "--symbols", "AAPL,MSFT", "--channels", "quotes,trades"]) == 0
    assert "recorded" in capsys.readouterr().out
    assert main(["replay", str(out), "--speed", "max", "--top", "1"]) == 0
    text = capsys.readouterr().out
    assert "replayed" in text and "0 dropped" in text and ("AAPL" in text or "MSFT" in text)
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert main(["replay", str(out), "--speed", "fast"]) == 2
    assert main(["record", "--out", str(out), "--seconds", "0"]) == 2


def test_record_from_a_url_needs_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    assert main(["record", "--out", str(tmp_path / "x.jsonl"), "--url", "ws://127.0.0.1:9/v2/iex", "--seconds", "1"]) == 2


