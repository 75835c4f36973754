"""The live engine (``tickforge run``): ticks in, orders out, fills booked, on one asyncio event loop.

Data flows one way. Per decoded frame, each stage is one compiled call over the whole frame, and the
book path goes first so its orders do not wait for the heavier bar-close work of the same frame:

    feed (StreamClient, decodes) -> book (quotes / orderbook deltas) -> on_book -> pre-trade risk -> router
                                 -> bars (trades) -> streaming features (at bar close) -> cross-section
                                    over the universe (backend kernels) -> on_bar -> pre-trade risk -> router
    trade_updates -> fills -> P&L -> on_fill

Every frame is stamped at receive, decode, book, features, strategy and risk; an order born from it
adds send (request handed to the router) and ack (first of the REST answer or the stream's ``new``
event). ``engine.latency`` turns the stamps into per-stage histograms.

Where it runs:

- No credentials: the embedded exchange and paper broker (``engine.sim.server.SimStack``) on
  localhost, a synthetic session seeded by ``sim.seed``.
- Alpaca credentials (config file or ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY``): Alpaca paper; live
  trading only with ``alpaca.live = true`` *and* ``allow_live`` (the ``--live`` flag).

Determinism (``LiveConfig.lockstep``, embedded simulator only): the exchange releases frame k+1 only
after the engine has processed frame k, every order it caused was answered, and every trade_updates
event the broker emitted so far was booked. Messages carry the market's synthetic clock and risk uses
event time, so a seed gives the same orders, fills and P&L on any machine. In real-time mode the
exchange paces by ``sim.messages_per_s`` and orders go out concurrently.

Stops after ``duration_s`` (wall time), after ``max_messages`` market data messages, on SIGINT/SIGTERM
or ``request_stop()``. Shutdown: no new orders, the strategy's ``on_stop``, every open order cancelled
(unknown submit outcomes resolved by client_order_id first), acks awaited up to
``shutdown_timeout_s``, missed fills reconciled, then the summary. The kill switch (``halt``; from
``POST /halt`` on the metrics port or a file at ``halt_file``) sets risk to HALTED and cancels open
orders; market data and marks keep flowing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import gc
import importlib
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from engine._jit import FixedTypes
from engine.backend import Backend, resolve_backend
from engine.config import LiveConfig, SimConfig, TickforgeConfig
from engine.dashboard import Dashboard, RunView, print_summary
from engine.errors import InputError
from engine.events import (
    BAR_DTYPE,
    ORDER_LIMIT,
    ORDER_MARKET,
    ORDER_STOP,
    ORDER_STOP_LIMIT,
    SIDE_BUY,
    TIF_CLS,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_IOC,
    TIF_OPG,
)
from engine.latency import (
    T_ACK,
    T_BOOK,
    T_DECODE,
    T_FEATURES,
    T_RISK,
    T_SEND,
    T_STRATEGY,
    LatencyRecorder,
    now_ns,
)
from engine.metrics import LiveCollector, LiveStats, MetricsServer, SymbolRow
from engine.strategies import (
    BarClose,
    CancelIntent,
    CrossSection,
    Fill,
    OpenOrder,
    OrderIntent,
    Strategy,
    StrategyContext,
    load_strategy,
)

log = logging.getLogger("tickforge.live")

_ORDER_TYPE_NAMES = {ORDER_MARKET: "market", ORDER_LIMIT: "limit", ORDER_STOP: "stop", ORDER_STOP_LIMIT: "stop_limit"}
_TIF_NAMES = {TIF_DAY: "day", TIF_GTC: "gtc", TIF_IOC: "ioc", TIF_FOK: "fok", TIF_OPG: "opg", TIF_CLS: "cls"}
_FINAL_EVENTS = frozenset({"canceled", "expired", "rejected", "done_for_day", "replaced"})
_ACK_EVENTS = frozenset({"new", "accepted", "pending_new", "fill", "partial_fill"})
QTY_EPS = 1e-9
#: lock-step: a granted frame missing this long (no reconnect seen) is taken as lost
LOCKSTEP_STALL_S = 30.0
#: universes with more feature cells than this compute the cross-section on a worker thread
OFFLOAD_CELLS = 200_000
#: finished orders kept for late trade_updates events; older ones are forgotten (bounded memory)
KEEP_FINISHED_ORDERS = 10_000
#: asyncio can start a task eagerly (run it until it first waits) from Python 3.12 on
_EAGER_TASKS = sys.version_info >= (3, 12)
#: price increments for order prices: cents at or above $1, hundredths of a cent below
_PRICE_PLACES = (2, 4)


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One booked execution of one of the engine's orders, in booking order."""

    order_seq: int
    symbol: str
    side: int
    qty: float
    price: float
    tag: str


@dataclass
class RunSummary:
    """What a run did; ``tickforge run`` prints it, tests assert on it."""

    mode: str                           # "sim", "paper" or "live"
    seed: int | None
    strategy: str
    backend: str
    lockstep: bool
    elapsed_s: float
    messages: int
    stats: LiveStats
    latency: dict[str, dict[str, float]]
    rows: list[SymbolRow]
    fills: list[FillRecord]
    realized_pnl: float
    unrealized_pnl: float
    open_orders_left: int
    broker_positions: list[dict[str, Any]] | None = None
    broker_account: dict[str, Any] | None = None
    error: str = ""

    @property
    def total_pnl(self) -> float:
        return self.realized_pnl + self.unrealized_pnl

    def positions(self) -> dict[str, float]:
        return {r.symbol: r.position for r in self.rows if r.position != 0.0}

    def view(self) -> RunView:
        title = f"tickforge run: {self.mode}" + (f" seed {self.seed}" if self.seed is not None else "")
        title += f", strategy {self.strategy}, backend {self.backend}" + (", lock-step" if self.lockstep else "")
        if self.error:
            title += f"  [stopped by error: {self.error}]"
        return RunView(title, self.elapsed_s, self.stats, self.rows, self.latency)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("rows", "fills")}
        out["rows"] = [asdict(r) for r in self.rows]
        out["fills"] = [asdict(f) for f in self.fills]
        out["total_pnl"] = self.total_pnl
        return out


@dataclass(slots=True)
class _OrderTrack:
    """The engine's side of one order: ids, and whether it is still live."""

    seq: int
    client_order_id: str
    order: OpenOrder
    order_id: str | None = None
    acked: bool = False
    time_in_force: int = TIF_DAY
    unknown: bool = False       # submit outcome not known: resolve by client_order_id
    terminal: bool = False
    send_done: asyncio.Event = field(default_factory=asyncio.Event)


