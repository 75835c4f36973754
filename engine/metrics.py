"""What the live engine counts, exported to Prometheus, plus the HTTP control endpoint (kill switch).

The hot path only bumps plain Python ints and dict entries on ``LiveStats``; nothing touches
``prometheus_client`` per event. A custom collector turns the counters, the per-symbol rows and the
latency histograms into metric families when a scraper asks, on the HTTP server's own thread. The
same server answers ``POST /halt`` (kill switch) and ``GET /status`` (JSON). It binds to loopback by
default: the control endpoint has no authentication and is meant for the operator's own machine.

Endpoints: ``GET /metrics`` (Prometheus text format), ``GET /status``, ``POST /halt`` (optional body or
``?reason=`` names why; the engine stops new orders and cancels the open ones).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.latency import LatencyRecorder

log = logging.getLogger("tickforge.metrics")

NS_PER_S = 1e9


@dataclass
class LiveStats:
    """Counters of one engine run. Plain fields so the event loop bumps them at dict/int cost."""

    messages: dict[str, int] = field(default_factory=dict)   # by kind: trade, quote, bar, book
    frames: int = 0
    drops: dict[str, int] = field(default_factory=dict)      # by reason (decoder, book, engine)
    reconnects: int = 0
    orders: dict[str, int] = field(default_factory=dict)     # by side: buy, sell
    orders_acked: int = 0
    orders_rejected: int = 0                                 # by the broker (not risk)
    orders_unknown: int = 0                                  # submit outcome never resolved
    cancels: int = 0
    fills: int = 0
    filled_qty: float = 0.0
    denials: dict[str, int] = field(default_factory=dict)    # risk denial reason -> count
    strategy_errors: int = 0
    bar_closes: int = 0
    cross_section_steps: int = 0
    busy_poll_spins: int = 0                                 # loop iterations the busy poller kept awake
    rehearsals: int = 0                                      # idle replays of the hot path (engine.rehearsal)
    trading_state: str = "ACTIVE"
    halt_reason: str = ""

    @staticmethod
    def bump(counter: dict[str, int], key: str, by: int = 1) -> None:
        counter[key] = counter.get(key, 0) + by

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SymbolRow:
    """One symbol's line in the metrics, the dashboard and the summary."""

    symbol: str
    best_bid_price: float
    best_ask_price: float
    position: float
    avg_entry_price: float
    realized_pnl: float
    unrealized_pnl: float


