"""The live engine end to end against the embedded exchange and paper broker, over real sockets.

Lock-step sessions are deterministic: the same seed gives the same fills and P&L, and the engine's
positions and P&L agree with the broker's own ``/v2/positions`` and ``/v2/account``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from engine.cli import main
from engine.config import SimConfig, TickforgeConfig
from engine.errors import InputError, TickforgeError
from engine.events import SIDE_BUY, SIDE_SELL
from engine.live import LiveEngine, RunSummary
from engine.sim.process import SimProcess
from engine.strategies import OrderIntent, Strategy
from kit import eventually, free_port

SYMBOLS = ["AAPL", "MSFT", "AMZN", "NVDA"]
FAST_SIGNAL = {"fast": 3, "slow": 8, "rsi_window": 5, "qty": 10, "max_position": 30}


def _config(**live: object) -> TickforgeConfig:
    sim = {"seed": 11, "rate_limit_per_min": 100_000, "own_process": False}  # tests reach into the venue
    base = {"duration_s": 60.0, "lockstep": True, "frame_messages": 100, "max_messages": 16_000,
            "strategy": "ma_rsi", "strategy_params": FAST_SIGNAL, "backend": "cpu", "shutdown_timeout_s": 3.0}
    base.update(live)
    return TickforgeConfig.load(sim=sim, live=base, execution={"rate_limit_per_min": 100_000})


async def _running(engine: LiveEngine) -> None:
    """Wait for start-up (generous: a cold numba cache compiles every kernel first)."""
    await eventually(lambda: engine._started > 0, timeout=180)


def _broker_positions(summary: RunSummary) -> dict[str, float]:
    assert summary.broker_positions is not None
    return {p["symbol"]: float(p["qty"]) for p in summary.broker_positions if float(p["qty"]) != 0.0}


def _assert_books_agree_with_broker(summary: RunSummary, same_marks: bool) -> None:
    """Positions, entry prices and cash as the engine booked them equal the broker's own account.

    ``same_marks``: the engine saw the market's last state (lock-step), so unrealized P&L agrees too;
    in real time the exchange may have moved on after the engine's feed closed.
    """
    assert summary.open_orders_left == 0
    assert summary.positions() == _broker_positions(summary)
    for p in summary.broker_positions or []:
        row = next(r for r in summary.rows if r.symbol == p["symbol"])
        assert row.avg_entry_price == pytest.approx(float(p["avg_entry_price"]), abs=1e-6)
    account = summary.broker_account or {}
    starting_cash = float(account["last_equity"])
    cash_flow = -sum(f.side * f.qty * f.price for f in summary.fills)
    assert float(account["cash"]) - starting_cash == pytest.approx(cash_flow, abs=1e-6)
    if same_marks:
        assert summary.total_pnl == pytest.approx(float(account["equity"]) - starting_cash, abs=1e-6)
    # every unit the broker filled was booked once by the engine
    assert sum(f.qty for f in summary.fills) == pytest.approx(summary.stats.filled_qty)


async def test_lockstep_session_is_deterministic_and_matches_the_broker():
    first = await LiveEngine(_config(), symbols=SYMBOLS).run()
    second = await LiveEngine(_config(), symbols=SYMBOLS).run()
    for summary in (first, second):
        assert summary.messages >= 16_000 and summary.stats.frames >= 160
        assert summary.stats.bar_closes >= 12 and summary.stats.cross_section_steps == summary.stats.bar_closes
        assert sum(summary.stats.orders.values()) > 0 and summary.stats.fills > 0
        assert summary.stats.orders_rejected == 0 and summary.stats.strategy_errors == 0
        _assert_books_agree_with_broker(summary, same_marks=True)
    assert [(f.symbol, f.side, f.qty, f.price) for f in first.fills] == [(f.symbol, f.side, f.qty, f.price) for f in second.fills]
    assert first.realized_pnl == second.realized_pnl and first.total_pnl == second.total_pnl
    assert first.positions() == second.positions()
    # the latency chain covered every order from tick to ack
    assert first.latency["tick_to_ack"]["count"] == sum(first.stats.orders.values())
    # a different seed is a different session
    other = await LiveEngine(_config().model_copy(update={"sim": _config().sim.model_copy(update={"seed": 12})}), symbols=SYMBOLS).run()
    assert [(f.symbol, f.price) for f in other.fills] != [(f.symbol, f.price) for f in first.fills]


@pytest.mark.parametrize("keep", [5, 100_000])
async def test_finished_orders_are_forgotten_beyond_a_bound_and_the_books_still_agree(monkeypatch, keep):
    import engine.live as live_module

    monkeypatch.setattr(live_module, "KEEP_FINISHED_ORDERS", keep)
    engine = LiveEngine(_config(max_messages=6_000), strategy=Churn(every=2, raise_every=10**9), symbols=SYMBOLS)
    summary = await engine.run()
    orders = sum(summary.stats.orders.values())
    assert orders > 20 and summary.stats.fills > 20
    assert len(engine._orders) == min(keep, orders) and len(engine._by_coid) == len(engine._orders)
    _assert_books_agree_with_broker(summary, same_marks=True)


@pytest.mark.parametrize("busy_poll", [False, True])
async def test_busy_poll_keeps_the_loop_polling_only_when_asked(busy_poll):
    summary = await LiveEngine(_config(max_messages=3_000, busy_poll=busy_poll), symbols=SYMBOLS).run()
    assert summary.messages >= 3_000 and summary.error == ""
    spins = summary.stats.busy_poll_spins
    # polling: the loop went round at least once per frame between frames; otherwise it never spun
    assert (spins > summary.stats.frames) if busy_poll else spins == 0
    assert summary.stats.rehearsals == 0  # lock-step sessions are never rehearsed
    _assert_books_agree_with_broker(summary, same_marks=True)


async def test_real_time_busy_poll_rehearses_the_hot_path_and_only_real_orders_reach_the_broker():
    cfg = _config(lockstep=False, max_messages=0, duration_s=3.0, busy_poll=True, rehearse_us=500)
    cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"messages_per_s": 4_000.0})})
    engine = LiveEngine(cfg, strategy=Churn(every=3, raise_every=10**9), symbols=SYMBOLS)
    summary = await engine.run()
    assert summary.error == "" and summary.stats.fills > 0
    assert summary.stats.rehearsals > 100  # about one per 500 us of the run's idle time
    _assert_books_agree_with_broker(summary, same_marks=False)
    # the twin decided an order per rehearsal; none of them left the process
    broker_orders = engine.sim.broker.orders()
    assert len(broker_orders) == sum(summary.stats.orders.values())
    # and the engine's own risk checked only the real strategy's intents
    decisions = {k: v for k, v in engine.risk.decision_counts().items() if v}
    assert decisions.pop("APPROVED") == sum(summary.stats.orders.values())
    assert decisions == summary.stats.denials


async def test_a_failing_rehearsal_is_switched_off_and_the_run_goes_on(monkeypatch, caplog):
    from engine.rehearsal import HotPathRehearsal

    def broken(self, frame):  # fault injection: the twin's path raising
        raise RuntimeError("twin fault")

    monkeypatch.setattr(HotPathRehearsal, "rehearse", broken)
    cfg = _config(lockstep=False, max_messages=0, duration_s=2.0, busy_poll=True)
    cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"messages_per_s": 4_000.0})})
    summary = await LiveEngine(cfg, strategy=Churn(every=3, raise_every=10**9), symbols=SYMBOLS).run()
    assert summary.error == "" and summary.stats.fills > 0 and summary.stats.rehearsals == 0
    assert summary.stats.busy_poll_spins > summary.stats.frames  # still polling after the failure
    assert sum("rehearsal off" in r.getMessage() for r in caplog.records) == 1
    _assert_books_agree_with_broker(summary, same_marks=False)


class Churn(Strategy):
    """Trades on every few book updates (alternating sides), raises now and then."""

    name = "churn"

    def __init__(self, every: int = 7, raise_every: int = 11) -> None:
        self.every, self.raise_every = every, raise_every
        self.calls = 0
        self.fills: list[float] = []

    def on_book(self, ctx, symbol_ids):
        self.calls += 1
        if self.calls % self.raise_every == 0:
            raise RuntimeError("strategy bug")
        if self.calls % self.every:
            return []
        sid = int(symbol_ids[0])
        side = SIDE_SELL if ctx.position[sid] > 0 else SIDE_BUY
        return [OrderIntent.market(sid, side, 5.0, "churn")]

    def on_fill(self, ctx, fill):
        self.fills.append(fill.qty)
        return []


async def test_faults_feed_restart_broker_errors_strategy_errors_and_sigterm_leave_books_consistent():
    cfg = _config(lockstep=False, max_messages=0, duration_s=30.0)
    cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"messages_per_s": 4_000.0})})
    strategy = Churn()
    engine = LiveEngine(cfg, strategy=strategy, symbols=SYMBOLS)
    task = asyncio.create_task(engine.run())
    await _running(engine)
    await eventually(lambda: engine.stats.fills >= 3, timeout=30)
    # feed restart: the client reconnects and resubscribes; the engine keeps trading
    await engine.sim.exchange.restart(down_s=0.2)
    await eventually(lambda: engine.stats.reconnects >= 1, timeout=15)
    fills_before = engine.stats.fills
    await eventually(lambda: engine.stats.fills > fills_before + 2, timeout=30)
    # a burst of 5xx on the broker: submits end as unknown outcomes or retried, never twice
    engine.sim.broker.faults.error_next = 4
    await eventually(lambda: engine.sim.broker.faults.error_next == 0, timeout=30)
    fills_before = engine.stats.fills
    await eventually(lambda: engine.stats.fills > fills_before, timeout=30)
    # SIGTERM with orders going out: graceful shutdown
    os.kill(os.getpid(), signal.SIGTERM)
    summary = await asyncio.wait_for(task, 30)
    assert "SIGTERM" in engine._stop_reason
    assert summary.stats.strategy_errors >= 1          # contained: the engine kept going
    assert summary.stats.reconnects >= 1
    _assert_books_agree_with_broker(summary, same_marks=False)
    # every order the broker knows came from this engine and is final; its fills were booked once
    broker_orders = engine.sim.broker.orders()
    assert all(o["status"] in ("filled", "canceled", "expired", "rejected") for o in broker_orders)
    assert len({o["client_order_id"] for o in broker_orders}) == len(broker_orders)
    broker_filled = sum(float(o["filled_qty"]) for o in broker_orders)
    assert broker_filled == pytest.approx(sum(f.qty for f in summary.fills))
    assert sum(strategy.fills) == pytest.approx(broker_filled)


async def test_real_time_session_with_the_venue_in_its_own_process_books_what_the_broker_filled():
    cfg = _config(lockstep=False, max_messages=0, duration_s=5.0)
    cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"own_process": True, "messages_per_s": 4_000.0})})
    engine = LiveEngine(cfg, strategy=Churn(every=3, raise_every=10**9), symbols=SYMBOLS)
    summary = await engine.run()
    assert isinstance(engine.sim, SimProcess) and not engine.sim.running  # stopped with the run
    assert summary.error == "" and summary.stats.fills > 0 and summary.stats.orders_rejected == 0
    assert summary.latency["tick_to_ack"]["count"] == summary.stats.orders_acked
    _assert_books_agree_with_broker(summary, same_marks=False)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU pinning is Linux only")
async def test_a_pinned_engine_leaves_its_venue_process_unpinned():
    before = os.sched_getaffinity(0)
    cpu = min(before)
    cfg = _config(lockstep=False, max_messages=0, duration_s=30.0, cpu_affinity=(cpu,))
    cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"own_process": True})})
    engine = LiveEngine(cfg, strategy=Churn(every=3, raise_every=10**9), symbols=SYMBOLS)
    task = asyncio.create_task(engine.run())
    await eventually(lambda: engine.running, timeout=180)
    assert os.sched_getaffinity(0) == {cpu} and os.sched_getaffinity(engine.sim.pid) == before
    engine.request_stop("test over")
    summary = await asyncio.wait_for(task, 60)
    assert summary.error == "" and os.sched_getaffinity(0) == before


async def test_a_venue_process_that_cannot_start_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = SimConfig(market_port=taken.getsockname()[1])
        with pytest.raises(TickforgeError, match="embedded venue could not start"):
            await SimProcess(cfg).start()


class Quoter(Strategy):
    """Keeps one resting bid far below the market on symbol 0 (never fills)."""

    name = "quoter"

    def on_book(self, ctx, symbol_ids):
        if ctx.open_orders or not math.isfinite(ctx.mid(0)):
            return []
        return [OrderIntent.limit(0, SIDE_BUY, 1.0, ctx.round_down(ctx.mid(0) * 0.995), "bid")]


async def test_kill_switch_from_the_control_endpoint_and_the_halt_file(tmp_path):
    halt_file = tmp_path / "HALT"
    port = free_port()
    cfg = _config(lockstep=False, max_messages=0, duration_s=30.0, metrics_port=port, halt_file=str(halt_file))
    engine = LiveEngine(cfg, strategy=Quoter(), symbols=SYMBOLS)
    task = asyncio.create_task(engine.run())
    await _running(engine)
    await eventually(lambda: engine.stats.orders_acked >= 1 and len(engine._open) == 1, timeout=30)
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'tickforge_orders_total{side="buy"} 1.0' in metrics
        r = await http.post(f"http://127.0.0.1:{port}/halt", content=b"test desk")
        assert r.status_code == 200
    await eventually(lambda: engine.stats.trading_state == "HALTED" and not engine._open, timeout=15)
    await eventually(lambda: engine.stats.denials.get("HALTED", 0) > 0, timeout=15)  # new quotes denied
    assert engine.stats.halt_reason == "test desk"
    engine.request_stop("test over")
    summary = await asyncio.wait_for(task, 30)
    assert summary.open_orders_left == 0 and summary.stats.cancels >= 1
    assert all(o["status"] == "canceled" for o in engine.sim.broker.orders())

    # the halt file: trading halts when it appears
    engine = LiveEngine(cfg.model_copy(update={"live": cfg.live.model_copy(update={"metrics_port": 0})}), strategy=Quoter(), symbols=SYMBOLS)
    task = asyncio.create_task(engine.run())
    await _running(engine)
    await eventually(lambda: engine.stats.orders_acked >= 1, timeout=30)
    assert engine.stats.trading_state == "ACTIVE"
    halt_file.write_text("stop")
    await eventually(lambda: engine.stats.trading_state == "HALTED" and not engine._open, timeout=15)
    engine.request_stop("test over")
    await asyncio.wait_for(task, 30)


class OneShot(Strategy):
    """Buys once, after the test arms the broker's faults."""

    name = "one_shot"

    def __init__(self) -> None:
        self.armed = False
        self.sent = False

    def on_book(self, ctx, symbol_ids):
        if not self.armed or self.sent:
            return []
        self.sent = True
        return [OrderIntent.market(0, SIDE_BUY, 7.0, "once")]


