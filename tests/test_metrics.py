"""Metrics and control endpoint over a real socket: scraped values and the kill switch."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.latency import T_DECODE, LatencyRecorder
from engine.metrics import LiveCollector, LiveStats, MetricsServer, SymbolRow
from kit import free_port


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def served():
    stats = LiveStats()
    latency = LatencyRecorder()
    rows = [SymbolRow("AAA", 99.9, 100.1, 10.0, 100.0, 5.0, -1.5), SymbolRow("BBB", 50.0, 50.2, -4.0, 51.0, 0.0, 3.0)]
    halts: list[str] = []
    server = MetricsServer(LiveCollector(stats, latency, lambda: rows), halts.append, port=free_port())
    server.start()
    yield server, stats, latency, halts
    server.stop()


def test_scrape_reports_counters_pnl_and_latency(served):
    server, stats, latency, _ = served
    LiveStats.bump(stats.messages, "trade", 120)
    LiveStats.bump(stats.messages, "quote", 80)
    LiveStats.bump(stats.drops, "bad_price", 2)
    LiveStats.bump(stats.denials, "MAX_ORDER_QTY")
    LiveStats.bump(stats.orders, "buy", 3)
    stats.fills = 2
    stats.reconnects = 1
    stamps = latency.begin_frame(1_000)
    stamps[T_DECODE] = 6_000
    latency.record_frame()
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = _samples(r.text)
    assert got[("tickforge_messages_total", (("kind", "trade"),))] == 120
    assert got[("tickforge_messages_total", (("kind", "quote"),))] == 80
    assert got[("tickforge_drops_total", (("reason", "bad_price"),))] == 2
    assert got[("tickforge_denials_total", (("reason", "MAX_ORDER_QTY"),))] == 1
    assert got[("tickforge_orders_total", (("side", "buy"),))] == 3
    assert got[("tickforge_fills_total", ())] == 2
    assert got[("tickforge_reconnects_total", ())] == 1
    assert got[("tickforge_position", (("symbol", "BBB"),))] == -4.0
    assert got[("tickforge_pnl", (("kind", "unrealized"), ("symbol", "AAA")))] == -1.5
    assert got[("tickforge_pnl_total", ())] == pytest.approx(6.5)
    assert got[("tickforge_stage_latency_seconds", (("quantile", "0.99"), ("stage", "decode")))] == pytest.approx(5e-6)
    assert got[("tickforge_stage_latency_seconds_count", (("stage", "decode"),))] == 1
    assert got[("tickforge_trading_halted", ())] == 0.0
    # counters move between scrapes
    LiveStats.bump(stats.messages, "trade", 5)
    assert _samples(httpx.get(server.url + "/metrics").text)[("tickforge_messages_total", (("kind", "trade"),))] == 125


def test_halt_endpoint_engages_the_kill_switch(served):
    server, stats, _, halts = served
    assert httpx.get(server.url + "/halt").status_code == 405     # a GET never halts
    assert halts == []
    r = httpx.post(server.url + "/halt", content=b"operator says stop")
    assert r.status_code == 200 and r.json() == {"state": "HALTED", "reason": "operator says stop"}
    r = httpx.post(server.url + "/halt?reason=risk%20desk")
    assert r.json()["reason"] == "risk desk"
    assert halts == ["operator says stop", "risk desk"]
    assert httpx.post(server.url + "/resume").status_code == 404
    assert httpx.get(server.url + "/nothing").status_code == 404
    stats.trading_state = "HALTED"
    assert httpx.get(server.url + "/status").json()["trading_state"] == "HALTED"


def test_halt_when_the_engine_is_gone_is_a_503():
    def refuse(reason: str) -> None:
        raise RuntimeError("Event loop is closed")

    server = MetricsServer(LiveCollector(LiveStats(), LatencyRecorder()), refuse, port=free_port())
    server.start()
    try:
        assert httpx.post(server.url + "/halt").status_code == 503
    finally:
        server.stop()