class LiveCollector:
    """A prometheus_client collector reading the engine's state at scrape time."""

    def __init__(
        self,
        stats: LiveStats,
        latency: LatencyRecorder,
        symbol_rows: Callable[[], list[SymbolRow]] = list,
        namespace: str = "tickforge",
    ) -> None:
        self.stats = stats
        self.latency = latency
        self.symbol_rows = symbol_rows
        self.ns = namespace

    def _name(self, name: str) -> str:
        return f"{self.ns}_{name}"

    def _by_label(self, name: str, documentation: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
        """One counter family with a sample per label value (sorted, so scrapes list them stably)."""
        family = CounterMetricFamily(self._name(name), documentation, labels=[label])
        for value, n in sorted(dict(counts).items()):
            family.add_metric([value], n)
        return family

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield self._by_label("messages", "Market data messages processed", "kind", s.messages)
        yield CounterMetricFamily(self._name("frames"), "Decoded market data frames", value=s.frames)
        yield self._by_label("drops", "Messages dropped, by reason", "reason", s.drops)
        yield CounterMetricFamily(self._name("reconnects"), "Market data reconnects", value=s.reconnects)
        yield self._by_label("orders", "Orders sent to the broker, by side", "side", s.orders)
        yield CounterMetricFamily(self._name("orders_acked"), "Orders acknowledged by the broker", value=s.orders_acked)
        yield CounterMetricFamily(self._name("orders_rejected"), "Orders rejected by the broker", value=s.orders_rejected)
        yield CounterMetricFamily(self._name("cancels"), "Cancel requests sent", value=s.cancels)
        yield CounterMetricFamily(self._name("fills"), "Executions received", value=s.fills)
        yield self._by_label("denials", "Orders denied by pre-trade risk, by reason", "reason", s.denials)
        yield CounterMetricFamily(self._name("strategy_errors"), "Strategy handler exceptions", value=s.strategy_errors)
        halted = GaugeMetricFamily(self._name("trading_halted"), "1 when the kill switch is engaged")
        halted.add_metric([], 1.0 if s.trading_state == "HALTED" else 0.0)
        yield halted

        rows = self.symbol_rows()
        position = GaugeMetricFamily(self._name("position"), "Signed filled position", labels=["symbol"])
        pnl = GaugeMetricFamily(self._name("pnl"), "P&L in account currency", labels=["symbol", "kind"])
        for row in rows:
            position.add_metric([row.symbol], row.position)
            pnl.add_metric([row.symbol, "realized"], row.realized_pnl)
            pnl.add_metric([row.symbol, "unrealized"], row.unrealized_pnl)
        yield position
        yield pnl
        total = GaugeMetricFamily(self._name("pnl_total"), "Total P&L (realized + unrealized)")
        total.add_metric([], sum(r.realized_pnl + r.unrealized_pnl for r in rows))
        yield total

        # stage latencies as a summary with quantiles from the HDR histograms
        name = self._name("stage_latency_seconds")
        summary = Metric(name, "Per-stage and end-to-end latency of the live pipeline", "summary")
        max_gauge = GaugeMetricFamily(self._name("stage_latency_max_seconds"), "Largest latency seen", labels=["stage"])
        for stage, hist in self.latency.histograms().items():
            if not hist.count:
                continue
            for q in (50, 99):
                summary.add_sample(name, {"stage": stage, "quantile": str(q / 100)}, hist.percentile(q) / NS_PER_S)
            summary.add_sample(name + "_count", {"stage": stage}, hist.count)
            summary.add_sample(name + "_sum", {"stage": stage}, hist.mean_ns * hist.count / NS_PER_S)
            max_gauge.add_metric([stage], hist.max_ns / NS_PER_S)
        yield summary
        yield max_gauge


class MetricsServer:
    """``GET /metrics``, ``GET /status`` and ``POST /halt`` on a small threaded HTTP server.

    ``on_halt(reason)`` is called on the server thread; the engine hands in a function that moves the
    call onto its event loop (``loop.call_soon_threadsafe``).
    """

    def __init__(
        self,
        collector: LiveCollector,
        on_halt: Callable[[str], None],
        host: str = "127.0.0.1",
        port: int = 0,
        status: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.collector = collector
        self.on_halt = on_halt
        self.status = status or collector.stats.as_dict
        self.host, self.port = host, int(port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="tickforge-metrics", daemon=True)
        self._thread.start()
        log.info("metrics and control endpoint on %s (/metrics, /status, POST /halt)", self.url)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _handler_for(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            log.debug("http %s", format % args)

        def _reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, payload: dict[str, object]) -> None:
            self._reply(code, json.dumps(payload, default=str).encode())

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            path = urlsplit(self.path).path
            if path == "/metrics":
                self._reply(200, server.render(), CONTENT_TYPE_LATEST)
            elif path == "/status":
                self._json(200, server.status())
            elif path == "/halt":
                self._json(405, {"error": "use POST /halt"})
            else:
                self._json(404, {"error": f"no such endpoint: {path}"})

        def do_POST(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 4096)).decode("utf-8", "replace").strip() if length else ""
            if parts.path != "/halt":
                self._json(404, {"error": f"no such endpoint: {parts.path}"})
                return
            reason = parse_qs(parts.query).get("reason", [body or "control endpoint"])[0][:200]
            try:
                server.on_halt(reason)
            except Exception as exc:  # the engine is shutting down; say so instead of a 500 page
                log.warning("halt request failed: %s", exc)
                self._json(503, {"error": "engine is not running"})
                return
            log.warning("kill switch engaged through the control endpoint: %s", reason)
            self._json(200, {"state": "HALTED", "reason": reason})

    return Handler
