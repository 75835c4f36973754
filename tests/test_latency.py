"""Latency accounting: HDR-style histograms agree with exact percentiles; order chains add up."""

from __future__ import annotations

import numpy as np
import pytest

from engine import latency
from engine.latency import (
    MAX_TRACKABLE_NS,
    SUB_BITS,
    T_ACK,
    T_BOOK,
    T_DECODE,
    T_FEATURES,
    T_RISK,
    T_SEND,
    T_STRATEGY,
    LatencyHistogram,
    LatencyRecorder,
)

REL_ERR = 1.0 / (1 << SUB_BITS)


def test_small_values_are_exact_and_buckets_are_contiguous():
    for v in range(0, 2 << SUB_BITS):
        assert latency.bucket_index(v) == v
        assert latency.bucket_upper_ns(v) == v
    # every bucket's range starts right after the previous one's ends
    prev_upper = -1
    for i in range(latency.N_BUCKETS):
        upper = latency.bucket_upper_ns(i)
        lower = prev_upper + 1
        assert latency.bucket_index(lower) == i and latency.bucket_index(upper) == i
        assert (upper - lower) <= max(lower * REL_ERR, 0) + 1
        prev_upper = upper
    assert prev_upper == MAX_TRACKABLE_NS


@pytest.mark.parametrize("q", [50, 90, 99, 99.9, 100])
def test_percentiles_within_bucket_precision_of_exact(q):
    rng = np.random.default_rng(3)
    samples = rng.lognormal(mean=9.0, sigma=1.5, size=20_000).astype(np.int64)  # ~8 us median, long tail
    h = LatencyHistogram("x")
    h.record_many(samples)
    exact = np.percentile(samples, q, method="inverted_cdf")
    got = h.percentile(q)
    assert exact <= got <= exact * (1 + REL_ERR) + 1
    assert h.count == len(samples)
    assert h.max_ns == samples.max() and h.min_ns == samples.min()
    assert h.mean_ns == pytest.approx(samples.mean())


def test_record_and_record_many_agree_and_clamp_the_edges():
    values = np.array([-5, 0, 1, 255, 256, 257, 10**6, MAX_TRACKABLE_NS, MAX_TRACKABLE_NS + 10**9], dtype=np.int64)
    one, many = LatencyHistogram("one"), LatencyHistogram("many")
    for v in values:
        one.record(int(v))
    many.record_many(values)
    np.testing.assert_array_equal(one.counts, many.counts)
    assert one.min_ns == 0                      # negative durations (clock steps) count as zero
    assert one.max_ns == MAX_TRACKABLE_NS       # beyond the range: clamped, still counted
    assert one.percentile(100) == MAX_TRACKABLE_NS
    assert one.count == len(values)


def test_empty_histogram_and_bad_percentile():
    h = LatencyHistogram("empty")
    assert h.percentile(99) == 0 and h.count == 0
    assert h.summary()["p99_ns"] == 0
    with pytest.raises(ValueError):
        h.percentile(0)
    with pytest.raises(ValueError):
        h.percentile(100.5)


def test_merge_and_reset():
    a, b = LatencyHistogram("a"), LatencyHistogram("b")
    a.record_many(np.arange(1, 1001))
    b.record_many(np.arange(1001, 2001))
    a.merge(b)
    assert a.count == 2000 and a.max_ns == 2000 and a.min_ns == 1
    assert abs(a.percentile(50) - 1000) <= 1000 * REL_ERR + 1
    a.reset()
    assert a.count == 0 and a.percentile(50) == 0


def test_order_chain_stage_durations_and_spans():
    rec = LatencyRecorder(chain_capacity=4)
    t0 = 1_000_000_000
    stamps = rec.begin_frame(t0)
    stamps[T_DECODE] = t0 + 1_000
    stamps[T_BOOK] = t0 + 1_500
    stamps[T_FEATURES] = t0 + 3_000
    stamps[T_STRATEGY] = t0 + 10_000
    stamps[T_RISK] = t0 + 11_000
    rec.record_frame()
    rec.open_chain(42)
    rec.stamp(42, T_SEND, t0 + 20_000)
    rec.stamp(42, T_ACK, t0 + 520_000)
    rec.stamp(42, T_ACK, t0 + 900_000)  # a later duplicate ack (trade_updates 'new') does not count
    s = rec.summary()
    assert s["decode"]["max_ns"] == 1_000 and s["book"]["max_ns"] == 500
    assert s["features"]["max_ns"] == 1_500 and s["strategy"]["max_ns"] == 7_000 and s["risk"]["max_ns"] == 1_000
    assert s["send"]["max_ns"] == 9_000 and s["ack"]["max_ns"] == 500_000
    assert s["tick_to_decision"]["max_ns"] == 11_000
    assert s["tick_to_send"]["max_ns"] == 20_000
    assert s["tick_to_ack"]["max_ns"] == 520_000 and s["tick_to_ack"]["count"] == 1
    chain = rec.chain(42)
    assert chain is not None and chain.stamps[T_ACK] == t0 + 520_000


def test_chain_ring_reuse_is_counted_and_unknown_orders_ignored():
    rec = LatencyRecorder(chain_capacity=2)
    rec.begin_frame(1)
    rec.open_chain(0)
    rec.open_chain(2)  # same slot as 0, which never got its ack
    assert rec.chains_overwritten == 1
    assert rec.chain(0) is None
    rec.stamp(0, T_ACK, 5)  # stale: ignored
    rec.stamp(99, T_ACK, 5)  # never opened: ignored
    assert "tick_to_ack" not in rec.summary()
    # a frame with stages skipped (no features on a quote-only frame) measures across the gap
    stamps = rec.begin_frame(100)
    stamps[T_DECODE] = 110
    stamps[T_STRATEGY] = 150
    rec.record_frame()
    assert rec.summary()["strategy"]["max_ns"] == 40
