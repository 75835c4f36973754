"""Latency accounting for the live pipeline: per-stage nanosecond histograms and per-order causal chains.

Every decoded frame carries the timestamps of the stages it passed (receive, decode, book, features,
strategy, risk); an order born from that frame adds send and ack. Each stage's duration (the time since
the previous stage) and the end-to-end spans go into preallocated HDR-style histograms: values below
``2**(SUB_BITS + 1)`` ns are exact, above that every power-of-two range is split into ``2**SUB_BITS``
equal sub-buckets, so a percentile is within 1/128 (0.8 %) of the true value while the whole range
1 ns .. ~18 minutes fits in a few thousand int64 counters. Recording a batch is one numba call; nothing
allocates after construction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from engine._jit import FixedTypes

SUB_BITS = 7                       #: 128 sub-buckets per power of two -> <= 0.8 % relative error
MAX_TRACKABLE_NS = (1 << 40) - 1   #: ~18 minutes; larger values are clamped into the top bucket


@njit(cache=True)
def _bit_length(value: int) -> int:
    n = 0
    while value > 0:
        value >>= 1
        n += 1
    return n


@njit(cache=True)
def bucket_index(value_ns: int) -> int:
    """Histogram bucket of a non-negative duration (negative durations count as 0)."""
    v = value_ns
    if v < 0:
        v = 0
    if v > MAX_TRACKABLE_NS:
        v = MAX_TRACKABLE_NS
    shift = _bit_length(v) - (SUB_BITS + 1)
    if shift < 0:
        shift = 0
    return (shift << SUB_BITS) + (v >> shift)


@njit(cache=True)
def bucket_upper_ns(index: int) -> int:
    """Largest duration that lands in bucket ``index`` (HDR's 'highest equivalent value')."""
    shift = (index >> SUB_BITS) - 1
    if shift < 0:
        shift = 0
    sub = index - (shift << SUB_BITS)
    return ((sub + 1) << shift) - 1


N_BUCKETS = int(bucket_index(MAX_TRACKABLE_NS)) + 1


@njit(cache=True, inline="always")
def _record_one(counts: np.ndarray, stats: np.ndarray, v: int) -> None:
    # stats: [count, sum, min, max]; kept exact next to the bucketed counts
    if v < 0:
        v = 0
    counts[bucket_index(v)] += 1
    stats[0] += 1
    stats[1] += v
    if v < stats[2]:
        stats[2] = v
    if v > stats[3]:
        stats[3] = v


@njit(cache=True)
def _record_many(counts: np.ndarray, stats: np.ndarray, values_ns: np.ndarray) -> None:
    for i in range(values_ns.shape[0]):
        _record_one(counts, stats, values_ns[i])


@njit(cache=True)
def _record_stages(stamps: np.ndarray, counts: np.ndarray, stats: np.ndarray, first: int, last: int) -> None:
    # durations between consecutive reached stages first..last of one frame, into row ``stage``
    prev = stamps[first - 1]
    for stage in range(first, last + 1):
        t = stamps[stage]
        if t:
            _record_one(counts[stage], stats[stage], t - prev)
            prev = t


@njit(cache=True)
def _percentile(counts: np.ndarray, total: int, q: float) -> int:
    if total <= 0:
        return -1
    # rank of the q-th percentile sample, 1-based, like HDR: ceil(q/100 * total), at least 1
    rank = int(np.ceil(q / 100.0 * total))
    if rank < 1:
        rank = 1
    seen = 0
    for i in range(counts.shape[0]):
        seen += counts[i]
        if seen >= rank:
            return bucket_upper_ns(i)
    return bucket_upper_ns(counts.shape[0] - 1)


class LatencyHistogram:
    """One preallocated log-bucketed histogram of durations in nanoseconds."""

    __slots__ = ("name", "counts", "_stats")

    def __init__(self, name: str, counts: np.ndarray | None = None, stats: np.ndarray | None = None) -> None:
        """``counts`` and ``stats`` may be rows of a recorder's arrays (one compiled call fills several)."""
        self.name = name
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64) if counts is None else counts
        self._stats = np.zeros(4, dtype=np.int64) if stats is None else stats
        self._stats[:] = (0, 0, np.iinfo(np.int64).max, 0)

    def record(self, value_ns: int) -> None:
        """Record one duration (Python-side; use ``record_many`` for a batch)."""
        v = min(max(int(value_ns), 0), MAX_TRACKABLE_NS)
        shift = max(v.bit_length() - (SUB_BITS + 1), 0)
        self.counts[(shift << SUB_BITS) + (v >> shift)] += 1
        s = self._stats
        s[0] += 1
        s[1] += v
        if v < s[2]:
            s[2] = v
        if v > s[3]:
            s[3] = v

    def record_many(self, values_ns: np.ndarray) -> None:
        """Record a batch of durations in one compiled call."""
        if len(values_ns):
            _record_many(self.counts, self._stats, np.ascontiguousarray(values_ns, dtype=np.int64))

    @property
    def count(self) -> int:
        return int(self._stats[0])

    @property
    def max_ns(self) -> int:
        return int(self._stats[3]) if self.count else 0

    @property
    def min_ns(self) -> int:
        return int(self._stats[2]) if self.count else 0

    @property
    def mean_ns(self) -> float:
        return float(self._stats[1]) / self.count if self.count else float("nan")

    def percentile(self, q: float) -> int:
        """The q-th percentile (0 < q <= 100) in ns, never above the exact maximum; 0 when empty."""
        if not 0.0 < q <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {q}")
        if not self.count:
            return 0
        return min(int(_percentile(self.counts, self.count, q)), self.max_ns)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts
        if other.count:
            self._stats[0] += other._stats[0]
            self._stats[1] += other._stats[1]
            self._stats[2] = min(self._stats[2], other._stats[2])
            self._stats[3] = max(self._stats[3], other._stats[3])

    def reset(self) -> None:
        self.counts[:] = 0
        self._stats[:] = (0, 0, np.iinfo(np.int64).max, 0)

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_ns": self.percentile(50) if self.count else 0,
            "p99_ns": self.percentile(99) if self.count else 0,
            "max_ns": self.max_ns,
            "mean_ns": self.mean_ns if self.count else 0.0,
        }


