"""Hot-path rehearsal: replays on a twin keep the decision path warm and change nothing real.

Two engines take the same session frame by frame; one has its latest frame (and an older one)
replayed through a ``HotPathRehearsal`` between frames. Their decisions, books, marks, risk state,
statistics and latency histograms must be the same, and the twin must end every order it decided.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.config import SimConfig, TickforgeConfig
from engine.live import LiveEngine
from engine.rehearsal import HotPathRehearsal
from engine.sim.exchange import MarketDataServer
from engine.sim.market import SyntheticMarket
from engine.strategies import MidPriceMarketMaker

MAKER = {"half_spread_bps": 5.0, "qty": 1.0, "max_inventory": 1_000.0, "requote_bps": 1.0, "min_requote_ms": 0.0}


def _session(wire_msgpack: bool) -> tuple[list[str], list[bytes]]:
    market = SyntheticMarket(8, seed=5)
    encoder = MarketDataServer(market, SimConfig())
    msgs = market.step(6_000)
    return market.symbols(), [encoder.encode(msgs[i : i + 120], wire_msgpack) for i in range(0, len(msgs), 120)]


def _engine(symbols: list[str]) -> LiveEngine:
    cfg = TickforgeConfig.load(live={"backend": "cpu", "bar_seconds": 1, "busy_poll": True}, risk={"max_orders_per_window": 100_000})
    engine = LiveEngine(cfg, strategy=MidPriceMarketMaker(**MAKER))
    engine.build(symbols)
    engine.strategy_ctx_start()
    return engine


def _orders(engine: LiveEngine, actions: list[tuple[str, int]]) -> list[tuple]:
    out = []
    for kind, seq in actions:
        o = engine._orders[seq].order
        out.append((kind, seq, o.symbol_id, o.side, o.qty, o.order_type, o.limit_price))
    return out


@pytest.mark.parametrize("wire_msgpack", [True, False])
def test_rehearsals_leave_decisions_books_risk_and_statistics_as_without_them(wire_msgpack):
    symbols, frames = _session(wire_msgpack)
    plain, rehearsed = _engine(symbols), _engine(symbols)
    rehearsal = HotPathRehearsal(rehearsed, every_us=0)
    for i, frame in enumerate(frames):
        recv_ns = time.time_ns()
        got = []
        for engine in (plain, rehearsed):
            actions = engine.process_frame(engine.decoder.decode(frame, recv_ns))
            got.append(_orders(engine, actions))
            engine.settle_offline(actions)
        assert got[0] == got[1], f"frame {i}"
        for replay in (frame, frames[max(i - 7, 0)], frames[-1 - i % 5]):  # the latest, and frames the books have not seen
            rehearsal.rehearse(replay)
    assert sum(len(_orders(plain, [("send", s)])) for s in plain._open) > 0  # the maker has quotes out
    # books, strategy tops and marks
    for field in plain.book.top_of_book().dtype.names:
        np.testing.assert_array_equal(plain.book.top_of_book()[field], rehearsed.book.top_of_book()[field], err_msg=field)
    for name in ("best_bid_price", "best_ask_price", "best_bid_size", "best_ask_size", "position"):
        np.testing.assert_array_equal(getattr(plain.ctx, name), getattr(rehearsed.ctx, name), err_msg=name)
    # risk: in-flight quantities, exposure, decision counts
    assert plain.risk.decision_counts() == rehearsed.risk.decision_counts()
    assert plain.risk.gross_exposure == rehearsed.risk.gross_exposure > 0
    # statistics and the latency histograms' counts
    assert plain.stats == rehearsed.stats and plain.decoder.stats == rehearsed.decoder.stats
    assert {k: v["count"] for k, v in plain.latency.summary().items()} == {k: v["count"] for k, v in rehearsed.latency.summary().items()}
    # the twin went through risk and order booking every time, and ended each order at once
    twin = rehearsal.twin
    assert rehearsal.rehearsals == 3 * len(frames)
    assert twin.risk.decision_counts().get("APPROVED", 0) >= rehearsal.rehearsals - 3 * 2  # a frame without quotes decides nothing
    assert not twin._open and not twin.ctx.open_orders and twin.risk.gross_exposure == 0.0


def test_tick_rehearses_only_after_a_frame_and_at_most_once_per_interval():
    symbols, frames = _session(True)
    engine = _engine(symbols)
    rehearsal = HotPathRehearsal(engine, every_us=10_000_000)
    assert not rehearsal.tick()  # nothing received yet: nothing to replay
    engine.process_frame(engine.decoder.decode(frames[0], time.time_ns()))
    assert rehearsal.tick() and not rehearsal.tick()
    assert rehearsal.rehearsals == 1


def test_the_twin_forgets_every_order_it_decides():
    symbols, frames = _session(True)
    engine = _engine(symbols)
    rehearsal = HotPathRehearsal(engine, every_us=0)
    twin = rehearsal.twin
    for _ in range(3):
        for frame in frames[:10]:
            assert rehearsal.rehearse(frame)
    assert twin._next_seq > 20  # it decided an order per rehearsal...
    assert not twin._orders and not twin._by_coid and not twin._open and not twin._done and not twin.ctx.open_orders  # ...and kept none


def test_the_twin_holds_no_credentials_and_never_trades_live():
    symbols, _ = _session(True)
    cfg = TickforgeConfig.load(alpaca={"key_id": "AKXXXXSECRETID", "secret_key": "hunter2-secret"},
                               live={"backend": "cpu", "busy_poll": True})
    engine = LiveEngine(cfg, strategy=MidPriceMarketMaker(**MAKER))
    engine.build(symbols)
    twin = HotPathRehearsal(engine, every_us=200).twin
    assert twin.mode == "sim" and not twin.config.alpaca.has_credentials
    assert twin.live_cfg.rehearse_us == 0 and not twin.live_cfg.busy_poll and twin.live_cfg.metrics_port == 0


def test_a_frame_the_compiled_path_refuses_is_not_rehearsed():
    symbols, frames = _session(True)
    engine = _engine(symbols)
    rehearsal = HotPathRehearsal(engine, every_us=0)
    assert not rehearsal.rehearse(b"\xc1 not msgpack")  # 0xc1 is never valid: the msgspec path's, not ours
    assert rehearsal.rehearse(frames[0]) and rehearsal.rehearsals == 1
