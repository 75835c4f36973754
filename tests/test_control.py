"""``tickforge halt`` against a running engine's control endpoint (real sockets, real engine)."""

from __future__ import annotations

import asyncio

from engine.cli import main
from engine.config import TickforgeConfig
from engine.latency import LatencyRecorder
from engine.live import LiveEngine
from engine.metrics import LiveCollector, LiveStats, MetricsServer
from kit import eventually, free_port


async def test_halt_command_engages_the_kill_switch_of_a_running_engine(capsys):
    port = free_port()
    live = {"duration_s": 60.0, "lockstep": True, "frame_messages": 50, "max_messages": 0, "strategy": "ma_rsi",
            "backend": "cpu", "shutdown_timeout_s": 3.0, "metrics_port": port}
    engine = LiveEngine(TickforgeConfig.load(sim={"seed": 7}, live=live), symbols=["AAPL", "MSFT"])
    task = asyncio.create_task(engine.run())
    await eventually(lambda: engine._messages > 0, timeout=120)
    assert engine.stats.trading_state == "ACTIVE"
    # the command is synchronous (httpx): run it off the loop the engine lives on
    rc = await asyncio.to_thread(main, ["halt", "--url", f"http://127.0.0.1:{port}", "--reason", "desk says stop"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "trading HALTED" in out and '"reason": "desk says stop"' in out
    await eventually(lambda: engine.stats.trading_state == "HALTED", timeout=15)
    assert engine.stats.halt_reason == "desk says stop"
    assert engine.status()["trading_state"] == "HALTED"
    engine.request_stop("test over")
    summary = await asyncio.wait_for(task, 30)
    assert summary.stats.trading_state == "HALTED" and summary.open_orders_left == 0

    # the run is over, its endpoint is gone: unreachable, one clear line, exit 2
    rc = await asyncio.to_thread(main, ["halt", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tickforge halt: error: engine unreachable at http://127.0.0.1:")


def test_halt_command_reports_an_engine_that_refuses_and_bad_urls(capsys):
    # an engine that is not running answers 503 through its real metrics server
    engine = LiveEngine(TickforgeConfig.load(live={"backend": "cpu"}))
    server = MetricsServer(LiveCollector(LiveStats(), LatencyRecorder()), engine.halt_threadsafe)
    url = server.start()
    try:
        assert main(["halt", "--url", url + "/", "--reason", "x"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["tickforge halt: error: engine refused the halt (HTTP 503): engine is not running"]
        # a server that is not the engine's control endpoint
        assert main(["halt", "--url", url + "/nothing-here"]) == 2
        assert "refused the halt (HTTP 404)" in capsys.readouterr().err
    finally:
        server.stop()
    assert engine.stats.trading_state == "ACTIVE"
    assert main(["halt", "--url", "127.0.0.1:9100"]) == 2
    assert "--url must look like http://127.0.0.1:PORT" in capsys.readouterr().err
    assert main(["halt", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "0"]) == 2