async def test_an_unknown_submit_outcome_is_settled_by_lookup_never_by_a_resubmit():
    cfg = _config(lockstep=False, max_messages=0, duration_s=30.0)
    strategy = OneShot()
    engine = LiveEngine(cfg, strategy=strategy, symbols=SYMBOLS)
    task = asyncio.create_task(engine.run())
    await _running(engine)
    await eventually(lambda: engine.trade_updates is not None and engine.trade_updates.connected.is_set(), timeout=30)
    engine.sim.broker.faults.error_next = 9  # the submit and every lookup the router tries get a 503
    strategy.armed = True
    await eventually(lambda: engine.stats.orders_unknown == 1, timeout=30)
    assert len(engine._open) == 1               # its quantity stays reserved while the outcome is unknown
    await eventually(lambda: not engine._open, timeout=30)  # a later lookup: the venue never had it
    engine.request_stop("test over")
    summary = await asyncio.wait_for(task, 30)
    assert engine.sim.broker.orders() == []      # never resubmitted
    assert summary.positions() == {} and summary.open_orders_left == 0
    _assert_books_agree_with_broker(summary, same_marks=False)


class BrokenStart(Strategy):
    def on_start(self, ctx):
        raise KeyError("no such symbol")


async def test_a_failed_start_is_an_input_error_and_stops_the_simulator():
    engine = LiveEngine(_config(), strategy=BrokenStart(), symbols=SYMBOLS)
    with pytest.raises(InputError, match="failed to start"):
        await engine.run()
    with pytest.raises(httpx.ConnectError):  # nothing left listening
        async with httpx.AsyncClient() as http:
            await http.get(engine.sim.trading_url + "/v2/account")