# --- the causal chain of one order ------------------------------------------------------------------
STAGES = ("receive", "decode", "book", "features", "strategy", "risk", "send", "ack")
T_RECEIVE, T_DECODE, T_BOOK, T_FEATURES, T_STRATEGY, T_RISK, T_SEND, T_ACK = range(len(STAGES))
N_STAGES = len(STAGES)
FRAME_STAGES = STAGES[: T_RISK + 1]   #: stamped on every frame; send and ack only on orders

#: end-to-end spans reported next to the per-stage durations: name -> (from stage, to stage)
SPANS = {
    "tick_to_decision": (T_RECEIVE, T_RISK),
    "tick_to_send": (T_RECEIVE, T_SEND),
    "tick_to_ack": (T_RECEIVE, T_ACK),
}


_DECISION_SPAN = list(SPANS).index("tick_to_decision")
_SEND_SPAN = list(SPANS).index("tick_to_send")
_ACK_SPAN = list(SPANS).index("tick_to_ack")


def _histogram_rows(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, LatencyHistogram]]:
    """Counts and stats with one row per name, and a histogram over each row."""
    counts = np.zeros((len(names), N_BUCKETS), dtype=np.int64)
    stats = np.zeros((len(names), 4), dtype=np.int64)
    return counts, stats, {name: LatencyHistogram(name, counts[i], stats[i]) for i, name in enumerate(names)}


@njit(cache=True)
def _open_chain(chains, chain_seq, chain_open, stamps, order_seq, span_counts, span_stats):  # pragma: no cover - njit
    # copy the frame's stamps into the order's ring slot; returns 1 when an open chain was overwritten
    slot = order_seq % chains.shape[0]
    overwritten = 1 if chain_open[slot] else 0
    chain_seq[slot] = order_seq
    chain_open[slot] = True
    for k in range(chains.shape[1]):
        chains[slot, k] = stamps[k] if k < T_SEND else 0
    if stamps[T_RISK] and stamps[T_RECEIVE]:
        _record_one(span_counts, span_stats, stamps[T_RISK] - stamps[T_RECEIVE])
    return overwritten


@njit(cache=True)
def _stamp_chain(chains, chain_seq, chain_open, order_seq, stage, t, stage_counts, stage_stats, span_counts, span_stats):  # pragma: no cover - njit
    # first stamp of ``stage`` on an open chain: the stage's duration since the latest earlier stamp,
    # and the spans ending at send or ack; the ack closes the chain
    slot = order_seq % chains.shape[0]
    if chain_seq[slot] != order_seq or not chain_open[slot] or chains[slot, stage]:
        return
    chains[slot, stage] = t
    for k in range(stage - 1, -1, -1):
        if chains[slot, k]:
            _record_one(stage_counts[stage], stage_stats[stage], t - chains[slot, k])
            break
    start = chains[slot, T_RECEIVE]
    if stage == T_SEND and start:
        _record_one(span_counts[_SEND_SPAN], span_stats[_SEND_SPAN], t - start)
    if stage == T_ACK:
        if start:
            _record_one(span_counts[_ACK_SPAN], span_stats[_ACK_SPAN], t - start)
        chain_open[slot] = False


