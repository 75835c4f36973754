"""``tickforge run --record``: the live engine records the raw frames it received, and the recording
replays to the same market data the run processed (lock-step sessions against the embedded exchange)."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import numpy as np
import pytest

from engine.cli import main
from engine.config import TickforgeConfig
from engine.errors import InputError
from engine.live import LiveEngine
from engine.marketdata.decoder import Decoder
from engine.marketdata.recorder import open_recording
from engine.marketdata.replay import read_frames
from engine.marketdata.symbols import SymbolMap
from kit import eventually


def _event_counts(path) -> tuple[int, dict[str, int], int]:
    """Market data messages, by kind, and frames carrying them, as a fresh decoder reads the recording."""
    decoder = Decoder(SymbolMap(max_symbols=64), log_drops=False)
    messages, frames = 0, 0
    kinds = {"trade": 0, "quote": 0, "bar": 0}
    last_recv = 0
    for recv_ns, frame in read_frames(path):
        assert recv_ns >= last_recv  # receive stamps in arrival order
        last_recv = recv_ns
        batch = decoder.decode(frame, recv_ns)
        if batch.n_events:  # the engine sees (and counts) only frames with market data
            frames += 1
            messages += batch.n_messages
            kinds["trade"] += len(batch.trades)
            kinds["quote"] += len(batch.quotes)
            kinds["bar"] += len(batch.bars)
    return messages, {k: v for k, v in kinds.items() if v}, frames


def test_cli_run_record_writes_a_replayable_recording_of_every_message(tmp_path, capsys):
    recording = tmp_path / "session.jsonl.gz"
    summary_path = tmp_path / "summary.json"
    rc = main(["run", "--lockstep", "--symbols", "3", "--seed", "5", "--max-messages", "2000", "--backend", "cpu",
               "--record", str(recording), "--summary-json", str(summary_path)])
    assert rc == 0
    summary = json.loads(summary_path.read_text())
    assert summary["messages"] >= 2000
    # the file is a complete gzip stream (closed at shutdown) that starts with the recording header
    with open_recording(recording, "rb") as f:
        header = json.loads(f.readline())
    assert header["tickforge_recording"] == 1 and header["source"].startswith("ws://127.0.0.1:")
    messages, kinds, frames = _event_counts(recording)
    assert messages == summary["messages"]
    assert kinds == summary["stats"]["messages"]
    assert frames == summary["stats"]["frames"]
    capsys.readouterr()
    assert main(["replay", str(recording)]) == 0
    out = capsys.readouterr().out
    assert f"{kinds.get('trade', 0)} trades, {kinds.get('quote', 0)} quotes, {kinds.get('bar', 0)} bars" in out
    assert "0 dropped" in out
    replayed_frames = int(out.split("replayed ")[1].split(" frames")[0])
    assert replayed_frames >= frames  # plus the handshake's control frames


async def test_recording_off_leaves_no_hook_and_plain_suffix_is_uncompressed(tmp_path):
    base = {"duration_s": 60.0, "lockstep": True, "max_messages": 600, "strategy": "ma_rsi", "backend": "cpu",
            "shutdown_timeout_s": 3.0}
    cfg = TickforgeConfig.load(sim={"seed": 3}, live=base)
    engine = LiveEngine(cfg, symbols=["AAPL", "MSFT"])
    summary = await engine.run()
    assert engine.feed._on_frame is None and engine.recorder is None  # no per-frame cost when off
    assert summary.messages >= 600

    plain = tmp_path / "session.jsonl"
    engine = LiveEngine(cfg.model_copy(update={"live": cfg.live.model_copy(update={"record_path": str(plain)})}), symbols=["AAPL", "MSFT"])
    summary = await engine.run()
    assert engine.recorder is None  # closed by the shutdown
    assert plain.read_bytes().startswith(b'{"tickforge_recording":1')
    messages, kinds, _ = _event_counts(plain)
    assert messages == summary.messages and kinds == summary.stats.messages


async def test_sigterm_closes_the_recording_and_a_bad_path_is_an_input_error(tmp_path):
    base = {"duration_s": 60.0, "lockstep": True, "max_messages": 0, "strategy": "ma_rsi", "backend": "cpu",
            "shutdown_timeout_s": 3.0, "record_path": str(tmp_path / "stopped.jsonl.gz")}
    cfg = TickforgeConfig.load(sim={"seed": 4}, live=base)
    engine = LiveEngine(cfg, symbols=["AAPL"])
    task = asyncio.create_task(engine.run())
    await eventually(lambda: engine._messages >= 500, timeout=120)
    os.kill(os.getpid(), signal.SIGTERM)  # the engine's handler: graceful stop
    summary = await asyncio.wait_for(task, 30)
    messages, _, _ = _event_counts(tmp_path / "stopped.jsonl.gz")  # a truncated gzip stream would raise here
    assert messages == summary.messages >= 500

    bad = cfg.model_copy(update={"live": cfg.live.model_copy(update={"record_path": str(tmp_path / "no" / "such" / "x.gz")})})
    with pytest.raises(InputError, match="does not exist"):
        await LiveEngine(bad, symbols=["AAPL"]).run()
    assert np.isfinite(summary.total_pnl)