class CrossSectionStep:
    """The universe-wide step at each bar close: feature z-scores and ranks, rolling beta/correlation.

    Keeps each symbol's latest feature row and a ring of per-bar returns (a symbol without a bar at a
    boundary carries its close forward: return 0). The kernels come from the resolved backend.
    """

    def __init__(self, backend: Backend, n_symbols: int, feature_names: tuple[str, ...], benchmark_id: int, beta_window: int) -> None:
        self.backend = backend
        self.kernels = importlib.import_module(backend.kernels.__name__ + ".cross_section")
        self.feature_names = feature_names
        self.benchmark_id = int(benchmark_id)
        self.beta_window = int(beta_window)
        self.features = np.full((n_symbols, len(feature_names)), np.nan)
        self.last_close = np.full(n_symbols, np.nan)
        self._returns = np.full((self.beta_window, n_symbols), np.nan)
        self.boundaries = 0

    @property
    def cells(self) -> int:
        return self.features.size

    def on_boundary(self, symbol_ids: np.ndarray, closes: np.ndarray, feature_rows: np.ndarray) -> None:
        """The closed symbols' feature rows and closes, and one more bar of returns (oldest first)."""
        c = np.ascontiguousarray  # the compiled call is bound to these exact array types
        _on_boundary(c(symbol_ids, dtype=np.int64), c(closes, dtype=np.float64), c(feature_rows, dtype=np.float64),
                     self.features, self.last_close, self._returns)
        self.boundaries += 1

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the panel and of the return window in time order (safe to hand to a thread)."""
        return self.features.copy(), self._returns.copy()

    def compute(self, features: np.ndarray, window: np.ndarray) -> CrossSection:
        k = self.kernels
        zscore = np.asarray(k.cross_sectional_zscore(features))
        rank = np.asarray(k.cross_sectional_rank(features))
        beta, corr = k.rolling_beta_corr(window, self.benchmark_id, self.beta_window)
        return CrossSection(
            self.feature_names, zscore, rank, np.asarray(beta)[-1], np.asarray(corr)[-1], self.benchmark_id, self.backend.name
        )


@njit(cache=True, error_model="numpy")
def _on_boundary(symbol_ids, closes, feature_rows, features, last_close, returns):  # pragma: no cover - njit
    # one call: at a bar close the Python version's six numpy operations ran on cold caches
    n_feat = features.shape[1]
    for k in range(symbol_ids.shape[0]):
        for f in range(n_feat):
            features[symbol_ids[k], f] = feature_rows[k, f]
    newest = returns.shape[0] - 1
    for t in range(newest):
        for j in range(returns.shape[1]):
            returns[t, j] = returns[t + 1, j]
    for j in range(returns.shape[1]):
        returns[newest, j] = last_close[j] / last_close[j] - 1.0  # carried forward: 0, or NaN before a close
    for k in range(symbol_ids.shape[0]):
        returns[newest, symbol_ids[k]] = closes[k] / last_close[symbol_ids[k]] - 1.0
    for k in range(symbol_ids.shape[0]):
        last_close[symbol_ids[k]] = closes[k]


_on_boundary = FixedTypes(_on_boundary)


class DeferredCrossSection:
    """A bar close's cross-section, computed from the inputs of its boundary when the strategy first
    reads any of it, or right after the frame's decisions otherwise.

    Every bar close still gets its universe step; a strategy whose ``on_bar`` does not look at it
    (the shipped MA/RSI without a beta cap) decides without waiting for it. Reads as a
    ``CrossSection`` (``zscore``, ``rank``, ``beta``, ...); ``resolve()`` returns the real one."""

    __slots__ = ("_compute", "_value")

    def __init__(self, compute: Any) -> None:
        self._compute = compute
        self._value: CrossSection | None = None

    def resolve(self) -> CrossSection:
        if self._value is None:
            self._value = self._compute()
            self._compute = None
        return self._value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"DeferredCrossSection({'computed' if self._value is not None else 'pending'})"


class LiveEngine:
    """The live pipeline. ``await LiveEngine(config).run()`` returns a ``RunSummary``."""

    def __init__(
        self,
        config: TickforgeConfig | None = None,
        *,
        strategy: Strategy | None = None,
        allow_live: bool = False,
        symbols: list[str] | None = None,
    ) -> None:
        self.config = config or TickforgeConfig.load()
        self.live_cfg: LiveConfig = self.config.live
        alpaca = self.config.alpaca
        if alpaca.live and not allow_live:
            raise InputError("alpaca.live is true: live trading also needs the --live flag (allow_live=True)")
        if allow_live and not alpaca.live:
            raise InputError("--live given but alpaca.live is false in the configuration; refusing to guess")
        if allow_live and not alpaca.has_credentials:
            raise InputError("--live needs Alpaca credentials (APCA_API_KEY_ID / APCA_API_SECRET_KEY)")
        self.mode = ("live" if alpaca.live else "paper") if alpaca.has_credentials else "sim"
        if self.live_cfg.lockstep and self.mode != "sim":
            raise InputError("lock-step runs need the embedded simulator (no Alpaca credentials configured)")
        self.strategy = strategy if strategy is not None else load_strategy(self.live_cfg.strategy, self.live_cfg.strategy_params)
        self.strategy_name = getattr(self.strategy, "name", type(self.strategy).__name__)
        self._symbols_override = symbols
        self.stats = LiveStats()
        self.latency = LatencyRecorder()
        self.fills: list[FillRecord] = []
        self.error = ""
        self._orders: dict[int, _OrderTrack] = {}
        self._by_coid: dict[str, int] = {}
        self._done: collections.deque[int] = collections.deque()  # finished orders, oldest first
        self._open: set[int] = set()
        self._next_seq = 1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = True
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._stop_reason = ""
        self._messages = 0
        self._started = 0.0
        self._finished = 0.0
        self._strategy_error_logs = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._last_grant = 0.0
        self._frames_since_grant = 0
        self._connects_at_grant = 0
        self._signals: list[int] = []
        self.sim: Any = None
        self.feed: Any = None
        self.trade_updates: Any = None
        self.router: Any = None
        self.metrics: MetricsServer | None = None
        self.recorder: Any = None  # engine.marketdata.recorder.Recorder while --record is on
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gc_frozen = False
        self._cpus_before: set[int] | None = None  # the CPU set before live.cpu_affinity pinned the engine

    # --- public control --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Started (feed connected, trading) and not yet shutting down."""
        return bool(self._started) and not self._stopping

    @property
    def lockstep(self) -> bool:
        return self.live_cfg.lockstep

    def request_stop(self, reason: str = "stop requested") -> None:
        """End the run (graceful shutdown follows). Safe to call more than once."""
        if self._stop_event is not None and not self._stop_event.is_set():
            self._stop_reason = reason
            log.info("stopping: %s", reason)
            self._stop_event.set()

    def halt(self, reason: str = "kill switch") -> None:
        """Kill switch: deny every new order and cancel the open ones. Market data keeps flowing."""
        if self.stats.trading_state == "HALTED" or not hasattr(self, "risk"):
            return
        self.risk.halt(reason)
        self.stats.trading_state = "HALTED"
        self.stats.halt_reason = reason
        log.warning("trading HALTED: %s; cancelling %d open orders", reason, len(self._open))
        if self._loop is not None and not self._loop.is_closed():
            self._spawn(self._cancel_all_open())

    def halt_threadsafe(self, reason: str) -> None:
        """``halt`` from another thread (the metrics server); raises once the loop is gone."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping:
            raise RuntimeError("engine is not running")
        loop.call_soon_threadsafe(self.halt, reason)

    # --- run ------------------------------------------------------------------------------------
    async def run(self) -> RunSummary:
        """Start everything, trade until a stop condition, shut down gracefully, return the summary.

        A failure to start (feed refused the credentials, venue unreachable) is raised after
        everything that did start was stopped again."""
        self._stop_event = asyncio.Event()
        try:
            await self.start()
            await self._wait_for_stop()
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            await self.shutdown()
            await self._close_connections()
            raise
        await self.shutdown()
        return await self.summary()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
        cfg = self.config
        live = self.live_cfg
        key_id, secret_key, trading_url, feed_url = await self._connect_venue()
        self._pin_cpus(live.cpu_affinity)  # after the venue's process started: it must not inherit the pin
        self.build(self.universe)

        import httpx  # noqa: PLC0415 - the network stack loads on run

        from engine.execution.client import AlpacaRestClient  # noqa: PLC0415
        from engine.execution.router import OrderRouter  # noqa: PLC0415
        from engine.execution.trade_updates import TradeUpdatesStream  # noqa: PLC0415
        from engine.marketdata.client import StreamClient  # noqa: PLC0415

        client = AlpacaRestClient(trading_url, key_id, secret_key, cfg.execution)
        self.router = OrderRouter(client, cfg.execution, quotes=self._quote_of, session_id=self._ids.session_id)
        self.router.ids = self._ids  # one id sequence: decided orders get their client_order_id up front
        self.trade_updates = TradeUpdatesStream(
            client, state=self.router.state, on_fill=self._on_fill, on_event=self._on_event,
            retry=self.router.retry, healthy_after_s=cfg.feed.healthy_after_s,
        )
        await self.trade_updates.start()
        await self.trade_updates.wait_connected(timeout=15.0)
        try:
            await client.connect_ahead()  # the first order must not wait for a TCP (and TLS) handshake
        except httpx.HTTPError as exc:
            log.warning("order lane: could not connect ahead (%s); the first order connects instead", exc)

        if live.metrics_port:
            collector = LiveCollector(self.stats, self.latency, self.symbol_rows)
            self.metrics = MetricsServer(collector, self.halt_threadsafe, live.metrics_host, live.metrics_port, status=self.status)
            self.metrics.start()

        if live.record_path:
            from engine.marketdata.recorder import Recorder  # noqa: PLC0415 - only when recording

            target = Path(live.record_path)
            if not target.parent.is_dir():
                raise InputError(f"cannot record to {target}: directory {target.parent} does not exist")
            try:
                self.recorder = Recorder(target, source=feed_url)
            except OSError as exc:
                raise InputError(f"cannot record to {target}: {exc.strerror or exc}") from None
            self._spawn(self._flush_recording())
        channels = ["trades", "quotes"] + (["bars"] if self.mode == "sim" else [])
        feed_cfg = cfg.feed if self.mode != "sim" else cfg.feed.model_copy(update={"symbols": tuple(self.universe)})
        self.feed = StreamClient(
            feed_url, key_id=key_id, secret_key=secret_key, feed=feed_cfg,
            subscriptions={c: self.universe for c in channels}, decoder=self.decoder, on_batch=self._on_batch,
            seed=cfg.sim.seed if self.mode == "sim" else None,
            # the recorder itself is the hook: with recording off the client sees None and skips it
            on_frame=self._record_frame if self.recorder is not None else None,
        )
        self.strategy_ctx_start()
        self._started = time.monotonic()
        await self.feed.connect(timeout=15.0)
        if self.lockstep:
            self._grant()
            self._spawn(self._lockstep_watchdog())
        if live.halt_file:
            self._spawn(self._watch_halt_file(Path(live.halt_file)))
        if live.busy_poll:
            rehearsal = None
            if live.rehearse_us and not self.lockstep:  # lock-step is about determinism, not latency
                from engine.rehearsal import HotPathRehearsal  # noqa: PLC0415 - only with the busy poller

                rehearsal = HotPathRehearsal(self, live.rehearse_us)
            self._spawn(self._busy_poll(rehearsal))
        self._spawn(self._watch_feed())
        self._install_signal_handlers()
        self.freeze_startup_objects()
        log.info(
            "live engine running: %s, %d symbols, strategy %s, backend %s%s",
            self.mode, len(self.universe), self.strategy_name, self.backend.name, ", lock-step" if self.lockstep else "",
        )

    async def _connect_venue(self) -> tuple[Any, Any, str, str]:
        cfg = self.config
        if self.mode == "sim":
            from engine.sim.server import SimStack  # noqa: PLC0415

            if self.lockstep or not cfg.sim.own_process:
                frame = self.live_cfg.frame_messages if self.lockstep else None
                self.sim = SimStack(cfg.sim, symbols=self._symbols_override, lockstep_frame_messages=frame)
            else:
                from engine.sim.process import SimProcess  # noqa: PLC0415

                self.sim = SimProcess(cfg.sim, symbols=self._symbols_override)
            await self.sim.start()
            self.universe = list(self.sim.symbols)
            return cfg.sim.key_id, cfg.sim.secret_key, self.sim.trading_url, self.sim.feed_url
        from engine.marketdata.client import stream_url  # noqa: PLC0415

        universe = list(self._symbols_override or cfg.feed.symbols)
        if not universe:
            raise InputError("no symbols to trade: set feed.symbols in the config (or TICKFORGE_FEED__SYMBOLS)")
        self.universe = universe
        alpaca = cfg.alpaca
        return alpaca.key_id, alpaca.secret_key, alpaca.base_trading_url, stream_url(alpaca, "stocks")

    def build(self, universe: list[str]) -> None:
        """Build the pipeline for ``universe`` without any venue connection (``start`` calls this;
        benchmarks and replays call it directly, then feed ``process_frame``)."""
        self.universe = list(universe)
        self.backend = resolve_backend(self.live_cfg.backend)
        self._build_pipeline()
        self._warm_up()

    def _pin_cpus(self, cpus: tuple[int, ...]) -> None:
        """Run the engine on ``cpus`` only (``shutdown`` restores the old set)."""
        if not cpus:
            return
        if not hasattr(os, "sched_setaffinity"):
            raise InputError("live.cpu_affinity needs an OS with sched_setaffinity (Linux)")
        before = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, cpus)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot pin the engine to CPUs {sorted(cpus)} (this machine has {sorted(before)}): {exc}") from None
        self._cpus_before = before
        log.info("engine pinned to CPUs %s", sorted(cpus))

    def freeze_startup_objects(self) -> None:
        """Take everything alive now (modules, compiled kernels, the pipeline) out of the garbage
        collector's generations (``gc.freeze``): a full collection mid-run then walks only what the
        run itself allocated, instead of stalling a frame for milliseconds. ``shutdown`` undoes it."""
        gc.collect()
        gc.freeze()
        self._gc_frozen = True

    def process_frame(self, batch: Any) -> list[tuple[str, int]]:
        """Run one decoded frame through book, bars, features, strategy and risk; returns the
        ``("send" | "cancel", order_seq)`` actions it decided (not dispatched). Off-loop cross-sections
        are computed inline here."""
        actions, pending = self._process_frame(batch)
        for bar_close, (features, window) in pending:
            cs = self.cross_section.compute(features, window)
            self.stats.cross_section_steps += 1
            actions += self._decide(self._call_strategy("on_bar", _with_cross_section(bar_close, cs)), self.ctx.now_ns)
        self._resolve_deferred()
        return actions

    def settle_offline(self, actions: list[tuple[str, int]], *, fill_market: bool = False) -> None:
        """Stand in for a venue when ``process_frame`` runs without one (benchmarks, dry runs): every
        cancel is confirmed at once; new orders rest unfilled, except market orders with
        ``fill_market``, which fill whole at the touch (the ask for a buy) and are booked as a broker's
        fill would be, ``on_fill`` and the orders it decides included."""
        work = collections.deque(actions)
        while work:
            kind, seq = work.popleft()
            if kind == "cancel":
                self._finalize(seq)
                continue
            track = self._orders[seq]
            o = track.order
            if not fill_market or o.order_type != ORDER_MARKET:
                continue
            touch = self.ctx.best_ask_price if o.side == SIDE_BUY else self.ctx.best_bid_price
            price = float(touch[o.symbol_id])
            if price > 0:
                work += self._book_fill(self.universe[o.symbol_id], o.side, o.qty, price, f"offline-{seq}", self.ctx.now_ns,
                                        _OfflineOrder(track.client_order_id))

    def _build_pipeline(self) -> None:
        from engine.bars import BarAggregator  # noqa: PLC0415
        from engine.book import BookManager  # noqa: PLC0415
        from engine.hotpath import BookingDecoder, FrameBook  # noqa: PLC0415
        from engine.features import DEFAULT_MACD, DEFAULT_WINDOWS, StreamingFeatures  # noqa: PLC0415
        from engine.marketdata.symbols import SymbolMap  # noqa: PLC0415
        from engine.risk.engine import RiskEngine  # noqa: PLC0415
        from engine.risk.pnl import PnlTracker  # noqa: PLC0415

        n = len(self.universe)
        self.symbol_map = SymbolMap(self.universe, mode="strict")
        # prices as ticks of 1/100 cent: exact for sub-dollar stocks as well as for cents
        self.book = BookManager(n, 0.0001)
        self._mark_ids = np.zeros(n, dtype=np.int64)
        self._mids = np.zeros(n, dtype=np.float64)
        # marks of flat symbols wait here until something reads them (risk check, fill, view)
        self._mark_pending = np.zeros(n, dtype=np.bool_)
        self._mark_pending_mid = np.zeros(n, dtype=np.float64)
        self._n_mark_pending = 0
        self._bar_ns = self.live_cfg.bar_seconds * 1_000_000_000
        self._next_bar_end = 0  # no bar can close before this event time: skip the flush call
        self.bars = BarAggregator(n, [self.live_cfg.bar_seconds])
        windows = tuple(getattr(self.strategy, "feature_windows", ()) or DEFAULT_WINDOWS)
        windows = tuple(w for w in windows if w >= 2) or DEFAULT_WINDOWS
        self.features = StreamingFeatures(windows, DEFAULT_MACD, n)
        self._feature_names = tuple(self.features.names)
        tracker = PnlTracker.from_config(self.config.risk, self.symbol_map)
        self.risk = RiskEngine(self.config.risk, tracker)
        self.stats.trading_state = self.risk.state
        bench_name = self.live_cfg.benchmark_symbol or ("SPY" if "SPY" in self.universe else self.universe[0])
        if bench_name not in self.universe:
            raise InputError(f"benchmark symbol {bench_name!r} is not in the traded universe")
        self.cross_section = CrossSectionStep(
            self.backend, n, tuple(self.features.names), self.universe.index(bench_name), self.live_cfg.beta_window
        )
        self._offload = self.backend.is_gpu or self.cross_section.cells > OFFLOAD_CELLS
        self._deferred: list[DeferredCrossSection] = []  # this frame's cross-sections not read yet
        if self._offload:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tickforge-cross-section")
        self.ctx = StrategyContext(self.universe)
        # the feed's decoder applies each frame's quotes to the books as it decodes (engine.hotpath)
        self.frame_book = FrameBook(self.book, self.ctx)
        self.decoder = BookingDecoder(self.symbol_map, self.frame_book)
        from engine.execution.router import ClientOrderIds, new_session_id  # noqa: PLC0415

        self._ids = ClientOrderIds(self.config.execution.client_order_id_prefix, new_session_id())

    def _warm_up(self) -> None:
        """Compile (or load from cache) every kernel before the first frame, so latency is steady."""
        from engine.events import TRADE_DTYPE  # noqa: PLC0415

        fb = self.frame_book
        fb.warm()
        self.decoder.warm()
        ctx = self.ctx
        _finish_changed(fb.changed, 0, ctx.best_bid_price, ctx.best_ask_price, ctx.position,
                        self._mark_pending, self._mark_pending_mid, self._mark_ids, self._mids)
        _take_pending_marks(self._mark_pending, self._mark_pending_mid, self._mark_ids, self._mids)
        self.bars.add_trades(np.zeros(0, dtype=TRADE_DTYPE))
        self.bars.flush(0)
        from engine.features import StreamingFeatures  # noqa: PLC0415

        scratch = StreamingFeatures(self.features.windows, self.features.macd, 1)
        scratch.update(0, 1.0, 1.0, 1.0, 1.0, 1.0)
        _bar_columns(_NO_BARS, _NO_BARS)
        n_features = len(self._feature_names)
        _on_boundary(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, n_features)), np.zeros((1, n_features)),
                     np.zeros(1), np.zeros((2, 1)))
        self._warm_decoder()
        n = min(3, len(self.universe))
        k = self.cross_section.kernels
        k.cross_sectional_zscore(np.ones((n, 2)))
        k.cross_sectional_rank(np.ones((n, 2)))
        k.rolling_beta_corr(np.ones((3, n)), 0, 2)
        self.latency.record_frame()
        # bind the order-chain calls on a chain no order has (-1: the ring's empty id); both record nothing
        self.latency.open_chain(-1)
        self.latency.stamp(-1, T_ACK, 0)

    def _warm_decoder(self) -> None:
        """Decode one msgpack and one JSON frame on a scratch booking decoder (the feed's kind): the
        feed's first real frame must not stall the loop compiling (in lock-step that would look like a
        lost frame), with quotes booked as the feed books them. ``self.decoder.warm()`` binds the feed's own instance."""
        import msgspec  # noqa: PLC0415

        from engine.book import BookManager  # noqa: PLC0415
        from engine.hotpath import BookingDecoder, FrameBook  # noqa: PLC0415
        from engine.marketdata.symbols import SymbolMap  # noqa: PLC0415
        from engine.marketdata.timestamps import format_rfc3339, msgpack_timestamp_payload  # noqa: PLC0415

        t = 1_704_205_800_000_000_000
        msgs = [
            {"T": "q", "S": "W", "bx": "V", "bp": 1.0, "bs": 1.0, "ax": "V", "ap": 1.01, "as": 1.0, "t": t, "c": ["R"], "z": "A"},
            {"T": "t", "S": "W", "i": 1, "x": "V", "p": 1.0, "s": 1.0, "t": t, "c": ["@"], "z": "A"},
            {"T": "b", "S": "W", "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 1.0, "t": t, "n": 1, "vw": 1.0},
        ]
        scratch = BookingDecoder(SymbolMap(["W"]), FrameBook(BookManager(1, 0.0001), StrategyContext(["W"])), log_drops=False)
        try:
            scratch.decode(msgspec.msgpack.encode([{**m, "t": msgspec.msgpack.Ext(-1, msgpack_timestamp_payload(t))} for m in msgs]), 0)
            scratch.decode(msgspec.json.encode([{**m, "t": format_rfc3339(t)} for m in msgs]), 0)
        except Exception:  # warming is best effort; the real frame compiles if this could not
            log.debug("decoder warm-up skipped", exc_info=True)

    def strategy_ctx_start(self) -> None:
        try:
            if hasattr(self.strategy, "on_start"):
                self.strategy.on_start(self.ctx)
        except Exception as exc:
            raise InputError(f"strategy {self.strategy_name} failed to start: {type(exc).__name__}: {exc}") from exc

    async def _wait_for_stop(self) -> None:
        assert self._stop_event is not None
        try:
            await asyncio.wait_for(self._stop_event.wait(), self.live_cfg.duration_s)
        except TimeoutError:
            self._stop_reason = f"duration {self.live_cfg.duration_s:g} s reached"
        log.info("run ending: %s", self._stop_reason)

    # --- the per-frame pipeline -------------------------------------------------------------------
    async def _on_batch(self, batch: Any) -> None:
        """One decoded frame from the feed. Never raises: a bad frame is a counted drop."""
        if self._stopping:
            return
        self._frames_since_grant += 1
        try:
            if self.lockstep:
                await self._settle_broker_events()
            # real time: the book path's orders go out before the bar path of the same frame runs
            actions, pending_bars = self._process_frame(batch, send_now=None if self.lockstep else self._send_now)
            if pending_bars:
                if self.lockstep:
                    actions += await self._finish_bar_closes(pending_bars, batch.recv_ns)
                else:
                    self._spawn(self._finish_and_send(pending_bars, batch.recv_ns))
            await self._dispatch(actions)
            self._resolve_deferred()
        except Exception:
            LiveStats.bump(self.stats.drops, "engine_error")
            log.exception("live engine: frame processing failed; frame dropped, engine continues")
        if self.live_cfg.max_messages and self._messages >= self.live_cfg.max_messages:
            self.request_stop(f"max_messages {self.live_cfg.max_messages} reached")
            return
        if self.lockstep and not self._stopping:
            await self._settle_broker_events()
            self._grant()

    def _process_frame(self, batch: Any, send_now: Any = None) -> tuple[list[tuple[str, int]], list[Any]]:
        """Book path, then bar path; returns the actions decided (and the off-loop bar closes).
        ``send_now`` (real time) takes the book path's actions at once instead."""
        lat = self.latency
        stamps = lat.begin_frame(batch.recv_ns)
        stamps[T_DECODE] = now_ns()
        stats = self.stats
        stats.frames += 1
        self._messages += batch.n_messages
        counts = stats.messages
        n = len(batch.quotes)
        if n:
            counts["quote"] = counts.get("quote", 0) + n
        n = len(batch.trades)
        if n:
            counts["trade"] = counts.get("trade", 0) + n
        if len(batch.bars):
            counts["bar"] = counts.get("bar", 0) + len(batch.bars)
        if batch.n_book_messages:
            counts["book"] = counts.get("book", 0) + batch.n_book_messages
        if batch.drops:
            for drop in batch.drops:
                LiveStats.bump(stats.drops, drop.reason)
        event_ns = batch.last_ts_ns or batch.recv_ns
        self.ctx.now_ns = event_ns

        # the book path first: its decisions (quotes, signals on the touch) are the latency-critical
        # ones and do not wait for the heavier bar-close work of the same frame
        actions = self._book_path(batch, stamps, event_ns)
        if actions and send_now is not None:
            send_now(actions)
            actions = []
        lat.record_frame()
        if not len(batch.trades) and event_ns < self._next_bar_end:
            return actions, []

        # the bar path: trades into bars, and at a close features, the cross-section and on_bar.
        # Its stamps restart at "book" (the moment it began), so "features" times the bar work alone,
        # while an order born here still measures its tick-to-decision from the frame's receive time.
        stamps = lat.begin_frame(batch.recv_ns)
        stamps[T_BOOK] = now_ns()
        closes, pending = self._apply_trades(batch.trades, event_ns)
        stamps[T_FEATURES] = now_ns()
        if closes:
            intents = []
            for bar_close in closes:
                intents += self._call_strategy("on_bar", bar_close)
            stamps[T_STRATEGY] = now_ns()
            actions += self._decide(intents, event_ns)
        lat.record_frame(T_FEATURES)
        return actions, pending

    def _book_path(self, batch: Any, stamps: np.ndarray, event_ns: int) -> list[tuple[str, int]]:
        """Books, ``on_book`` and risk: the frame's latency-critical decisions."""
        changed = self._apply_book(batch)
        stamps[T_BOOK] = now_ns()
        if not len(changed):
            return []
        intents = self._call_strategy("on_book", changed)
        stamps[T_STRATEGY] = now_ns()
        return self._decide(intents, event_ns)

    def _apply_book(self, batch: Any) -> np.ndarray:
        quotes, deltas = batch.quotes, batch.book_deltas
        if not len(quotes) and not len(deltas):
            return _NO_SYMBOLS
        fb = self.frame_book
        if not batch.booked:  # a frame the decoder did not book as it decoded (msgspec fallback, replays)
            fb.begin()
            fb.apply(quotes, quotes=True)
        fb.apply(deltas, quotes=False)
        if fb.dropped:
            LiveStats.bump(self.stats.drops, "book_rejected", fb.dropped)
        ctx = self.ctx
        n_changed = fb.n_changed
        # one call: sort the touched symbols, mark the ones held now (P&L and the daily loss limit see
        # every move of a position) and park the mids of flat ones until a risk check or view needs them
        marked = _finish_changed(fb.changed, n_changed, ctx.best_bid_price, ctx.best_ask_price, ctx.position,
                                 self._mark_pending, self._mark_pending_mid, self._mark_ids, self._mids)
        if marked:
            self.risk.update_marks(self._mark_ids[:marked], self._mids[:marked])
        self._n_mark_pending += n_changed - marked
        return fb.changed[:n_changed].copy()

    def _flush_marks(self) -> None:
        """Hand the parked marks of flat symbols to risk (before a check, a fill, a view)."""
        if self._n_mark_pending:
            self._n_mark_pending = 0
            n = _take_pending_marks(self._mark_pending, self._mark_pending_mid, self._mark_ids, self._mids)
            if n:
                self.risk.update_marks(self._mark_ids[:n], self._mids[:n])

    def _apply_trades(self, trades: np.ndarray, event_ns: int) -> tuple[list[BarClose], list[Any]]:
        """Fold trades into bars; at each closed boundary update features and the cross-section."""
        closed = self.bars.add_trades(trades).bars if len(trades) else _NO_BARS
        flushed = _NO_BARS
        if event_ns >= self._next_bar_end:
            # bars end on multiples of bar_ns: until the feed's clock passes the next one, flush has nothing
            flushed = self.bars.flush(event_ns).bars
            self._next_bar_end = (event_ns // self._bar_ns + 1) * self._bar_ns
        if not len(closed) and not len(flushed):
            return [], []
        # both batches' bars as columns in one compiled call (the record views' copies and the checks
        # for one boundary were most of the Python here); the shared empty batch is read-only
        one_boundary, ts_all, ids_all, cols_all = _bar_columns(_plain_bars(closed), _plain_bars(flushed))
        closes: list[BarClose] = []
        pending: list[Any] = []
        for ts in ts_all[:1] if one_boundary else np.unique(ts_all):
            if one_boundary:  # the usual case
                ids, cols = ids_all, cols_all
            else:
                at = ts_all == ts
                ids, cols = ids_all[at], cols_all[:, at]
            rows = self.features.step(ids, cols[1], cols[2], cols[3], cols[4], cols[5])
            self.cross_section.on_boundary(ids, cols[3], rows)
            self.stats.bar_closes += 1
            deferred = None
            if not self._offload:  # offloaded: on_bar waits for the step on the worker thread
                deferred = DeferredCrossSection(functools.partial(self._step_cross_section, *self.cross_section.inputs()))
                self._deferred.append(deferred)
            bar_close = BarClose(int(ts), ids.astype(np.int32), cols[0], cols[1], cols[2], cols[3], cols[4], rows,
                                 self._feature_names, deferred)
            if self._offload:
                pending.append((bar_close, self.cross_section.inputs()))
            else:
                closes.append(bar_close)
        return closes, pending

    def _step_cross_section(self, features: np.ndarray, window: np.ndarray) -> CrossSection:
        cs = self.cross_section.compute(features, window)
        self.stats.cross_section_steps += 1
        return cs

    def _resolve_deferred(self) -> None:
        """Compute the cross-sections this frame's strategy did not read (after its orders went out)."""
        deferred, self._deferred = self._deferred, []
        for cs in deferred:
            cs.resolve()

    async def _finish_bar_closes(self, pending: list[Any], recv_ns: int) -> list[tuple[str, int]]:
        """Cross-sections computed on the worker thread, then ``on_bar`` and risk on the loop."""
        loop = asyncio.get_running_loop()
        actions: list[tuple[str, int]] = []
        for bar_close, (features, window) in pending:
            cs = await loop.run_in_executor(self._pool, self.cross_section.compute, features, window)
            self.stats.cross_section_steps += 1
            if self._stopping:
                break
            stamps = self.latency.begin_frame(recv_ns)
            stamps[T_FEATURES] = now_ns()
            intents = self._call_strategy("on_bar", _with_cross_section(bar_close, cs))
            stamps[T_STRATEGY] = now_ns()
            actions += self._decide(intents, self.ctx.now_ns)
        return actions

    async def _finish_and_send(self, pending: list[Any], recv_ns: int) -> None:
        await self._dispatch(await self._finish_bar_closes(pending, recv_ns))

    # --- strategy, risk, orders -------------------------------------------------------------------
    def _call_strategy(self, handler: str, *args: Any) -> list[Any]:
        method = getattr(self.strategy, handler, None)
        if method is None:
            return []
        try:
            out = method(self.ctx, *args)
            return list(out) if out else []
        except Exception as exc:
            self.stats.strategy_errors += 1
            if self._strategy_error_logs < 5:
                self._strategy_error_logs += 1
                log.exception("strategy %s.%s raised; its output is dropped", self.strategy_name, handler)
            if self.live_cfg.halt_on_strategy_error:
                self.halt(f"strategy error in {handler}: {type(exc).__name__}")
            return []

    def _decide(self, intents: list[Any], event_ns: int) -> list[tuple[str, int]]:
        """Risk-check the strategy's intents in order; returns the actions to dispatch.

        The decision is stamped once every intent has passed or failed pre-trade risk; booking the
        approved ones (ids, tracking) is the first step of sending them."""
        plan: list[tuple[str, Any]] = []  # ("cancel", order_seq) or ("send", approved intent), in intent order
        if intents and self._n_mark_pending:
            self._flush_marks()
        risk_ts = event_ns if self.lockstep else 0  # lock-step: the rate window runs on event time
        n = len(self.universe)
        for intent in intents:
            if isinstance(intent, CancelIntent):
                if intent.order_seq in self._open:
                    plan.append(("cancel", intent.order_seq))
                continue
            if not isinstance(intent, OrderIntent):
                LiveStats.bump(self.stats.drops, "bad_intent")
                continue
            if not self._accepting:
                LiveStats.bump(self.stats.denials, "SHUTTING_DOWN")
                continue
            sid = int(intent.symbol_id)
            if not 0 <= sid < n:
                LiveStats.bump(self.stats.denials, "UNKNOWN_SYMBOL")
                continue
            code = self.risk.check(sid, int(intent.side), float(intent.qty), float(intent.limit_price), int(intent.order_type), ts_ns=risk_ts)
            if code:
                from engine.risk.codes import denial_name  # noqa: PLC0415 - cheap, cached after the first

                LiveStats.bump(self.stats.denials, denial_name(code))
                if self.risk.state == "HALTED" and self.stats.trading_state != "HALTED":
                    self.stats.trading_state = "HALTED"
                    self.stats.halt_reason = self.stats.halt_reason or "risk: daily loss limit"
                continue
            plan.append(("send", intent))
        self.latency.frame_stamps[T_RISK] = now_ns()
        actions: list[tuple[str, int]] = []
        for kind, item in plan:
            if kind == "cancel":
                actions.append((kind, item))
                continue
            intent = item
            seq = self._next_seq
            self._next_seq += 1
            order = OpenOrder(seq, int(intent.symbol_id), int(intent.side), float(intent.qty), int(intent.order_type), float(intent.limit_price), intent.tag)
            coid = self._ids.next()
            self._orders[seq] = _OrderTrack(seq, coid, order, time_in_force=int(intent.time_in_force))
            self._by_coid[coid] = seq
            self._open.add(seq)
            self.ctx.open_orders[seq] = order
            self.latency.open_chain(seq)
            actions.append(("send", seq))
        return actions

    async def _dispatch(self, actions: list[tuple[str, int]]) -> None:
        if not actions:
            return
        if self.lockstep:
            for kind, seq in actions:  # one at a time: the broker sees them in decision order
                await (self._send(seq) if kind == "send" else self._cancel(seq))
        else:
            self._send_now(actions)

    def _send_now(self, actions: list[tuple[str, int]]) -> None:
        """Real time: each order is written at once (the lane's free connection, no task's first turn
        to wait for); its answer, and each cancel, is awaited concurrently."""
        for kind, seq in actions:
            if kind == "send":
                track = self._orders[seq]
                pending = self._start_send(track)
                if pending is not None:
                    self._spawn(self._finish_send(track, pending), eager=True)
            else:
                self._spawn(self._cancel(seq), eager=True)

    async def _send(self, seq: int) -> None:
        """One order, start to answer (lock-step sends them one at a time)."""
        track = self._orders[seq]
        pending = self._start_send(track)
        if pending is not None:
            await self._finish_send(track, pending)

    def _start_send(self, track: _OrderTrack) -> Any:
        """Check and write the order (written now when the lane has a connection free); the coroutine
        that awaits its answer, or None when it failed before anything was sent."""
        seq = track.seq
        o = track.order
        latency = self.latency
        side = "buy" if o.side == SIDE_BUY else "sell"
        try:
            LiveStats.bump(self.stats.orders, side)
            limit = _price(o.limit_price) if o.order_type in (ORDER_LIMIT, ORDER_STOP_LIMIT) else None
            # values, not a request model: risk already checked them (the router's model path takes the rest)
            return self.router.submit_values_now(
                self.universe[o.symbol_id], side, Decimal(repr(o.qty)), track.client_order_id,
                type=_ORDER_TYPE_NAMES.get(o.order_type, "market"), limit_price=limit,
                time_in_force=_TIF_NAMES.get(track.time_in_force, "day"),
                # send: the order's bytes are on the socket; ack: the venue's success answer arrived
                on_sent=lambda _: latency.stamp(seq, T_SEND),
                on_accepted=lambda ns: latency.stamp(seq, T_ACK, ns),
            )
        except Exception as exc:
            self._send_failed(track, exc)
            track.send_done.set()
            return None

    async def _finish_send(self, track: _OrderTrack, pending: Any) -> None:
        try:
            order = await pending
        except Exception as exc:
            self._send_failed(track, exc)
        else:
            self._on_ack(track, order)
        finally:
            track.send_done.set()

    def _send_failed(self, track: _OrderTrack, exc: Exception) -> None:
        from engine.execution.errors import ApiError, SlippageRejected, SubmitFailed, UnknownOrderOutcome  # noqa: PLC0415

        seq = track.seq
        if isinstance(exc, SlippageRejected):
            LiveStats.bump(self.stats.denials, "SLIPPAGE_BAND")
            self._finalize(seq)
        elif isinstance(exc, UnknownOrderOutcome):
            self.stats.orders_unknown += 1
            track.unknown = True
            log.warning("order %s: %s", track.client_order_id, exc)
            self._spawn(self._resolve_later(track))
        elif isinstance(exc, (ApiError, SubmitFailed, ValueError)):
            self.stats.orders_rejected += 1
            log.warning("order %s rejected: %s", track.client_order_id, exc)
            self._finalize(seq)
        else:
            self.stats.orders_rejected += 1
            log.error("order %s: submit failed unexpectedly", track.client_order_id, exc_info=exc)
            self._finalize(seq)

    def _on_ack(self, track: _OrderTrack, order: Any) -> None:
        self.latency.stamp(track.seq, T_ACK)
        if not track.acked:
            track.acked = True
            self.stats.orders_acked += 1
        track.unknown = False
        if order is not None and getattr(order, "id", None):
            track.order_id = order.id
            if order.status in _FINAL_EVENTS:
                self._finalize(track.seq)
            elif track.order.cancel_requested and not track.terminal:
                self._spawn(self._cancel(track.seq))

    async def _cancel(self, seq: int) -> None:
        from engine.execution.errors import ApiError, NotFound, Unprocessable  # noqa: PLC0415

        track = self._orders.get(seq)
        if track is None or track.terminal:
            return
        track.order.cancel_requested = True
        if track.order_id is None:
            return  # not acked yet: the ack sends the cancel
        self.stats.cancels += 1
        try:
            await self.router.cancel(track.order_id)
        except (NotFound, Unprocessable):
            pass  # already filled or cancelled: its final event settles the books
        except ApiError as exc:
            log.warning("cancel of %s failed: %s", track.client_order_id, exc)
        except Exception:
            log.exception("cancel of %s failed", track.client_order_id)

    def _finalize(self, seq: int) -> None:
        """An order is done: give back its unfilled quantity to risk, drop it from the open set."""
        track = self._orders.get(seq)
        if track is None or track.terminal:
            return
        track.terminal = True
        o = track.order
        remaining = o.qty - o.filled_qty
        if remaining > QTY_EPS:
            self.risk.release(o.symbol_id, o.side, remaining)
        self._open.discard(seq)
        self.ctx.open_orders.pop(seq, None)
        self._forget_old_orders(seq)

    def _forget_old_orders(self, finished_seq: int) -> None:
        """Keep the last ``KEEP_FINISHED_ORDERS`` finished orders (late or replayed events still find
        them); older ones are dropped, so a long session's memory does not grow with its order count.
        An order whose submit has not returned yet is kept until it has."""
        done = self._done
        done.append(finished_seq)
        while len(done) > KEEP_FINISHED_ORDERS:
            track = self._orders.get(done[0])
            if track is not None and not track.send_done.is_set():
                return
            done.popleft()
            if track is not None:
                del self._orders[track.seq]
                self._by_coid.pop(track.client_order_id, None)

    # --- trade_updates ----------------------------------------------------------------------------
    async def _on_fill(self, symbol: str, side: int, qty: float, price: float, exec_id: str, ts_ns: int, order: Any) -> None:
        await self._dispatch(self._book_fill(symbol, side, qty, price, exec_id, ts_ns, order))

    def _book_fill(self, symbol: str, side: int, qty: float, price: float, exec_id: str, ts_ns: int, order: Any) -> list[tuple[str, int]]:
        """Book one execution (risk, position, the order, ``on_fill``); returns what ``on_fill`` decided."""
        sid = self.symbol_map.get(symbol)
        if sid is None:
            LiveStats.bump(self.stats.drops, "fill_unknown_symbol")
            log.warning("fill for %s, which this engine does not trade; not booked", symbol)
            return []
        self._flush_marks()
        self.risk.apply_fill(sid, side, qty, price, exec_id=exec_id, ts_ns=ts_ns)
        self.ctx.position[sid] = self.risk.tracker.qty(sid)
        self.stats.fills += 1
        self.stats.filled_qty += qty
        seq = self._by_coid.get(getattr(order, "client_order_id", "") or "")
        if seq is None:
            # another client's order on the same account, or one of ours finished long ago: positions
            # count it, the strategy does not
            return []
        track = self._orders[seq]
        self._on_ack(track, None)
        track.order.filled_qty += qty
        self.fills.append(FillRecord(seq, symbol, side, qty, price, track.order.tag))
        if track.order.filled_qty >= track.order.qty - QTY_EPS:
            self._finalize(seq)
        # reported during shutdown too; orders it asks for then are denied (SHUTTING_DOWN)
        stamps = self.latency.begin_frame(now_ns())
        intents = self._call_strategy("on_fill", Fill(sid, side, qty, price, seq, ts_ns, track.order.tag))
        stamps[T_STRATEGY] = now_ns()
        return self._decide(intents, self.ctx.now_ns)

    async def _on_event(self, update: Any) -> None:
        seq = self._by_coid.get(update.order.client_order_id)
        if seq is None:
            return
        track = self._orders[seq]
        if update.event in _ACK_EVENTS:
            self._on_ack(track, update.order)
        if update.event in _FINAL_EVENTS:
            if update.event == "rejected":
                self.stats.orders_rejected += 1
            self._finalize(seq)
        elif update.order.status == "filled" and track.order.filled_qty >= track.order.qty - QTY_EPS:
            self._finalize(seq)

    def _quote_of(self, symbol: str) -> tuple[float, float] | None:
        sid = self.symbol_map.get(symbol)
        if sid is None:
            return None
        bid, ask = self.ctx.best_bid_price[sid], self.ctx.best_ask_price[sid]
        return (float(bid), float(ask)) if bid > 0 and ask > 0 else None

    # --- lock-step --------------------------------------------------------------------------------
    def _grant(self) -> None:
        self._frames_since_grant = 0
        self._last_grant = time.monotonic()
        self._connects_at_grant = self.feed.stats.connects if self.feed is not None else 0
        self.sim.grant()

    async def _settle_broker_events(self, timeout_s: float = 30.0) -> None:
        """Wait until every trade_updates event the broker emitted so far has been booked here."""
        broker_stats, tu_stats = self.sim.broker.stats, self.trade_updates.stats
        deadline = time.monotonic() + timeout_s
        spins = 0
        while tu_stats["events"] + tu_stats["dropped"] < broker_stats["events"]:
            if time.monotonic() > deadline:
                LiveStats.bump(self.stats.drops, "lockstep_settle_timeout")
                log.warning("lock-step: trade_updates behind the broker after %.1f s; going on", timeout_s)
                return
            spins += 1
            await asyncio.sleep(0 if spins < 50 else 0.0005)

    async def _lockstep_watchdog(self) -> None:
        """Re-grant when a released frame can never arrive: the feed reconnected after the grant (the
        frame went down with the old connection), or nothing came for a long time (last resort).
        A slow engine is not a lost frame: a busy loop only delays the frame, so no early re-grant."""
        while not self._stopping:
            await asyncio.sleep(0.25)
            gate = self.sim.lockstep
            if self._frames_since_grant or gate.credit:
                continue
            reconnected = self.feed is not None and self.feed.stats.connects > self._connects_at_grant
            if reconnected or time.monotonic() - self._last_grant > LOCKSTEP_STALL_S:
                LiveStats.bump(self.stats.drops, "lockstep_regrant")
                log.warning("lock-step: frame released but not received (%s); granting the next one",
                            "feed reconnected" if reconnected else f"{LOCKSTEP_STALL_S:g} s silence")
                self._grant()

    # --- watchers, signals -----------------------------------------------------------------------
    async def _busy_poll(self, rehearsal: Any = None) -> None:
        """Keep one callback always ready, so the loop polls its sockets without sleeping in epoll:
        the core never idles between frames, so the next frame does not start on a cold core; with
        ``rehearsal`` (engine.rehearsal) the decision path is replayed on a twin between polls too."""
        stats = self.stats
        while not self._stopping:
            stats.busy_poll_spins += 1
            if rehearsal is not None:
                try:
                    stats.rehearsals += rehearsal.tick()
                except Exception:  # a warm-up aid: losing it must not stop the polling, or the run
                    log.exception("hot-path rehearsal failed; rehearsal off for the rest of the run")
                    rehearsal = None
            await asyncio.sleep(0)

    async def _watch_halt_file(self, path: Path) -> None:
        while not self._stopping:
            if path.exists():
                self.halt(f"halt file {path} present")
                return
            await asyncio.sleep(0.2)

    async def _flush_recording(self, every_s: float = 1.0) -> None:
        """Push the recording's buffers to disk once a second, so a killed run loses at most that."""
        while self.recorder is not None:
            await asyncio.sleep(every_s)
            if self.recorder is not None:
                try:
                    self.recorder._file.flush()
                except (OSError, ValueError) as exc:  # disk full, or closed under us at shutdown
                    log.warning("recording flush failed: %s", exc)

    def _record_frame(self, frame: str | bytes, recv_ns: int) -> None:
        """The feed's raw-frame hook while recording; a failing disk ends the recording, not the run.

        Frames arriving once shutdown began are not processed (``_on_batch``), so not recorded either:
        the recording replays exactly the market data the run acted on."""
        recorder = self.recorder
        if recorder is None or self._stopping:
            return
        try:
            recorder.write(frame, recv_ns)
        except (OSError, ValueError) as exc:
            LiveStats.bump(self.stats.drops, "recording")
            log.error("recording to %s failed (%s); recording stopped, the engine continues", recorder.path, exc)
            self._close_recording()

    def _close_recording(self) -> None:
        """Flush and close the recording (idempotent); called once the feed is disconnected."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        try:
            recorder.close()
            log.info("recorded %d market data frames to %s", recorder.frames_written, recorder.path)
        except (OSError, ValueError) as exc:
            log.error("could not close the recording %s: %s", recorder.path, exc)

    async def _watch_feed(self) -> None:
        """A feed that gave up (bad credentials, plan limits) ends the run with its error."""
        from engine.marketdata.client import FAILED  # noqa: PLC0415

        last_reconnects = 0
        while not self._stopping:
            await asyncio.sleep(0.1)
            feed = self.feed
            if feed is None:
                continue
            if feed.stats.reconnects != last_reconnects:
                self.stats.reconnects += feed.stats.reconnects - last_reconnects
                last_reconnects = feed.stats.reconnects
            if feed.stats.state == FAILED:
                self.error = feed.stats.last_error or "market data stream failed"
                self.request_stop(f"market data stream failed: {self.error}")
                return

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop, f"signal {signal.Signals(sig).name}")
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread: the caller stops us with request_stop()

    def _spawn(self, coro: Any, *, eager: bool = False) -> asyncio.Task[Any]:
        """A tracked task. ``eager`` (Python 3.12+) runs it at once up to its first real wait: an
        order is written to the socket inside the frame that decided it, not a loop iteration later."""
        loop = asyncio.get_running_loop()
        task = asyncio.Task(coro, loop=loop, eager_start=True) if eager and _EAGER_TASKS else loop.create_task(coro)
        if task.done():  # finished without waiting: nothing to track
            self._task_done(task)
            return task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("live engine task failed", exc_info=task.exception())

    # --- shutdown ---------------------------------------------------------------------------------
    async def _cancel_all_open(self) -> None:
        for seq in sorted(self._open):
            track = self._orders[seq]
            if track.unknown:
                await self._resolve_unknown(track)
            if not track.terminal:
                await self._cancel(seq)

    async def _resolve_later(self, track: _OrderTrack, attempts: int = 5) -> None:
        """Settle an unknown submit outcome by client_order_id while the run goes on (its quantity
        stays reserved in risk until then, so nothing is ever double-counted)."""
        delay = 0.5
        for _ in range(attempts):
            await asyncio.sleep(delay)
            if not track.unknown or track.terminal or self._stopping:
                return
            await self._resolve_unknown(track)
            delay *= 2

    async def _resolve_unknown(self, track: _OrderTrack) -> None:
        try:
            order = await self.router.resolve(track.client_order_id)
        except Exception as exc:
            log.warning("order %s: outcome still unknown at shutdown (%s)", track.client_order_id, exc)
            return
        if order is None:
            self._finalize(track.seq)  # never created: nothing to cancel, quantity back to risk
        else:
            self._on_ack(track, order)

    async def shutdown(self) -> None:
        """Stop new orders, cancel open ones, wait for their acks, reconcile fills, stop everything."""
        if self._stopping:
            return
        self._stopping = True
        self._accepting = False
        self._finished = time.monotonic()
        if self._gc_frozen:
            self._gc_frozen = False
            gc.unfreeze()
        if self._cpus_before is not None:
            os.sched_setaffinity(0, self._cpus_before)
            self._cpus_before = None
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        if self.feed is not None:
            with contextlib.suppress(Exception):
                await self.feed.disconnect()
        self._close_recording()  # no frame arrives after the disconnect: the recording is complete
        if hasattr(self, "ctx"):
            with contextlib.suppress(Exception):
                if hasattr(self.strategy, "on_stop"):
                    self.strategy.on_stop(self.ctx)
        timeout = self.live_cfg.shutdown_timeout_s
        if self.router is not None:
            sends = [t.send_done.wait() for t in self._orders.values() if not t.send_done.is_set()]
            if sends:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*sends), timeout)
            await self._cancel_all_open()
            deadline = time.monotonic() + timeout
            while self._open and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if self.trade_updates is not None and self.trade_updates.connected.is_set():
                with contextlib.suppress(Exception):
                    await self.trade_updates.reconcile()
            for seq in sorted(self._open):
                log.warning("order %s still open after shutdown", self._orders[seq].client_order_id)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def summary(self) -> RunSummary:
        broker_positions = broker_account = None
        if self.router is not None:
            try:
                broker_positions = [p.model_dump(mode="json") for p in await self.router.positions()]
                broker_account = (await self.router.account()).model_dump(mode="json")
            except Exception as exc:
                log.warning("could not read the broker's positions and account: %s", exc)
        await self._close_connections()
        if hasattr(self, "risk"):
            self._flush_marks()
        rows = self.symbol_rows(all_symbols=True)
        realized = sum(r.realized_pnl for r in rows)
        unrealized = sum(r.unrealized_pnl for r in rows)
        return RunSummary(
            self.mode, self.config.sim.seed if self.mode == "sim" else None, self.strategy_name,
            self.backend.name if hasattr(self, "backend") else "?", self.lockstep,
            (self._finished or time.monotonic()) - (self._started or time.monotonic()), self._messages, self.stats,
            self.latency.summary(), [r for r in rows if r.position or r.realized_pnl or r.unrealized_pnl], list(self.fills),
            realized, unrealized, len(self._open), broker_positions, broker_account, self.error,
        )

    async def _close_connections(self) -> None:
        self._close_recording()  # a failed start may have opened it before shutdown ran
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.trade_updates is not None:
            with contextlib.suppress(Exception):
                await self.trade_updates.stop()
            self.trade_updates = None
        if self.router is not None:
            with contextlib.suppress(Exception):
                await self.router.aclose()
        if self.sim is not None:
            await self.sim.stop()

    # --- views ------------------------------------------------------------------------------------
    def symbol_rows(self, all_symbols: bool = False) -> list[SymbolRow]:
        if not hasattr(self, "risk"):
            return []
        # no mark flush here (the metrics thread calls this): parked marks are of flat symbols only
        tracker = self.risk.tracker
        ctx = self.ctx
        rows = []
        for sid, name in enumerate(self.universe):
            p = tracker.position(sid)
            if not all_symbols and len(self.universe) > 50 and not (p.qty or p.realized_pnl):
                continue
            unrealized = p.unrealized_pnl if math.isfinite(p.unrealized_pnl) else 0.0
            rows.append(SymbolRow(name, float(ctx.best_bid_price[sid]), float(ctx.best_ask_price[sid]), p.qty,
                                  p.avg_entry_price, p.realized_pnl, unrealized))
        return rows

    def status(self) -> dict[str, object]:
        return {**self.stats.as_dict(), "mode": self.mode, "messages_total": self._messages, "open_orders": len(self._open)}

    def view(self) -> RunView:
        elapsed = time.monotonic() - self._started if self._started else 0.0
        title = f"tickforge run: {self.mode}, strategy {self.strategy_name}"
        return RunView(title, elapsed, self.stats, self.symbol_rows(), self.latency.summary())


_NO_SYMBOLS = np.zeros(0, dtype=np.int64)
_NO_BARS = np.zeros(0, dtype=BAR_DTYPE)


@njit(cache=True)
def _bar_columns(first, second):  # pragma: no cover - njit
    """Two bar batches as one set of columns: whether all share one boundary, their boundary times,
    symbol ids and a ``(6, n)`` block of open, high, low, close, volume and vwap (each row contiguous)."""
    n1 = first.shape[0]
    n = n1 + second.shape[0]
    ts = np.empty(n, np.int64)
    ids = np.empty(n, np.int64)
    cols = np.empty((6, n), np.float64)
    for i in range(n):
        bar = first[i] if i < n1 else second[i - n1]
        ts[i] = bar.ts_ns
        ids[i] = bar.symbol_id
        cols[0, i] = bar.open
        cols[1, i] = bar.high
        cols[2, i] = bar.low
        cols[3, i] = bar.close
        cols[4, i] = bar.volume
        cols[5, i] = bar.vwap
    one = True
    for i in range(1, n):
        if ts[i] != ts[0]:
            one = False
            break
    return one, ts, ids, cols


_bar_columns = FixedTypes(_bar_columns)


def _plain_bars(bars: np.ndarray) -> np.ndarray:
    """``bars`` as the one array type ``_bar_columns`` is bound to (writable, contiguous, BAR_DTYPE)."""
    if not len(bars):
        return _NO_BARS
    if bars.dtype == BAR_DTYPE and bars.flags.writeable and bars.flags.c_contiguous:
        return bars
    return np.array(bars, dtype=BAR_DTYPE)


@njit(cache=True)
def _finish_changed(changed, n_changed, bid_px, ask_px, position, pending, pending_mid, out_ids, out_mids):  # pragma: no cover - njit
    """Sort ``changed[:n_changed]`` in place and take the mids of the symbols with a two-sided book
    (the P&L marks): held symbols into ``out_ids/out_mids`` (returns how many), flat ones parked in
    ``pending/pending_mid`` (their mark moves no P&L; risk gets it before its next check)."""
    if n_changed > 1:
        changed[:n_changed] = np.sort(changed[:n_changed])
    n = 0
    for i in range(n_changed):
        s = changed[i]
        bid, ask = bid_px[s], ask_px[s]
        if bid > 0.0 and ask > 0.0:  # NaN compares false: an empty side is skipped
            mid = 0.5 * (bid + ask)
            if position[s] != 0.0:
                out_ids[n] = s
                out_mids[n] = mid
                n += 1
                pending[s] = False  # this mark is newer than the parked one
            else:
                pending[s] = True
                pending_mid[s] = mid
    return n


@njit(cache=True)
def _take_pending_marks(pending, pending_mid, out_ids, out_mids):  # pragma: no cover - njit
    """Collect and clear the parked marks, in symbol order; returns how many."""
    n = 0
    for s in range(pending.shape[0]):
        if pending[s]:
            pending[s] = False
            out_ids[n] = s
            out_mids[n] = pending_mid[s]
            n += 1
    return n


# called on every frame with the same argument types: bound once, they skip numba's dispatch
_finish_changed, _take_pending_marks = (FixedTypes(k) for k in (_finish_changed, _take_pending_marks))


class _OfflineOrder(NamedTuple):
    """What ``settle_offline`` hands the fill booking in place of the venue's order."""

    client_order_id: str


def _with_cross_section(bar_close: BarClose, cs: CrossSection) -> BarClose:
    return BarClose(bar_close.ts_ns, bar_close.symbol_ids, bar_close.open, bar_close.high, bar_close.low, bar_close.close,
                    bar_close.volume, bar_close.features, bar_close.feature_names, cs)


def _price(value: float) -> Decimal:
    places = _PRICE_PLACES[0] if value >= 1.0 else _PRICE_PLACES[1]
    return Decimal(f"{value:.{places}f}")


# --- the ``tickforge run`` command -------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file (credentials may also come from APCA_API_KEY_ID / APCA_API_SECRET_KEY)")
    parser.add_argument("--strategy", help="strategy class as a dotted path, or ma_rsi / market_maker (default: live.strategy)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="strategy parameter (repeatable)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: live.duration_s)")
    parser.add_argument("--max-messages", type=int, metavar="N", help="stop after N market data messages")
    parser.add_argument("--backend", choices=["auto", "gpu", "cpu"], help="cross-section kernels (default: live.backend)")
    parser.add_argument("--seed", type=int, help="synthetic session seed (embedded simulator)")
    parser.add_argument("--symbols", type=int, metavar="N", help="synthetic universe size (embedded simulator)")
    parser.add_argument("--rate", type=float, metavar="MSG_PER_S", help="synthetic messages per second (real-time mode)")
    parser.add_argument("--lockstep", action="store_true", default=None, help="deterministic lock-step session (embedded simulator)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics, /status and POST /halt here")
    parser.add_argument("--dashboard", action="store_true", default=None, help="live terminal dashboard")
    parser.add_argument("--busy-poll", action="store_true", default=None, help="keep the event loop polling instead of sleeping (lower, steadier latency; one core at 100%%)")
    parser.add_argument("--rehearse-us", type=int, metavar="US", help="with --busy-poll: replay the latest frame through a twin of the decision path every US microseconds while idle (0: off; default: live.rehearse_us)")
    parser.add_argument("--cpus", metavar="LIST", help="pin the engine to these CPUs, e.g. 2 or 2,3 (Linux; default: live.cpu_affinity)")
    parser.add_argument("--halt-file", metavar="PATH", help="kill switch: trading halts when this file appears")
    parser.add_argument("--record", metavar="PATH", help="record the raw market data frames (.jsonl.gz, .jsonl.zst or .jsonl); `tickforge replay PATH` reads it")
    parser.add_argument("--summary-json", metavar="PATH", help="also write the run summary as JSON")
    parser.add_argument("--live", action="store_true", help="allow real-money trading (also needs alpaca.live = true)")


def _parse_params(items: list[str]) -> dict[str, float | int | str | bool]:
    params: dict[str, float | int | str | bool] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param expects KEY=VALUE, got {item!r}")
        value: float | int | str | bool
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        params[key.strip()] = value
    return params


def _parse_cpus(text: str) -> tuple[int, ...]:
    try:
        cpus = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--cpus expects CPU numbers separated by commas, e.g. 2 or 2,3; got {text!r}") from None
    return cpus


def config_from_args(args: argparse.Namespace) -> TickforgeConfig:
    """The configuration file and environment, with the command line on top."""
    from pydantic import ValidationError  # noqa: PLC0415

    base = TickforgeConfig.load(getattr(args, "config", None))
    live_updates: dict[str, Any] = {}
    for attr, key in (("strategy", "strategy"), ("duration", "duration_s"), ("max_messages", "max_messages"),
                      ("backend", "backend"), ("lockstep", "lockstep"), ("metrics_port", "metrics_port"),
                      ("dashboard", "dashboard"), ("halt_file", "halt_file"),
                      ("record", "record_path"), ("busy_poll", "busy_poll"), ("rehearse_us", "rehearse_us")):
        value = getattr(args, attr, None)
        if value is not None:
            live_updates[key] = value
    cpus = getattr(args, "cpus", None)
    if cpus is not None:
        live_updates["cpu_affinity"] = _parse_cpus(cpus)
    params = _parse_params(getattr(args, "param", []) or [])
    if params:
        live_updates["strategy_params"] = {**base.live.strategy_params, **params}
    sim_updates = {k: v for k, v in (("seed", getattr(args, "seed", None)), ("n_symbols", getattr(args, "symbols", None)),
                                      ("messages_per_s", getattr(args, "rate", None))) if v is not None}
    try:
        live = LiveConfig(**{**base.live.model_dump(), **live_updates})
        sim = SimConfig(**{**base.sim.model_dump(), **sim_updates})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False, include_url=False))
        raise InputError(f"bad option: {problems}") from None
    return base.model_copy(update={"live": live, "sim": sim})


