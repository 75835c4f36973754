"""Hot-path rehearsal: keep the decision path's code and data in cache while the feed is quiet.

Between two frames a latency-sensitive engine does nothing, and on a shared host that is long enough
for other work to evict what the next frame needs: measured on a 2-core VM, a frame decoded 1 ms
after the previous one took about three times as long as one decoded right after it. Trading
systems answer this by running the hot path on dummy input while idle. ``HotPathRehearsal`` does it
with a twin of the engine (same class, same configuration, its own books, risk state and orders,
never connected): every ``every_us`` it replays the feed's latest frame through the feed's own
decoder onto the twin's books (``BookingDecoder.rehearse``), then through the twin's book path
(``on_book`` of a stand-in strategy, pre-trade risk, order booking), and ends the orders it decided
at once. The real engine's books, positions, orders, statistics and latency histograms are never
touched; the decoder's scratch is, which is free once a frame has been processed. The real strategy
is not rehearsed (it is user code with its own state); the engine's side of the strategy call is.
The twin's books cost as much memory as the engine's.

It runs from the busy poller only: there the loop spins anyway, and a rehearsal is one bounded step
between two polls of the sockets (a frame that arrives during one waits for it to end).
"""

from __future__ import annotations

import time
from typing import Any

from engine.latency import N_STAGES
from engine.strategies import OrderIntent

#: the twin's rate window: it decides an order per rehearsal, far above any real order rate limit
_TWIN_RATE_WINDOW_S = 1e-6


class _StandIn:
    """The twin's strategy: one market order on the first symbol whose book moved, so every
    rehearsal goes through risk and order booking the way a decision does."""

    name = "rehearsal"

    def __init__(self, feature_windows: tuple[int, ...]) -> None:
        self.feature_windows = feature_windows
        self.side = 1

    def on_book(self, ctx: Any, symbol_ids: Any) -> list[OrderIntent]:
        self.side = -self.side
        return [OrderIntent.market(int(symbol_ids[0]), self.side, 1.0, "rehearsal")]


class HotPathRehearsal:
    """Replays ``engine``'s latest compiled-path frame through a twin's book path, at most once per
    ``every_us`` (see the module docstring)."""

    def __init__(self, engine: Any, every_us: int) -> None:
        self.every_ns = int(every_us) * 1_000
        self.source = engine.decoder
        cfg = engine.config
        twin_cfg = cfg.model_copy(update={
            "alpaca": type(cfg.alpaca)(),  # no credentials: the twin never connects, and holds no secret
            "risk": cfg.risk.model_copy(update={"rate_window_s": _TWIN_RATE_WINDOW_S}),
            "live": cfg.live.model_copy(update={
                "backend": "cpu", "busy_poll": False, "rehearse_us": 0, "lockstep": False, "metrics_port": 0,
                "dashboard": False, "record_path": None, "halt_file": None, "cpu_affinity": (),
            }),
        })
        windows = tuple(getattr(engine.strategy, "feature_windows", ()) or ())
        self.twin = type(engine)(twin_cfg, strategy=_StandIn(windows))
        self.twin.build(engine.universe)
        self._stamps = self.twin.latency.frame_stamps
        self._last_ns = 0
        self.rehearsals = 0

    def tick(self) -> bool:
        """Rehearse if one is due and a frame has been seen; returns whether it ran."""
        now = time.time_ns()
        frame = self.source.last_frame
        if frame is None or now - self._last_ns < self.every_ns:
            return False
        self._last_ns = now
        return self.rehearse(frame)

    def rehearse(self, frame: bytes | str) -> bool:
        """One pass of ``frame`` through the twin's book path (its orders end unfilled at once);
        False for a frame the compiled path does not take."""
        twin = self.twin
        batch = self.source.rehearse(frame, twin.frame_book)
        if batch is None:
            return False
        stamps = self._stamps
        stamps[:N_STAGES] = 0
        for kind, seq in twin._book_path(batch, stamps, batch.last_ts_ns or batch.recv_ns):
            if kind == "send":
                self._end(seq)
        self.rehearsals += 1
        return True

    def _end(self, seq: int) -> None:
        """End a twin order and forget it at once: the engine keeps its last finished orders for late
        events, which the twin never gets, and keeps those whose submit is pending, which for the
        twin's never-sent orders would be all of them (thousands a second, all swept by every full
        collection)."""
        twin = self.twin
        twin._finalize(seq)
        track = twin._orders.pop(seq)
        twin._by_coid.pop(track.client_order_id, None)
        twin._done.clear()


__all__ = ["HotPathRehearsal"]
