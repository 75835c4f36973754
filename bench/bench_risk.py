"""Pre-trade risk latency: one check from Python (p50/p99) and a batch of 1,000 orders (ns/order),
numba (engine.risk) against the same checks written as plain Python dicts and ifs, in the same run.

Targets: single check p99 <= 2 us, batch <= 50 ns/order. Both engines see the same book (500
symbols, 40 open positions, marks on all) and the same orders, and must reach the same decisions.
Usage: python bench/bench_risk.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from collections import deque
from pathlib import Path

# numba's cache does not key on bounds checking: keep the benchmark's compiled code apart from the
# tests' (which run with NUMBA_BOUNDSCHECK=1) so neither loads the other's build
os.environ["NUMBA_BOUNDSCHECK"] = "0"
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "tickforge" / "bench-numba"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench._common import machine, percentiles_ns, write_result  # noqa: E402
from engine.config import RiskConfig  # noqa: E402
from engine.events import FILL_DTYPE, ORDER_DTYPE, ORDER_LIMIT, ORDER_MARKET  # noqa: E402
from engine.risk import PnlTracker, RiskEngine, codes  # noqa: E402
from engine.risk._book import C_N_SEEN  # noqa: E402

N_SYMBOLS = 500
N_OPEN = 40
BATCH = 1_000
T0 = 1_709_650_800_000_000_000  # 2024-03-05 15:00 UTC
NAN = float("nan")
CONFIG = RiskConfig(
    max_order_qty=500, max_position_qty=20_000, max_gross_notional=1e12, max_symbol_notional=5e7,
    max_open_positions=60, max_daily_loss=1e9, max_orders_per_window=100_000, rate_window_s=1.0,
    price_band_bps=50, allow_short=True,
)


# --- the peer: the same checks as plain Python -----------------------------------------------------
class PythonRisk:
    """A straightforward dict/if implementation of the same limits, states and worst-case exposure."""

    def __init__(self, config: RiskConfig, symbols: list[str]) -> None:
        self.c = config
        self.known = set(range(len(symbols)))
        self.position: dict[int, float] = {}
        self.avg: dict[int, float] = {}
        self.pending_buy: dict[int, float] = {}
        self.pending_sell: dict[int, float] = {}
        self.mark: dict[int, float] = {}
        self.day_cash = 0.0
        self.day_fees = 0.0
        self.state = "ACTIVE"
        self.live: set[int] = set()  # symbols with a position or in-flight orders
        self.recent: deque[int] = deque()
        self.window_ns = round(config.rate_window_s * 1e9)

    def fill(self, sid: int, side: int, qty: float, price: float) -> None:
        pos = self.position.get(sid, 0.0)
        self.position[sid] = pos + side * qty
        self.day_cash -= side * qty * price
        self.mark.setdefault(sid, price)
        self._relive(sid)

    def release(self, sid: int, side: int, qty: float) -> None:
        book = self.pending_buy if side > 0 else self.pending_sell
        book[sid] = max(book.get(sid, 0.0) - qty, 0.0)
        self._relive(sid)

    def _relive(self, sid: int) -> None:
        if self.active(sid):
            self.live.add(sid)
        else:
            self.live.discard(sid)

    def worst(self, sid: int) -> float:
        pos = self.position.get(sid, 0.0)
        up, down = pos + self.pending_buy.get(sid, 0.0), pos - self.pending_sell.get(sid, 0.0)
        return up if abs(up) >= abs(down) else down

    def active(self, sid: int) -> bool:
        return bool(self.position.get(sid, 0.0) or self.pending_buy.get(sid, 0.0) or self.pending_sell.get(sid, 0.0))

    def check(self, sid: int, side: int, qty: float, kind: int, limit: float, ts: int) -> int:
        c = self.c
        if sid not in self.known:
            return codes.DENY_UNKNOWN_SYMBOL
        if side not in (1, -1):
            return codes.DENY_INVALID_SIDE
        if kind not in (0, 1, 2, 3):
            return codes.DENY_INVALID_ORDER_TYPE
        if qty == 0:
            return codes.DENY_ZERO_QTY
        if not (math.isfinite(qty) and qty > 0):
            return codes.DENY_INVALID_QTY
        if kind == ORDER_LIMIT and not (math.isfinite(limit) and limit > 0):
            return codes.DENY_INVALID_PRICE
        mark = self.mark.get(sid)
        if mark is None:
            return codes.DENY_NO_MARK
        marked = sum(self.position.get(s, 0.0) * self.mark[s] for s in self.live)
        daily = self.day_cash - self.day_fees + marked
        if -daily > c.max_daily_loss:
            self.state = "HALTED"
        if self.state == "HALTED":
            return codes.DENY_HALTED
        pos = self.position.get(sid, 0.0)
        up = pos + self.pending_buy.get(sid, 0.0) + (qty if side > 0 else 0.0)
        down = pos - self.pending_sell.get(sid, 0.0) - (qty if side < 0 else 0.0)
        shrinks = (side > 0 and pos < 0 and up <= 0) or (side < 0 and pos > 0 and down >= 0)
        if self.state == "REDUCING" and not shrinks:
            return codes.DENY_REDUCING
        if qty > c.max_order_qty:
            return codes.DENY_MAX_ORDER_QTY
        if side < 0 and not c.allow_short and down < 0:
            return codes.DENY_SHORT_NOT_ALLOWED
        old = abs(self.worst(sid))
        new = max(abs(up), abs(down))
        grows = new > old + 1e-9
        if grows and new > c.max_position_qty:
            return codes.DENY_MAX_POSITION_QTY
        if grows and new * mark > c.max_symbol_notional:
            return codes.DENY_MAX_SYMBOL_NOTIONAL
        gross = sum(abs(self.worst(s)) * self.mark[s] for s in self.live)
        if grows and gross + (new - old) * mark > c.max_gross_notional:
            return codes.DENY_MAX_GROSS_NOTIONAL
        if sid not in self.live and len(self.live) + 1 > c.max_open_positions:
            return codes.DENY_MAX_OPEN_POSITIONS
        if kind == ORDER_LIMIT and (limit - mark) / mark * 1e4 * side > c.price_band_bps:
            return codes.DENY_PRICE_BAND
        while self.recent and ts - self.recent[0] >= self.window_ns:
            self.recent.popleft()
        if len(self.recent) >= c.max_orders_per_window:
            return codes.DENY_RATE_LIMIT
        self.recent.append(ts)
        book = self.pending_buy if side > 0 else self.pending_sell
        book[sid] = book.get(sid, 0.0) + qty
        self.live.add(sid)
        return codes.RISK_APPROVED


# --- workload --------------------------------------------------------------------------------------
def build(rng: np.random.Generator) -> tuple[RiskEngine, PythonRisk, np.ndarray, np.ndarray]:
    symbols = [f"S{k:04d}" for k in range(N_SYMBOLS)]
    marks = rng.uniform(20, 500, N_SYMBOLS).round(2)
    tracker = PnlTracker.from_config(CONFIG, symbols, clock=lambda: T0)
    engine = RiskEngine(CONFIG, tracker)
    peer = PythonRisk(CONFIG, symbols)
    engine.update_marks(np.arange(N_SYMBOLS), marks)
    peer.mark = {k: float(m) for k, m in enumerate(marks)}
    held = rng.choice(N_SYMBOLS, N_OPEN, replace=False)
    fills = np.zeros(N_OPEN, dtype=FILL_DTYPE)
    for i, sid in enumerate(held):
        side = int(rng.choice([1, -1]))
        qty = float(rng.integers(10, 300))
        fills[i] = (T0, i, i + 1, sid, side, qty, marks[sid], 0.0)
        peer.fill(int(sid), side, qty, float(marks[sid]))
    engine.apply_fills(fills)
    return engine, peer, marks, held


def make_orders(
    rng: np.random.Generator, marks: np.ndarray, held: np.ndarray, n: int, t_start: int, spacing_ns: int = 1_000
) -> np.ndarray:
    """Mostly approvable limit and market orders, 85 % on symbols already held, with a few per cent
    that trip the band, the size or the open-position limit."""
    out = np.zeros(n, dtype=ORDER_DTYPE)
    out["ts_ns"] = t_start + np.arange(n) * spacing_ns
    out["order_seq"] = np.arange(n)
    out["symbol_id"] = np.where(rng.random(n) < 0.85, rng.choice(held, n), rng.integers(0, N_SYMBOLS, n))
    out["side"] = rng.choice([1, -1], n)
    out["order_type"] = np.where(rng.random(n) < 0.7, ORDER_LIMIT, ORDER_MARKET)
    out["qty"] = rng.integers(1, 100, n).astype(np.float64)
    out["qty"][rng.random(n) < 0.02] = 800.0  # above max_order_qty
    offset_bps = rng.normal(0, 25, n)  # ~5 % beyond the 50 bps band
    out["limit_price"] = np.where(out["order_type"] == ORDER_LIMIT,
                                  (marks[out["symbol_id"]] * (1 + offset_bps / 1e4)).round(2), NAN)
    out["stop_price"] = NAN
    return out


def snapshot(engine: RiskEngine) -> list[np.ndarray]:
    t = engine.tracker
    return [a.copy() for a in (t.st, t.ix, t.active, t.agg, t.cnt, engine._rs)]


def restore(engine: RiskEngine, saved: list[np.ndarray]) -> None:
    t = engine.tracker
    for dst, src in zip((t.st, t.ix, t.active, t.agg, t.cnt, engine._rs), saved):
        np.copyto(dst, src)


def peer_state(peer: PythonRisk) -> tuple:
    return dict(peer.pending_buy), dict(peer.pending_sell), set(peer.live), deque(peer.recent), peer.state


def peer_restore(peer: PythonRisk, saved: tuple) -> None:
    peer.pending_buy, peer.pending_sell, peer.live = dict(saved[0]), dict(saved[1]), set(saved[2])
    peer.recent, peer.state = deque(saved[3]), saved[4]


# --- measurements ----------------------------------------------------------------------------------
def time_single(check, release, rows: list[tuple]) -> np.ndarray:
    """Time each check alone; an approved order is canceled (untimed) so the book stays as it was."""
    samples = np.empty(len(rows), dtype=np.int64)
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i, row in enumerate(rows):
            t0 = clock()
            code = check(*row)
            samples[i] = clock() - t0
            if code == codes.RISK_APPROVED:
                release(row[0], row[1], row[2])
    finally:
        gc.enable()
    return samples


def timer_overhead(n: int) -> float:
    clock = time.perf_counter_ns
    samples = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = clock()
        samples[i] = clock() - t0
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds instead of the full run")
    args = parser.parse_args()
    n_single = 20_000 if args.quick else 200_000
    n_batches = 20 if args.quick else 200
    rng = np.random.default_rng(7)
    engine, peer, marks, held = build(rng)
    base_engine, base_peer = snapshot(engine), peer_state(peer)

    # decisions must agree before any timing means anything
    probe = make_orders(rng, marks, held, BATCH, T0 + 1)
    numba_codes = engine.check_orders(probe, now_ns=T0)
    peer_codes = [peer.check(int(o["symbol_id"]), int(o["side"]), float(o["qty"]), int(o["order_type"]),
                             float(o["limit_price"]), int(o["ts_ns"])) for o in probe]
    assert numba_codes.tolist() == peer_codes, "numba and Python risk disagree"
    mix = {codes.denial_name(c): int((numba_codes == c).sum()) for c in np.unique(numba_codes)}
    restore(engine, base_engine)
    peer_restore(peer, base_peer)

    # one check from Python: the hot-path entry by symbol id
    # 20 us apart: 50,000 orders/s, half the rate limit, so the window slides without denying
    orders = make_orders(rng, marks, held, n_single, T0 + 1, spacing_ns=20_000)
    numba_rows = [(int(o["symbol_id"]), int(o["side"]), float(o["qty"]), float(o["limit_price"]),
                   int(o["order_type"]), NAN, int(o["ts_ns"])) for o in orders]
    peer_rows = [(r[0], r[1], r[2], r[4], r[3], r[6]) for r in numba_rows]
    overhead = timer_overhead(50_000)
    time_single(engine.check, engine.release, numba_rows[:2_000])  # warm caches and branch predictors
    restore(engine, base_engine)
    single_numba = time_single(engine.check, engine.release, numba_rows)
    restore(engine, base_engine)
    single_peer = time_single(peer.check, peer.release, peer_rows)
    peer_restore(peer, base_peer)

    # a batch of 1,000 orders in one call, from the same starting book each time
    batches = [make_orders(rng, marks, held, BATCH, T0 + 1) for _ in range(min(n_batches, 20))]
    codes_out = np.empty(BATCH, dtype=np.int32)
    attempted = np.empty(BATCH, dtype=np.float64)
    batch_numba, batch_peer = [], []
    for r in range(n_batches):
        batch = batches[r % len(batches)]
        restore(engine, base_engine)
        t0 = time.perf_counter_ns()
        engine.check_orders(batch, now_ns=T0, codes=codes_out, attempted=attempted)
        batch_numba.append(time.perf_counter_ns() - t0)
    peer_batches = [[(int(o["symbol_id"]), int(o["side"]), float(o["qty"]), int(o["order_type"]),
                      float(o["limit_price"]), int(o["ts_ns"])) for o in b] for b in batches]
    for r in range(max(3, n_batches // 10)):  # the peer is slow: fewer repeats
        rows = peer_batches[r % len(peer_batches)]
        peer_restore(peer, base_peer)
        check = peer.check
        t0 = time.perf_counter_ns()
        for row in rows:
            check(*row)
        batch_peer.append(time.perf_counter_ns() - t0)

    # fills booked per call, for reference
    fills = np.zeros(BATCH, dtype=FILL_DTYPE)
    fills["ts_ns"] = T0
    fills["exec_id"] = np.arange(1, BATCH + 1) + 10_000
    fills["symbol_id"] = rng.integers(0, N_SYMBOLS, BATCH)
    fills["side"] = rng.choice([1, -1], BATCH)
    fills["qty"] = rng.integers(1, 100, BATCH)
    fills["price"] = marks[fills["symbol_id"]]
    fill_times = []
    for r in range(max(5, n_batches // 10)):
        restore(engine, base_engine)
        engine.tracker.seen[:] = 0  # forget the execution ids, or every repeat would be duplicates
        engine.tracker.cnt[C_N_SEEN] = 0
        t0 = time.perf_counter_ns()
        engine.tracker.apply_fills(fills)
        fill_times.append(time.perf_counter_ns() - t0)

    single_n = percentiles_ns(single_numba)
    single_p = percentiles_ns(single_peer)
    batch_n = min(batch_numba) / BATCH
    batch_p = min(batch_peer) / BATCH
    result = {
        "quick": args.quick,
        "book": {"symbols": N_SYMBOLS, "open_positions": N_OPEN, "batch": BATCH, "decision_mix": mix},
        "timer_overhead_ns": overhead,
        "single_check": {"numba": single_n, "python_peer": single_p, "samples": n_single,
                         "p99_ratio_peer_over_numba": single_p["p99_ns"] / single_n["p99_ns"],
                         "target_p99_ns": 2_000, "meets_target": single_n["p99_ns"] <= 2_000},
        "batch_check": {"numba_ns_per_order": batch_n, "python_peer_ns_per_order": batch_p,
                        "ratio_peer_over_numba": batch_p / batch_n, "target_ns_per_order": 50,
                        "meets_target": batch_n <= 50, "repeats": n_batches},
        "apply_fills_ns_per_fill": min(fill_times) / BATCH,
    }
    info = machine()
    print(f"machine: {info['cpu']} ({info['cores']} cores), python {info['python']}, numba {info.get('numba')}")
    print(f"book: {N_SYMBOLS} symbols, {N_OPEN} open positions; decisions in a batch: {mix}")
    print(f"timer overhead (included below): {overhead:.0f} ns")
    print(f"single check  numba  p50 {single_n['p50_ns']:7.0f} ns  p99 {single_n['p99_ns']:7.0f} ns  "
          "(target p99 <= 2000)")
    print(f"single check  python p50 {single_p['p50_ns']:7.0f} ns  p99 {single_p['p99_ns']:7.0f} ns  "
          f"-> numba {single_p['p99_ns'] / single_n['p99_ns']:.1f}x faster at p99")
    print(f"batch of {BATCH}  numba  {batch_n:7.1f} ns/order  (target <= 50)")
    print(f"batch of {BATCH}  python {batch_p:7.1f} ns/order  -> numba {batch_p / batch_n:.1f}x faster")
    print(f"apply_fills    numba  {result['apply_fills_ns_per_fill']:7.1f} ns/fill")
    write_result("risk-quick" if args.quick else "risk", result)


if __name__ == "__main__":
    main()