async def _run_with_dashboard(engine: LiveEngine) -> RunSummary:
    stop = asyncio.Event()
    dash_task: asyncio.Task[None] | None = None

    async def start_dash() -> None:
        nonlocal dash_task
        while not engine._started:
            await asyncio.sleep(0.05)
        dash_task = asyncio.create_task(Dashboard(engine.view).run(stop))

    starter = asyncio.create_task(start_dash())
    try:
        return await engine.run()
    finally:
        stop.set()
        starter.cancel()
        if dash_task is not None:
            with contextlib.suppress(Exception):
                await dash_task


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    engine = LiveEngine(config, allow_live=bool(getattr(args, "live", False)))
    runner = _run_with_dashboard(engine) if config.live.dashboard else engine.run()
    summary = asyncio.run(runner)
    print_summary(summary.view())
    path = getattr(args, "summary_json", None)
    if path:
        Path(path).write_text(json.dumps(summary.to_json(), indent=2, default=str) + "\n")
    if summary.open_orders_left:
        print(f"warning: {summary.open_orders_left} orders still open at exit; check the broker", flush=True)
    return 1 if summary.error else 0


__all__ = ["CrossSectionStep", "FillRecord", "LiveEngine", "RunSummary", "add_arguments", "config_from_args", "run"]
