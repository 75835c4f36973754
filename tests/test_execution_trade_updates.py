"""trade_updates consumer against the embedded broker: fills reported exactly once across reconnects."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from kit import eventually
from test_execution_support import AAPL_ASKS, AAPL_BIDS, book, broker, make_client  # noqa: F401

from engine.events import SIDE_BUY, SIDE_SELL
from engine.execution import (
    AlpacaRestClient,
    Order,
    OrderRequest,
    OrderRouter,
    OrderStateTable,
    StreamAuthError,
    TradeUpdate,
    TradeUpdatesStream,
)
from engine.sim.broker import PaperBroker, StaticBook


class FillLog:
    """The fill callback: remembers what it was told (as the P&L tracker would book it)."""

    def __init__(self) -> None:
        self.fills: list[tuple[str, int, float, float, str, int, Order]] = []

    def __call__(self, symbol: str, side: int, qty: float, price: float, exec_id: str, ts_ns: int, order: Order) -> None:
        self.fills.append((symbol, side, qty, price, exec_id, ts_ns, order))

    def qty(self, symbol: str = "AAPL") -> float:
        return sum(f[2] * f[1] for f in self.fills if f[0] == symbol)

    def notional(self) -> float:
        return sum(f[2] * f[3] for f in self.fills)


async def position_qty(router: OrderRouter, symbol: str = "AAPL") -> float:
    return float(sum((p.qty for p in await router.positions() if p.symbol == symbol), Decimal(0)))


@contextlib.asynccontextmanager
async def stream_down(broker: PaperBroker, stream: TradeUpdatesStream):  # noqa: ANN201
    """The trade_updates stream is down, and refused, inside the block (yields how many streams were
    dropped); connected again after it."""
    broker.faults.refuse_streams = True
    dropped = await broker.drop_streams()
    await eventually(lambda: not stream.connected.is_set())
    yield dropped
    broker.faults.refuse_streams = False
    await stream.wait_connected(10)


def limit_buy(qty: int, price: str) -> OrderRequest:
    return OrderRequest(symbol="AAPL", side="buy", qty=qty, type="limit", limit_price=Decimal(price), time_in_force="gtc")


async def test_fills_drive_the_callback_and_the_order_table(broker: PaperBroker) -> None:
    log, events = FillLog(), []
    client = make_client(broker)
    async with OrderRouter(client, session_id="u") as router, TradeUpdatesStream(
        client, state=router.state, on_fill=log, on_event=lambda u: events.append(u.event)
    ) as stream:
        await stream.wait_connected(5)
        bought = await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=150))
        sold = await router.submit(OrderRequest(symbol="AAPL", side="sell", qty=40))
        await eventually(lambda: len(log.fills) == 3)
    (s1, side1, q1, p1, x1, t1, o1), (_, _, q2, p2, x2, _, o2), (_, side3, q3, p3, _, _, o3) = log.fills
    assert (s1, side1, q1, p1, q2, p2) == ("AAPL", SIDE_BUY, 100.0, 100.01, 50.0, 100.02)
    assert (side3, q3, p3) == (SIDE_SELL, 40.0, 99.99)
    assert x1 != x2 and t1 > 1_600_000_000 * 10**9
    assert o1.id == bought.id and o1.filled_qty == 100 and o2.status == "filled" and o3.id == sold.id
    assert events == ["new", "partial_fill", "fill", "new", "fill"]
    record = router.state.get(bought.client_order_id)
    assert record.status == "filled" and record.reported_qty == 150
    assert record.reported_notional == Decimal("100.01") * 100 + Decimal("100.02") * 50


async def test_reconnect_reconciles_fills_missed_while_down_without_doubling(broker: PaperBroker, book: StaticBook) -> None:
    log = FillLog()
    client = make_client(broker)
    async with OrderRouter(client, session_id="rc") as router, TradeUpdatesStream(
        client, state=router.state, on_fill=log, healthy_after_s=0.0
    ) as stream:
        await stream.wait_connected(5)
        resting = await router.submit(limit_buy(100, "99.50"))
        other = await router.submit(limit_buy(40, "99.00"))
        book.set_book("AAPL", [(98.0, 10.0)], [(99.40, 30.0)])  # 30 of the first order fill, live on the stream
        await eventually(lambda: log.qty() == 30)

        async with stream_down(broker, stream) as dropped:  # the stream goes down and stays down for a while
            assert dropped == 1
            book.set_book("AAPL", [(98.0, 100.0)], [(98.90, 500.0)])  # both orders fill completely, nobody listening
            market = await router.submit(OrderRequest(symbol="AAPL", side="sell", qty=25))  # filled at once
            assert market.status == "filled" and log.qty() == 30
        await eventually(lambda: log.qty() == 100 + 40 - 25)
        assert stream.stats["connects"] >= 2 and stream.stats["reconciled_fills"] >= 3

        # after reconciliation the stream is live again: new fills arrive once, not twice
        book.set_book("AAPL", AAPL_BIDS, AAPL_ASKS)
        await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=10))
        await eventually(lambda: log.qty() == 125)
        assert log.qty() == await position_qty(router)
    # the money agrees too: the reconciled fills were booked at the prices the broker filled at
    orders = {o["id"]: o for o in broker.orders()}
    broker_notional = sum(Decimal(o["filled_qty"]) * Decimal(o["filled_avg_price"] or 0) for o in orders.values())
    assert log.notional() == pytest.approx(float(broker_notional))
    assert len({f[4] for f in log.fills}) == len(log.fills)  # every exec id once
    assert {resting.id, other.id} <= {f[6].id for f in log.fills}


async def test_a_fill_delivered_before_the_drop_is_not_counted_again(broker: PaperBroker) -> None:
    log = FillLog()
    client = make_client(broker)
    async with OrderRouter(client, session_id="d") as router, TradeUpdatesStream(
        client, state=router.state, on_fill=log, healthy_after_s=0.0
    ) as stream:
        await stream.wait_connected(5)
        await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=120))
        await eventually(lambda: log.qty() == 120)
        await broker.drop_streams()
        await eventually(lambda: stream.stats["connects"] == 2)
        await stream.wait_connected(5)
        assert log.qty() == 120 == await position_qty(router)
        assert stream.stats["reconciled_fills"] == 0


async def test_duplicated_events_are_reported_once(broker: PaperBroker) -> None:
    log = FillLog()
    broker.faults.duplicate_events = True
    client = make_client(broker)
    async with OrderRouter(client, session_id="dup") as router, TradeUpdatesStream(client, state=router.state, on_fill=log) as stream:
        await stream.wait_connected(5)
        await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=250))
        await eventually(lambda: stream.stats["events"] == 2 * 3)  # new, partial_fill, fill: each twice
    assert [f[2] for f in log.fills] == [100.0, 150.0]
    assert stream.stats["duplicates"] >= 2


async def test_bad_credentials_stop_the_consumer_with_a_clear_error(broker: PaperBroker) -> None:
    client = AlpacaRestClient(broker.base_url, "tickforge-sim", "wrong", make_client(broker).config)
    async with TradeUpdatesStream(client) as stream:
        with pytest.raises(StreamAuthError, match="not authorized"):
            await stream.wait_connected(5)
    await client.aclose()


async def test_malformed_frames_are_counted_and_dropped(broker: PaperBroker) -> None:
    log = FillLog()
    stream = TradeUpdatesStream(make_client(broker), on_fill=log)
    await stream.feed(b"not json at all")
    await stream.feed(json.dumps({"stream": "trade_updates", "data": {"event": "fill", "order": {"id": 5}}}))
    await stream.feed(json.dumps({"stream": "listening", "data": {"streams": ["trade_updates"]}}))  # control: ignored
    assert stream.stats["dropped"] == 2 and log.fills == []
    await stream.client.aclose()


def _order(filled: str, avg: str | None, status: str = "partially_filled") -> Order:
    return Order(
        id="7d9f3c1e-0000-4000-8000-000000000001", client_order_id="x-1", symbol="MSFT", side="sell",
        qty=Decimal(100), filled_qty=Decimal(filled), filled_avg_price=None if avg is None else Decimal(avg), status=status,
    )


async def test_an_event_after_missed_events_reports_the_gap_first(broker: PaperBroker) -> None:
    log = FillLog()
    stream = TradeUpdatesStream(make_client(broker), state=OrderStateTable(), on_fill=log)
    now = datetime.now(timezone.utc)
    # The first partial fill (30 @ 10.00) never arrived; the second (20 @ 10.50) says 50 are filled at 10.20.
    await stream.apply(TradeUpdate(event="partial_fill", execution_id="e2", order=_order("50", "10.20"),
                                   timestamp=now, qty=Decimal(20), price=Decimal("10.50")))
    assert [(f[2], f[3], f[4]) for f in log.fills] == [
        (30.0, pytest.approx(10.0), "7d9f3c1e-0000-4000-8000-000000000001:gap:30"),
        (20.0, 10.5, "e2"),
    ]
    # the same event again, and an older snapshot, change nothing
    await stream.apply(TradeUpdate(event="partial_fill", execution_id="e2", order=_order("50", "10.20"),
                                   timestamp=now, qty=Decimal(20), price=Decimal("10.50")))
    await stream.apply(TradeUpdate(event="partial_fill", execution_id="e1", order=_order("30", "10.00"),
                                   timestamp=now, qty=Decimal(30), price=Decimal("10.00")))
    assert len(log.fills) == 2 and log.fills[0][1] == SIDE_SELL
    await stream.client.aclose()


def _finished(coid: str, submitted_s: float, status: str = "filled", filled: str = "10") -> Order:
    return Order(
        id=f"id-{coid}", client_order_id=coid, symbol="AAPL", side="buy", qty=Decimal(10), filled_qty=Decimal(filled),
        filled_avg_price=Decimal("100") if filled != "0" else None, status=status,
        submitted_at=datetime.fromtimestamp(submitted_s, timezone.utc),
    )


def test_the_table_forgets_only_settled_orders_seen_before_the_horizon() -> None:
    table, t0 = OrderStateTable(), 1_800_000_000.0
    for coid, status, filled, report in [
        ("settled", "filled", "10", True),
        ("unreported", "filled", "10", False),  # its fill was never told to the callback: must stay
        ("open", "partially_filled", "4", True),
        ("canceled", "canceled", "0", False),
    ]:
        record = table.apply(_finished(coid, t0, status, filled))
        record.recorded_ns = int(t0 * 1e9)
        if report:
            table.record_fill(coid, Decimal(filled), Decimal("100"))
    late = table.apply(_finished("late", t0 + 10))
    table.record_fill("late", Decimal(10), Decimal("100"))
    late.recorded_ns = int((t0 + 10) * 1e9)
    assert table.earliest_unsettled_ns() == int(t0 * 1e9)

    assert table.forget_settled(int((t0 + 5) * 1e9)) == 2
    assert [r.client_order_id for r in table] == ["unreported", "open", "late"]
    assert table.by_order_id("id-settled") is None and table.by_order_id("id-late") is late
    assert table.forget_settled(int((t0 + 5) * 1e9)) == 0
    assert table.forget_settled(int((t0 + 10) * 1e9)) == 0  # "late" was seen at the horizon, not before
    assert table.forget_settled(int((t0 + 11) * 1e9)) == 1


async def test_settled_orders_are_forgotten_and_a_reconnect_counts_no_fill_twice(broker: PaperBroker, book: StaticBook) -> None:
    log = FillLog()
    client = make_client(broker)
    async with OrderRouter(client, session_id="sw") as router, TradeUpdatesStream(
        client, state=router.state, on_fill=log, healthy_after_s=0.0, reconcile_lookback_s=0.0, keep_settled_s=0.0
    ) as stream:
        await stream.wait_connected(5)
        for _ in range(6):
            await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=10))
        await eventually(lambda: log.qty() == 60)
        assert stream.sweep() == 6 and len(router.state) == 0

        resting = await router.submit(limit_buy(100, "99.50"))
        for _ in range(3):
            await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=10))
        await eventually(lambda: log.qty() == 90)
        assert stream.sweep() == 0 and len(router.state) == 4  # the resting order holds the later ones back

        async with stream_down(broker, stream):
            assert stream.sweep() == 0  # a reconciliation is due: nothing may be forgotten while down
            book.set_book("AAPL", [(98.0, 100.0)], [(99.40, 500.0)])  # the resting order fills, nobody listening
        await eventually(lambda: log.qty() == 190)
        assert stream.stats["reconciled_fills"] == 1
        assert log.qty() == await position_qty(router)
        assert router.state.get(resting.client_order_id).is_settled
        assert stream.sweep() == 4 and len(router.state) == 0
    assert len({f[4] for f in log.fills}) == len(log.fills)


async def test_a_long_session_keeps_a_bounded_order_table(broker: PaperBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.execution.trade_updates as trade_updates

    monkeypatch.setattr(trade_updates, "_SWEEP_EVERY", 5)
    log, sizes = FillLog(), []
    client = make_client(broker)
    async with OrderRouter(client, session_id="long") as router, TradeUpdatesStream(
        client, state=router.state, on_fill=log, reconcile_lookback_s=0.0, keep_settled_s=0.0
    ) as stream:
        await stream.wait_connected(5)
        for n in range(1, 31):
            await router.submit(OrderRequest(symbol="AAPL", side="buy", qty=1))
            await eventually(lambda n=n: log.qty() == n)
            sizes.append(len(router.state))
        assert log.qty() == 30 == await position_qty(router)
    assert max(sizes) <= 6 < 30 and sizes[-1] < 6
    assert len(stream._seen_exec_ids) < 6  # noqa: SLF001 - the exec-id set is bounded with the table


def test_a_negative_keep_is_refused(broker: PaperBroker) -> None:
    with pytest.raises(ValueError, match="keep_settled_s"):
        TradeUpdatesStream(make_client(broker), keep_settled_s=-1)


async def test_reconciliation_pages_through_every_order_filled_while_down(
    broker: PaperBroker, book: StaticBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.execution.trade_updates as trade_updates

    monkeypatch.setattr(trade_updates, "_PAGE", 3)
    log = FillLog()
    client = make_client(broker)
    async with OrderRouter(client, session_id="pg") as router, TradeUpdatesStream(
        client, state=router.state, on_fill=log, healthy_after_s=0.0
    ) as stream:
        await stream.wait_connected(5)
        for cents in range(8):
            await router.submit(limit_buy(10, f"99.{50 - cents:02d}"))
        async with stream_down(broker, stream):
            book.set_book("AAPL", [(98.0, 100.0)], [(99.00, 500.0)])  # all eight fill while nobody listens
        await eventually(lambda: log.qty() == 80)
        assert stream.stats["reconciled_fills"] == 8 and log.qty() == await position_qty(router)
