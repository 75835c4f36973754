"""Execution benchmark: order round trip and signal-to-wire against the embedded broker, versus alpaca-py.

The paper broker runs in its own process (so client and server do not share an event loop) and
serves a deep two-sided book, so every market order fills. Measured in one run:

* round trip: ``OrderRouter.submit`` from call to parsed ``Order`` (guard, id, serialise, HTTP, parse);
  the peer is the official ``alpaca-py`` ``TradingClient.submit_order`` against the same broker;
* signal to wire: from building the ``OrderRequest`` for a signal to the moment the request body has
  been written to the socket (httpcore's ``send_request_body.complete`` trace event): slippage guard,
  a pre-trade check, id assignment, serialisation, rate limiter and the HTTP send;
* orders/s: sequential and 8-way concurrent without a binding limit, and paced by the rate limiter.

Run ``python bench/bench_execution.py`` (``--quick`` for a few-second run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, percentiles_ns, write_result  # noqa: E402

from engine.config import ExecutionConfig, SimConfig  # noqa: E402

SIM = SimConfig(rate_limit_per_min=10_000_000, starting_cash=1e12)
BID, ASK = 99.99, 100.01


def serve_broker() -> None:
    """Child process: a paper broker over a deep book; prints its URL, serves until stdin closes."""
    from engine.sim.broker import PaperBroker, StaticBook

    async def main() -> None:
        book = StaticBook({"AAPL": ([(BID, 1e12)], [(ASK, 1e12)])})
        async with PaperBroker(book, SIM) as broker:
            print(broker.base_url, flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)  # parent closes stdin to stop us

    asyncio.run(main())


def us(stats: dict[str, float]) -> dict[str, float]:
    return {k.replace("_ns", "_us"): round(v / 1000.0, 1) for k, v in stats.items()}


async def measure_router(base_url: str, n: int, *, order_lane: bool = True, throughput: bool = True) -> dict[str, object]:
    from engine.execution import AlpacaRestClient, OrderRequest, OrderRouter, RateLimiter

    config = ExecutionConfig(rate_limit_per_min=10_000_000, order_lane=order_lane)
    client = AlpacaRestClient(base_url, SIM.key_id, SIM.secret_key, config)
    max_qty = 1_000

    def pre_trade(request: OrderRequest) -> None:  # stand-in for the risk layer's order-size check
        if request.qty is not None and request.qty > max_qty:
            raise ValueError("order too large")

    router = OrderRouter(client, config, session_id="bench", quotes=lambda symbol: (BID, ASK), pre_trade=pre_trade)
    wire_ns = np.empty(n, dtype=np.int64)
    round_trip_ns = np.empty(n, dtype=np.int64)
    cpu_ns = np.empty(n, dtype=np.int64)
    on_wire = 0

    def sent(ns: int) -> None:  # the order lane's hook
        nonlocal on_wire
        on_wire = ns

    async def trace(event: str, info: dict) -> None:  # httpx's hook
        if event == "http11.send_request_body.complete":
            sent(time.perf_counter_ns())

    hooks = {"on_sent": sent} if order_lane else {"extensions": {"trace": trace}}
    for _ in range(200):  # warm up: connection, caches
        await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=1))
    for i in range(n):
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        order = await router.submit(OrderRequest(symbol="AAPL", side="buy" if i % 2 else "sell", qty=1), **hooks)
        t1 = time.perf_counter_ns()
        cpu_ns[i] = time.thread_time_ns() - c0
        wire_ns[i] = on_wire - t0
        round_trip_ns[i] = t1 - t0
        assert order.status == "filled"
    result: dict[str, object] = {
        "signal_to_wire": us(percentiles_ns(wire_ns)),
        "round_trip": us(percentiles_ns(round_trip_ns)),
        "client_cpu_per_order_us": round(float(np.median(cpu_ns)) / 1000, 1),
    }
    if not throughput:
        await router.aclose()
        return result

    t0 = time.perf_counter()  # throughput: sequential, then 8 concurrent submitters
    for i in range(n):
        await router.submit(OrderRequest(symbol="AAPL", side="buy" if i % 2 else "sell", qty=1))
    result["orders_per_s_sequential"] = round(n / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    await asyncio.gather(*(_paced_worker(router, n // 8) for _ in range(8)))
    result["orders_per_s_8_concurrent"] = round((n // 8 * 8) / (time.perf_counter() - t0), 1)
    await router.aclose()

    # paced: a 6 000/min (100/s) limit with a burst of 10, 8 concurrent submitters
    paced_config = ExecutionConfig(rate_limit_per_min=6_000, order_lane=order_lane)
    paced_client = AlpacaRestClient(base_url, SIM.key_id, SIM.secret_key, paced_config, limiter=RateLimiter(6_000, burst=10))
    paced = OrderRouter(paced_client, paced_config, session_id="paced")
    paced_n = max(100, n // 10)
    t0 = time.perf_counter()
    await asyncio.gather(*(_paced_worker(paced, paced_n // 8) for _ in range(8)))
    result["orders_per_s_limited_6000_per_min"] = round((paced_n // 8 * 8) / (time.perf_counter() - t0), 1)
    await paced.aclose()
    return result


async def _paced_worker(router, k: int) -> None:
    from engine.execution import OrderRequest

    for i in range(k):
        await router.submit(OrderRequest(symbol="AAPL", side="buy" if i % 2 else "sell", qty=1))


def measure_alpaca_py(base_url: str, n: int) -> dict[str, object]:
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    client = TradingClient(SIM.key_id.get_secret_value(), SIM.secret_key.get_secret_value(), url_override=base_url)
    for _ in range(200):
        client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    samples = np.empty(n, dtype=np.int64)
    cpu_ns = np.empty(n, dtype=np.int64)
    for i in range(n):
        side = OrderSide.BUY if i % 2 else OrderSide.SELL
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        order = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=side, time_in_force=TimeInForce.DAY))
        samples[i] = time.perf_counter_ns() - t0
        cpu_ns[i] = time.thread_time_ns() - c0
        assert order.status == "filled"
    t0 = time.perf_counter()
    for i in range(n):
        client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY if i % 2 else OrderSide.SELL, time_in_force=TimeInForce.DAY))
    per_s = n / (time.perf_counter() - t0)
    return {
        "round_trip": us(percentiles_ns(samples)),
        "client_cpu_per_order_us": round(float(np.median(cpu_ns)) / 1000, 1),
        "orders_per_s_sequential": round(per_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second run")
    parser.add_argument("--orders", type=int, default=None, help="orders per measurement")
    parser.add_argument("--serve-broker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_broker:
        serve_broker()
        return
    n = args.orders or (300 if args.quick else 3000)
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-broker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        base_url = child.stdout.readline().strip()  # type: ignore[union-attr]
        if not base_url.startswith("http://"):
            raise SystemExit("broker process did not start")
        ours = asyncio.run(measure_router(base_url, n))
        via_httpx = asyncio.run(measure_router(base_url, max(200, n // 3), order_lane=False, throughput=False))
        peer = measure_alpaca_py(base_url, n)
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=10)

    rt_ratio = peer["round_trip"]["p50_us"] / ours["round_trip"]["p50_us"]  # type: ignore[index]
    rt99_ratio = peer["round_trip"]["p99_us"] / ours["round_trip"]["p99_us"]  # type: ignore[index]
    print(f"machine: {machine()}")
    print(f"orders per measurement: {n}; broker in a separate process on loopback")
    print(f"{'':34}{'p50 us':>10}{'p99 us':>10}")
    for label, stats in (
        ("tickforge signal -> wire", ours["signal_to_wire"]),
        ("tickforge round trip", ours["round_trip"]),
        ("  same, submit through httpx", via_httpx["round_trip"]),
        ("  signal -> wire through httpx", via_httpx["signal_to_wire"]),
        ("alpaca-py round trip (peer)", peer["round_trip"]),
    ):
        print(f"{label:34}{stats['p50_us']:>10}{stats['p99_us']:>10}")  # type: ignore[index]
    print(f"round trip: tickforge is {rt_ratio:.2f}x faster than alpaca-py at p50, {rt99_ratio:.2f}x at p99")
    print(
        f"orders/s: tickforge {ours['orders_per_s_sequential']} sequential, {ours['orders_per_s_8_concurrent']} 8-way, "
        f"{ours['orders_per_s_limited_6000_per_min']} under a 100/s limit; alpaca-py {peer['orders_per_s_sequential']} sequential"
    )
    targets = {
        "signal_to_wire_p99_us<=200": ours["signal_to_wire"]["p99_us"] <= 200,  # type: ignore[index]
        "round_trip_p99_us<=2000": ours["round_trip"]["p99_us"] <= 2000,  # type: ignore[index]
    }
    print(
        f"client CPU per order (median): tickforge {ours['client_cpu_per_order_us']} us, "
        f"through httpx {via_httpx['client_cpu_per_order_us']} us, alpaca-py {peer['client_cpu_per_order_us']} us"
    )
    print(f"targets: {targets}")
    write_result(
        "execution",
        {
            "quick": args.quick,
            "orders": n,
            "tickforge": ours,
            "tickforge_submit_through_httpx": via_httpx,
            "alpaca_py": peer,
            "round_trip_speedup_p50": round(rt_ratio, 2),
            "round_trip_speedup_p99": round(rt99_ratio, 2),
            "targets_met": targets,
        },
    )


if __name__ == "__main__":
    main()