def now_ns() -> int:
    """The one clock of the pipeline (monotonic-ish wall clock, comparable with ``recv_ns``)."""
    return time.time_ns()


@dataclass
class OrderChain:
    """Timestamps of one order's causal chain, indexed by the ``T_*`` stage constants."""

    order_seq: int
    stamps: np.ndarray  # int64[N_STAGES], 0 = stage not reached


class LatencyRecorder:
    """Per-stage and end-to-end histograms plus a ring of recent per-order chains.

    ``frame_stamps`` is a reusable int64 vector the pipeline fills with one frame's stage times;
    ``record_frame`` turns it into stage durations. ``open_chain`` copies it for an order about to be
    sent, ``stamp`` adds send and ack, and the ack closes the chain into the order histograms.
    """

    def __init__(self, chain_capacity: int = 65_536) -> None:
        # one row per stage (and per span), so a frame's durations are recorded in one compiled call;
        # row 0 of the stages (receive) is a start, never a duration
        self._stage_counts, self._stage_stats, stages = _histogram_rows(STAGES)
        self.stages = {name: h for name, h in stages.items() if name != STAGES[T_RECEIVE]}
        self._span_counts, self._span_stats, self.spans = _histogram_rows(tuple(SPANS))
        self._record_stages = FixedTypes(_record_stages)  # per frame: skip numba's dispatch
        self._open_chain = FixedTypes(_open_chain)
        self._stamp_chain = FixedTypes(_stamp_chain)  # per order, twice: send and ack
        self.frame_stamps = np.zeros(N_STAGES, dtype=np.int64)
        self._capacity = int(chain_capacity)
        self._chains = np.zeros((self._capacity, N_STAGES), dtype=np.int64)
        self._chain_seq = np.full(self._capacity, -1, dtype=np.int64)
        self._chain_open = np.zeros(self._capacity, dtype=np.bool_)
        self.chains_overwritten = 0

    # -- frames ----------------------------------------------------------------------------------
    def begin_frame(self, recv_ns: int) -> np.ndarray:
        s = self.frame_stamps
        s[:] = 0
        s[T_RECEIVE] = recv_ns
        return s

    def record_frame(self, first: int = T_DECODE) -> None:
        """Stage durations of the current frame from stage ``first`` on (stages not reached are
        skipped); the first duration is measured from stage ``first - 1``."""
        self._record_stages(self.frame_stamps, self._stage_counts, self._stage_stats, first, T_RISK)

    # -- orders ----------------------------------------------------------------------------------
    def open_chain(self, order_seq: int) -> None:
        """Start the chain of an order decided in the current frame."""
        # an older order that never got its ack loses its chain to this one
        self.chains_overwritten += self._open_chain(
            self._chains, self._chain_seq, self._chain_open, self.frame_stamps, int(order_seq),
            self._span_counts[_DECISION_SPAN], self._span_stats[_DECISION_SPAN],
        )

    def stamp(self, order_seq: int, stage: int, t_ns: int | None = None) -> None:
        """Stamp send or ack on an open chain; an ack closes it. Unknown or closed chains are ignored,
        and so is a second stamp of a stage (e.g. the trade_updates 'new' event after the REST ack)."""
        self._stamp_chain(
            self._chains, self._chain_seq, self._chain_open, int(order_seq), int(stage), now_ns() if t_ns is None else int(t_ns),
            self._stage_counts, self._stage_stats, self._span_counts, self._span_stats,
        )

    def chain(self, order_seq: int) -> OrderChain | None:
        """The chain of a recent order (open or acked), None once its ring slot was reused."""
        slot = order_seq % self._capacity
        if self._chain_seq[slot] != order_seq:
            return None
        return OrderChain(order_seq, self._chains[slot].copy())

    # -- reporting -------------------------------------------------------------------------------
    def histograms(self) -> dict[str, LatencyHistogram]:
        return {**self.stages, **self.spans}

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: h.summary() for name, h in self.histograms().items() if h.count}

    def reset(self) -> None:
        for h in self.histograms().values():
            h.reset()
