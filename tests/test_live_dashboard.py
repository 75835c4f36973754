"""The dashboard and summary views show the run's counters, positions, P&L and latencies."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from engine.dashboard import Dashboard, RunView, print_summary
from engine.latency import T_DECODE, LatencyRecorder
from engine.metrics import LiveStats, SymbolRow


def _view() -> RunView:
    stats = LiveStats()
    LiveStats.bump(stats.messages, "trade", 1200)
    LiveStats.bump(stats.denials, "MAX_POSITION_QTY", 3)
    LiveStats.bump(stats.orders, "buy", 7)
    stats.fills = 5
    latency = LatencyRecorder()
    stamps = latency.begin_frame(0)
    stamps[T_DECODE] = 12_000
    latency.record_frame()
    rows = [SymbolRow("AAPL", 189.5, 189.52, 30.0, 189.0, 12.5, -3.25), SymbolRow("MSFT", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    return RunView("tickforge run (sim, seed 7)", 12.0, stats, rows, latency.summary())


def test_summary_shows_counts_pnl_and_latency():
    out = io.StringIO()
    print_summary(_view(), Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    assert "tickforge run (sim, seed 7)" in text
    assert "1,200" in text and "trade=1,200" in text
    assert "MAX_POSITION_QTY" in text and " 3 " in text
    assert "AAPL" in text and "12.50" in text and "-3.25" in text and "9.25" in text  # realized, unrealized, total
    assert "decode" in text and "12.0" in text  # 12 us


async def test_dashboard_refreshes_until_stopped():
    out = io.StringIO()
    calls = []

    def snapshot() -> RunView:
        calls.append(1)
        return _view()

    stop = asyncio.Event()
    dash = Dashboard(snapshot, refresh_per_s=50, console=Console(file=out, width=160, force_terminal=True))
    task = asyncio.create_task(dash.run(stop))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert len(calls) >= 3