class AffinityProbe(Churn):
    """Records the CPUs the engine runs on when the strategy starts (after start-up pinned it)."""

    def on_start(self, ctx):
        self.cpus = os.sched_getaffinity(0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU pinning is Linux only")
async def test_cpu_affinity_pins_the_engine_while_it_runs_and_restores_the_cpu_set_after():
    before = os.sched_getaffinity(0)
    cpu = min(before)
    probe = AffinityProbe(every=3)
    summary = await LiveEngine(_config(max_messages=2_000, cpu_affinity=(cpu,)), strategy=probe, symbols=SYMBOLS).run()
    assert probe.cpus == {cpu} and os.sched_getaffinity(0) == before
    assert summary.stats.fills > 0
    _assert_books_agree_with_broker(summary, same_marks=True)
    # a CPU this machine does not have: a clear error, and the CPU set is left as it was
    with pytest.raises(InputError, match="cannot pin the engine to CPUs"):
        await LiveEngine(_config(cpu_affinity=(max(before) + 4096,)), symbols=SYMBOLS).run()
    assert os.sched_getaffinity(0) == before


def test_cli_run_lockstep_writes_summary_and_refuses_live_without_config(tmp_path, capsys):
    out = tmp_path / "summary.json"
    rc = main(["run", "--lockstep", "--symbols", "3", "--seed", "5", "--max-messages", "3000", "--backend", "cpu",
               "--strategy", "market_maker", "--param", "max_symbols=2", "--summary-json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tickforge run: sim seed 5" in printed and "latency" in printed
    data = json.loads(out.read_text())
    assert data["messages"] >= 3000 and data["open_orders_left"] == 0 and data["lockstep"] is True
    # the dashboard path: a live view while it runs, the same summary at the end
    rc = main(["run", "--lockstep", "--symbols", "2", "--max-messages", "1000", "--backend", "cpu", "--dashboard"])
    assert rc == 0 and "latency" in capsys.readouterr().out
    assert main(["run", "--live", "--duration", "1"]) == 2
    assert "live" in capsys.readouterr().err
    assert main(["run", "--param", "oops"]) == 2
    assert main(["run", "--cpus", "0,x", "--duration", "1"]) == 2 and "--cpus" in capsys.readouterr().err
    assert main(["run", "--cpus", "-1", "--duration", "1"]) == 2 and "cpu_affinity" in capsys.readouterr().err
    assert main(["run", "--strategy", "no.such.Strategy", "--duration", "1"]) == 2
    assert main(["run", "--rehearse-us", "-1", "--duration", "1"]) == 2 and "rehearse_us" in capsys.readouterr().err


def test_cross_section_step_on_the_gpu_backend_matches_cpu():
    from engine.backend import resolve_backend
    from engine.live import CrossSectionStep

    names = ("a", "b")
    steps = [CrossSectionStep(resolve_backend(b), 5, names, benchmark_id=1, beta_window=3) for b in ("cpu", "gpu")]
    rng = np.random.default_rng(4)
    closes = 100 + rng.normal(0, 1, (6, 5)).cumsum(axis=0)
    for t in range(6):
        ids = np.arange(5) if t != 3 else np.array([0, 2])  # a boundary where only two symbols traded
        rows = rng.normal(size=(len(ids), 2))
        for step in steps:
            step.on_boundary(ids, closes[t, ids], rows)
    cpu, gpu = (s.compute(*s.inputs()) for s in steps)
    assert cpu.backend == "cpu" and gpu.backend == "gpu"
    np.testing.assert_allclose(gpu.zscore, cpu.zscore, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gpu.rank, cpu.rank)
    np.testing.assert_allclose(gpu.beta, cpu.beta, rtol=1e-12)
    assert cpu.beta[1] == pytest.approx(1.0) and cpu.corr[1] == pytest.approx(1.0)
    # the beta is over the last three bar returns, oldest first, a symbol without a bar carrying its close
    seen = closes.copy()
    seen[3, [1, 3, 4]] = seen[2, [1, 3, 4]]
    returns = seen[1:] / seen[:-1] - 1.0
    last = returns[-3:]
    bench = last[:, 1] - last[:, 1].mean()
    expected = ((last - last.mean(axis=0)) * bench[:, None]).mean(axis=0) / (bench**2).mean()
    np.testing.assert_allclose(cpu.beta, expected, rtol=1e-10)


def test_the_venue_process_exits_when_its_engine_is_killed(tmp_path):
    script = tmp_path / "killed_engine.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from engine.config import SimConfig\n"
        "from engine.sim.process import SimProcess\n"
        "async def main():\n"
        "    venue = await SimProcess(SimConfig(n_symbols=2)).start()\n"
        "    print(venue.pid, flush=True)\n"
        "    os._exit(0)  # no stop, no clean-up: as if killed\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    pid = int(out.stdout.split()[0])

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")  # exited (a zombie waits for whoever reaps orphans here)

    deadline = time.monotonic() + 30
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone()


def test_offline_market_fills_book_positions_and_pnl_like_a_broker_fill():
    """``settle_offline(fill_market=True)``: the MA/RSI signal trades a synthetic session with no venue;
    every market order fills whole at the touch, and positions, cash and the order book-keeping agree."""
    from engine.sim.exchange import MarketDataServer
    from engine.sim.market import SyntheticMarket
    from engine.strategies import MovingAverageRsi

    market = SyntheticMarket(6, seed=11)
    encoder = MarketDataServer(market, SimConfig())
    msgs = market.step(40_000)
    frames = [encoder.encode(msgs[i : i + 100], True) for i in range(0, len(msgs), 100)]
    cfg = TickforgeConfig.load(live={"backend": "cpu", "bar_seconds": 1}, risk={"max_orders_per_window": 100_000})
    engine = LiveEngine(cfg, strategy=MovingAverageRsi(fast=3, slow=8, rsi_window=5, qty=10, max_position=30))
    engine.build(market.symbols())
    engine.strategy_ctx_start()
    sent = 0
    for frame in frames:
        actions = engine.process_frame(engine.decoder.decode(frame, time.time_ns()))
        sent += sum(kind == "send" for kind, _ in actions)
        asks, bids = engine.ctx.best_ask_price.copy(), engine.ctx.best_bid_price.copy()
        engine.settle_offline(actions, fill_market=True)
        fills = {f.order_seq: f for f in engine.fills[-len(actions):]} if actions else {}
        for _, seq in actions:  # each filled whole, at the touch it was decided on
            fill, order = fills[seq], engine._orders[seq].order
            assert (fill.side, fill.qty) == (order.side, order.qty)
            assert fill.price == (asks if fill.side == SIDE_BUY else bids)[order.symbol_id]
    assert sent > 20 and len(engine.fills) == sent == engine.stats.fills
    assert not engine._open and not engine.ctx.open_orders  # every order filled and finished
    for sid, symbol in enumerate(market.symbols()):
        booked = sum(f.side * f.qty for f in engine.fills if f.symbol == symbol)
        assert engine.ctx.position[sid] == booked == engine.risk.tracker.qty(sid)
        assert abs(booked) <= 30  # the strategy's position cap held
    # realized + unrealized P&L equals cash flow plus the positions marked at the last mids
    cash = -sum(f.side * f.qty * f.price for f in engine.fills)
    engine._flush_marks()
    rows = engine.symbol_rows(all_symbols=True)
    marked = sum(r.position * 0.5 * (r.best_bid_price + r.best_ask_price) for r in rows if r.position)
    assert sum(r.realized_pnl + r.unrealized_pnl for r in rows) == pytest.approx(cash + marked, abs=1e-6)


class _CrossSectionWatcher(Strategy):
    """Keeps every bar close's cross-section; reads it in ``on_bar`` or leaves it for later."""

    def __init__(self, read_in_on_bar: bool) -> None:
        self.read_in_on_bar = read_in_on_bar
        self.seen: list = []

    def on_bar(self, ctx, bars):  # noqa: ANN001, ANN201
        if self.read_in_on_bar:
            bars.cross_section.zscore  # noqa: B018 - a read: computes it now, before any decision
        self.seen.append(bars.cross_section)
        return []


def test_a_cross_section_not_read_in_on_bar_is_still_computed_for_every_bar_close():
    from engine.live import DeferredCrossSection
    from engine.sim.exchange import MarketDataServer
    from engine.sim.market import SyntheticMarket

    market = SyntheticMarket(5, seed=3)
    encoder = MarketDataServer(market, SimConfig())
    msgs = market.step(30_000)
    frames = [encoder.encode(msgs[i : i + 100], True) for i in range(0, len(msgs), 100)]
    engines = []
    for read in (True, False):
        engine = LiveEngine(TickforgeConfig.load(live={"backend": "cpu", "bar_seconds": 1}), strategy=_CrossSectionWatcher(read))
        engine.build(market.symbols())
        engine.strategy_ctx_start()
        engines.append(engine)
    for frame in frames:
        for engine in engines:
            engine.process_frame(engine.decoder.decode(frame, time.time_ns()))
            assert engine.stats.cross_section_steps == engine.stats.bar_closes  # the step ran, read or not
    now, later = (e.strategy.seen for e in engines)
    assert len(now) == len(later) == engines[0].stats.bar_closes >= 20
    for a, b in zip(now, later):
        assert isinstance(b, DeferredCrossSection) and "computed" in repr(b)
        for field in ("zscore", "rank", "beta", "corr"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert np.isfinite(later[-1].beta).sum() >= 4  # warm: betas to the benchmark exist


class _BarLog(Strategy):
    def __init__(self) -> None:
        self.closes: list[tuple[int, list[int], list[float]]] = []

    def on_bar(self, ctx, bars):  # noqa: ANN001, ANN201
        self.closes.append((bars.ts_ns, bars.symbol_ids.tolist(), bars.close.tolist()))
        return []


def test_a_frame_that_spans_two_boundaries_closes_each_in_order():
    def trade(symbol: str, seconds: float, price: float) -> dict:
        stamp = f"2024-01-02T15:04:{seconds:09.6f}Z"
        return {"T": "t", "S": symbol, "i": 1, "x": "V", "p": price, "s": 10, "t": stamp, "z": "@"}

    engine = LiveEngine(TickforgeConfig.load(live={"backend": "cpu", "bar_seconds": 1}), strategy=_BarLog())
    engine.build(["AAA", "BBB"])
    engine.strategy_ctx_start()
    frames = [
        [trade("AAA", 10.2, 10.0), trade("BBB", 10.3, 20.0)],
        # AAA's and BBB's bars of second 10 close by trade, AAA's of second 11 by the clock at 12.5
        [trade("AAA", 11.5, 11.0), trade("BBB", 12.5, 21.0)],
    ]
    for frame in frames:
        engine.process_frame(engine.decoder.decode(json.dumps(frame).encode(), time.time_ns()))
    base = int(engine.strategy.closes[0][0])
    assert [(ts - base, ids, closes) for ts, ids, closes in engine.strategy.closes] == [
        (0, [0, 1], [10.0, 20.0]),
        (1_000_000_000, [0], [11.0]),
    ]
    assert engine.stats.bar_closes == engine.stats.cross_section_steps == 2
    np.testing.assert_array_equal(engine.cross_section.last_close, [11.0, 20.0])


def test_build_compiles_the_bar_close_kernels_before_the_first_frame():
    """A kernel first compiled at the first bar close stalls that frame (0.5 s on a fresh install)."""
    script = (
        "from engine.config import TickforgeConfig\n"
        "from engine.live import LiveEngine\n"
        "import engine.live as live, engine.strategies.ma_rsi as ma_rsi\n"
        "from engine.strategies import MovingAverageRsi\n"
        "e = LiveEngine(TickforgeConfig.load(live={'backend': 'cpu'}), strategy=MovingAverageRsi())\n"
        "e.build(['AAA', 'BBB']); e.strategy_ctx_start()\n"
        "print(live._bar_columns._call is not None, live._on_boundary._call is not None,"
        " len(e.features._kernels.stream_update.signatures) >= 1, len(ma_rsi._signal.signatures) >= 1)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.split() == ["True"] * 4
