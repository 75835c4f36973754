"""Order router against the embedded broker over loopback: exactly-once submits under every failure."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import eventually, free_port
from test_execution_support import (  # noqa: F401
    AAPL_ASKS,
    AAPL_BIDS,
    SIM,
    book,
    broker,
    fast_execution,
    make_client,
    router,
)

from engine.config import RetryConfig, SimConfig
from engine.execution import (
    AlpacaRestClient,
    DuplicateClientOrderId,
    Forbidden,
    NotFound,
    OrderRequest,
    OrderRouter,
    SlippageRejected,
    SubmitFailed,
    TradeUpdatesStream,
    UnknownOrderOutcome,
    Unprocessable,
)
from engine.execution.models import order_wire
from engine.sim.broker import PaperBroker, StaticBook


def buy(qty: int | str = 10, **fields: object) -> OrderRequest:
    return OrderRequest(symbol="AAPL", side="buy", qty=qty, **fields)  # type: ignore[arg-type]


# --- the happy path, every order shape ----------------------------------------------------------------


async def test_client_order_ids_are_deterministic_and_every_order_shape_reaches_the_wire(
    router: OrderRouter, broker: PaperBroker
) -> None:
    shapes = [
        dict(type="market", time_in_force="day"),
        dict(type="limit", limit_price=Decimal("95.00"), time_in_force="gtc"),
        dict(type="stop", stop_price=Decimal("105.00"), time_in_force="day"),
        dict(type="stop_limit", stop_price=Decimal("105.00"), limit_price=Decimal("105.50"), time_in_force="gtc"),
        dict(type="market", time_in_force="ioc"),
        dict(type="market", time_in_force="fok"),
        dict(type="limit", limit_price=Decimal("95.00"), time_in_force="opg"),
        dict(type="market", time_in_force="cls"),
        dict(type="limit", limit_price=Decimal("95.00"), time_in_force="day", extended_hours=True),
    ]
    orders = [await router.submit(buy(1, **shape)) for shape in shapes]
    assert [o.client_order_id for o in orders] == [f"tf-t-{i}" for i in range(1, len(shapes) + 1)]
    wire = {o["client_order_id"]: o for o in broker.orders()}
    for order, shape in zip(orders, shapes, strict=True):
        sent = wire[order.client_order_id]
        assert sent["type"] == shape["type"] and sent["time_in_force"] == shape["time_in_force"]
        for field in ("limit_price", "stop_price"):
            assert (sent[field] and Decimal(sent[field])) == shape.get(field), field
        assert sent["extended_hours"] is bool(shape.get("extended_hours", False))
        assert router.state.get(order.client_order_id).order_id == order.id
    assert orders[0].status == "filled" and orders[1].status == "new" and orders[2].status == "new"


async def test_submit_now_writes_the_order_before_returning_when_the_lane_has_a_connection(
    router: OrderRouter, broker: PaperBroker
) -> None:
    await router.client.connect_ahead()
    sent: list[int] = []
    accepted: list[int] = []
    before = time.time_ns()
    pending = router.submit_now(buy(2), on_sent=sent.append, on_accepted=accepted.append)
    lane = router.client._lane is not None
    assert len(sent) == (1 if lane else 0) and not accepted  # the lane has it on the socket already
    order = await pending
    assert order.status == "filled" and order.client_order_id == "tf-t-1"
    assert len(accepted) == 1 and before <= accepted[0] <= time.time_ns()
    assert [o["client_order_id"] for o in broker.orders()] == ["tf-t-1"]
    # a refused order raises from the await, and nothing reports it accepted
    with pytest.raises(Unprocessable):
        await router.submit_now(OrderRequest(symbol="ZZZZ", side="buy", qty=1), on_accepted=accepted.append)
    assert len(accepted) == 1
    # a slippage breach raises before anything is written
    with pytest.raises(SlippageRejected):
        router.submit_now(buy(1, type="limit", limit_price=Decimal("150.00")), quote=(99.0, 100.0), on_sent=sent.append)
    assert len(sent) == 1 and len(broker.orders()) == 1


@settings(max_examples=200, deadline=None)
@given(
    side=st.sampled_from(["buy", "sell"]),
    limit=st.one_of(st.none(), st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("99999"), places=4)),
    qty=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1e9"), places=6),
    tif=st.sampled_from(["day", "gtc", "ioc", "fok", "opg", "cls"]),
    symbol=st.sampled_from(["AAPL", "BRK.B", "BTC/USD"]),
)
def test_order_wire_gives_the_request_models_bytes(side, limit, qty, tif, symbol) -> None:
    kind = "market" if limit is None else "limit"
    request = OrderRequest(symbol=symbol, side=side, type=kind, time_in_force=tif, qty=qty, limit_price=limit, client_order_id="x-1")
    assert order_wire(symbol, side, kind, tif, qty, limit, "x-1") == request.to_wire()


def test_requests_are_validated_before_anything_is_sent() -> None:
    with pytest.raises(pydantic.ValidationError, match="limit_price is required"):
        OrderRequest(symbol="AAPL", side="buy", qty=1, type="limit")
    with pytest.raises(pydantic.ValidationError, match="exactly one of qty or notional"):
        OrderRequest(symbol="AAPL", side="buy")
    with pytest.raises(pydantic.ValidationError):
        OrderRequest(symbol="AAPL", side="buy", qty=-1)
    with pytest.raises(pydantic.ValidationError, match="extended_hours"):
        OrderRequest(symbol="AAPL", side="buy", qty=1, extended_hours=True)
    assert buy("1.5").to_wire() == b'{"symbol":"AAPL","side":"buy","type":"market","time_in_force":"day","qty":"1.5"}'


async def test_reads_and_cancels(router: OrderRouter) -> None:
    resting = [await router.submit(buy(5, type="limit", limit_price=Decimal("90.00"), time_in_force="gtc")) for _ in range(3)]
    await router.submit(buy(20))
    assert (await router.get_order(resting[0].id)).client_order_id == resting[0].client_order_id
    assert (await router.get_order_by_client_id(resting[1].client_order_id)).id == resting[1].id
    assert {o.id for o in await router.list_orders()} == {o.id for o in resting}
    await router.cancel(resting[0].id)
    assert router.state.get(resting[0].client_order_id).status == "new"  # cancel alone does not fetch
    assert (await router.get_order(resting[0].id)).status == "canceled"
    assert router.state.get(resting[0].client_order_id).status == "canceled"
    filled = (await router.list_orders("closed"))[0]
    assert filled.status == "filled"
    with pytest.raises(Unprocessable):
        await router.cancel(filled.id)
    with pytest.raises(NotFound):
        await router.cancel("7d9f3c1e-0000-4000-8000-000000000000")
    cancelled = await router.cancel_all()
    assert sorted(c.id for c in cancelled) == sorted(o.id for o in resting[1:]) and {c.status for c in cancelled} == {200}
    (position,) = await router.positions()
    assert (position.symbol, position.qty, position.side) == ("AAPL", Decimal(20), "long")
    account = await router.account()
    assert account.cash == Decimal(1_000_000) - (Decimal("100.01") * 20) and account.status == "ACTIVE"


async def test_cancelling_an_already_cancelled_order_is_success(router: OrderRouter) -> None:
    order = await router.submit(buy(5, type="limit", limit_price=Decimal("90.00")))
    await router.cancel(order.id)
    await router.cancel(order.id)  # e.g. a retry after a lost 204: the order is canceled, as wanted


# --- unknown outcomes: one intent, one order ------------------------------------------------------------


async def test_response_dropped_after_the_order_was_accepted_leaves_exactly_one_order(
    router: OrderRouter, broker: PaperBroker
) -> None:
    broker.faults.drop_after_accept = 1
    order = await router.submit(buy(10))
    assert [o["client_order_id"] for o in broker.orders()] == [order.client_order_id]
    assert order.status == "filled" and router.resolved_by_lookup == 1
    (position,) = await router.positions()
    assert position.qty == 10  # not 20


async def test_timeout_on_submit_is_resolved_by_lookup_and_the_slow_original_cannot_double(broker: PaperBroker) -> None:
    async with OrderRouter(make_client(broker, read_timeout_s=0.2), session_id="slow") as slow_router:
        broker.faults.delay_s, broker.faults.delay_requests = 0.6, 1  # only the first request is slow
        task = asyncio.create_task(slow_router.submit(buy(10)))
        # the id is on record while the first attempt is still in flight
        await eventually(lambda: slow_router.state.get("tf-slow-1") is not None)
        assert slow_router.state.get("tf-slow-1").status == "unknown"
        order = await task
        await asyncio.sleep(0.6)  # let the delayed original reach the broker: it must be refused as a duplicate
        assert [o["client_order_id"] for o in broker.orders()] == [order.client_order_id]


async def test_429_burst_slows_the_router_and_loses_nothing(broker: PaperBroker) -> None:
    client = make_client(broker, retry=RetryConfig(max_attempts=6, base_delay_s=0.01, max_delay_s=0.05))
    async with OrderRouter(client, session_id="burst") as burst_router:
        broker.faults.throttle_next, broker.faults.retry_after_s = 2, 1
        orders = await asyncio.gather(*(burst_router.submit(buy(1)) for _ in range(3)))
        assert client.limiter.server_holds >= 1  # it paused as the server asked
    assert sorted(o["client_order_id"] for o in broker.orders()) == sorted(o.client_order_id for o in orders)
    assert len(broker.orders()) == 3


async def test_past_the_brokers_rate_limit_every_intent_lands_exactly_once(book: StaticBook) -> None:
    async with PaperBroker(book, SimConfig(rate_limit_per_min=8), rate_window_s=1.0) as limited:
        client = make_client(limited, retry=RetryConfig(max_attempts=12, base_delay_s=0.01, max_delay_s=0.1))
        async with OrderRouter(client, session_id="rl") as rl_router:
            orders = await asyncio.gather(*(rl_router.submit(buy(1)) for _ in range(14)))
        assert limited.stats["rate_limited"] > 0 or client.limiter.server_holds > 0
        ids = [o["client_order_id"] for o in limited.orders()]
        assert sorted(ids) == sorted(o.client_order_id for o in orders) and len(set(ids)) == 14


async def test_5xx_storm_gives_up_after_bounded_attempts_then_resolves_cleanly(router: OrderRouter, broker: PaperBroker) -> None:
    broker.faults.error_next = 10_000
    with pytest.raises(UnknownOrderOutcome, match="tf-t-1: outcome unknown after 4 attempts") as info:
        await router.submit(buy(10))
    assert info.value.client_order_id == "tf-t-1"
    assert router.state.get("tf-t-1").status == "unknown"  # left for reconciliation, not guessed
    broker.faults.error_next = 0
    assert await router.resolve("tf-t-1") is None
    assert router.state.get("tf-t-1").status == "rejected"
    assert broker.orders() == []


async def test_a_short_5xx_run_is_retried_into_exactly_one_order(router: OrderRouter, broker: PaperBroker) -> None:
    broker.faults.error_next = 2
    order = await router.submit(buy(10))
    assert [o["client_order_id"] for o in broker.orders()] == [order.client_order_id]


async def test_nothing_listening_is_a_clear_not_created_failure() -> None:
    client = AlpacaRestClient(f"http://127.0.0.1:{free_port()}", "k", "s", fast_execution(connect_timeout_s=0.2))
    async with OrderRouter(client, session_id="down") as down:
        with pytest.raises(SubmitFailed, match="order tf-down-1 not created after 4 attempts: ConnectError"):
            await down.submit(buy(1))
        assert down.state.get("tf-down-1").status == "rejected"


# --- definite refusals are not retried ------------------------------------------------------------------


async def test_insufficient_buying_power_is_final(router: OrderRouter, broker: PaperBroker) -> None:
    with pytest.raises(Forbidden, match="insufficient buying power") as info:
        await router.submit(buy(50_000, type="limit", limit_price=Decimal("100.00")))
    assert info.value.code == 40310000
    assert router.state.get("tf-t-1").status == "rejected" and broker.orders() == []


async def test_a_reused_client_order_id_for_a_different_order_is_refused(router: OrderRouter, broker: PaperBroker) -> None:
    await router.submit(buy(1, client_order_id="mine"))
    with pytest.raises(DuplicateClientOrderId, match="belongs to a different order"):
        await router.submit(OrderRequest(symbol="MSFT", side="sell", qty=5, client_order_id="mine"))
    assert len(broker.orders()) == 1


# --- slippage guard in the submit path --------------------------------------------------------------


async def test_slippage_guard_refuses_or_converts_before_sending(broker: PaperBroker, book: StaticBook) -> None:
    wide_bids, wide_asks = [(99.0, 100.0)], [(101.5, 100.0), (102.0, 100.0)]  # ask 101.5 is 75 bps over the mid
    book.set_book("AAPL", wide_bids, wide_asks)
    quotes = lambda symbol: (99.0, 101.5)  # noqa: E731
    async with OrderRouter(make_client(broker), session_id="r", quotes=quotes) as guarded:
        with pytest.raises(SlippageRejected):
            await guarded.submit(buy(10))
        assert broker.orders() == []
    async with OrderRouter(make_client(broker, slippage_action="limit"), session_id="c", quotes=quotes) as converting:
        order = await converting.submit(buy(10))
    assert (order.type, order.limit_price, order.status) == ("limit", Decimal("100.75"), "new")  # rests at the band


async def test_orders_given_as_values_take_the_same_guard_wire_and_exactly_once_path(
    broker: PaperBroker, book: StaticBook
) -> None:
    wide_bids, wide_asks = [(99.0, 100.0)], [(101.5, 100.0), (102.0, 100.0)]  # ask 101.5 is 75 bps over the mid
    touch = [(AAPL_BIDS[0][0], AAPL_ASKS[0][0])]
    quotes = lambda symbol: touch[0]  # noqa: E731
    async with OrderRouter(make_client(broker), session_id="v", quotes=quotes) as router:
        await router.client.connect_ahead()
        sent: list[int] = []
        bought = await router.submit_values_now("AAPL", "buy", Decimal("10"), "v-1", on_sent=sent.append)
        assert len(sent) == 1 and bought.status == "filled" and bought.filled_qty == 10
        resting = await router.submit_values_now("AAPL", "sell", Decimal("5"), "v-2", type="limit",
                                                 limit_price=Decimal("120.00"), time_in_force="gtc")
        assert (resting.type, resting.limit_price, resting.time_in_force, resting.status) == ("limit", Decimal("120.00"), "gtc", "new")
        assert router.state.get("v-2").status == "new"
        book.set_book("AAPL", wide_bids, wide_asks)
        touch[0] = (99.0, 101.5)
        with pytest.raises(SlippageRejected):  # refused before anything is written
            router.submit_values_now("AAPL", "buy", Decimal("10"), "v-3", on_sent=sent.append)
        assert len(sent) == 1 and router.state.get("v-3") is None
        # an answer lost after the broker accepted: resolved by look-up, one order
        broker.faults.drop_after_accept = 1
        passive = await router.submit_values_now("AAPL", "buy", Decimal("3"), "v-4", type="limit", limit_price=Decimal("98.00"))
        assert passive.status == "new" and router.resolved_by_lookup == 1
        # a type the values path does not build (a stop order needs a stop price) is checked by the model
        with pytest.raises(pydantic.ValidationError, match="stop_price is required"):
            router.submit_values_now("AAPL", "buy", Decimal("1"), "v-5", type="stop")
    async with OrderRouter(make_client(broker, slippage_action="limit"), session_id="w", quotes=quotes) as converting:
        order = await converting.submit_values_now("AAPL", "buy", Decimal("10"), "w-1")
    assert (order.type, order.limit_price, order.status) == ("limit", Decimal("100.75"), "new")  # rests at the band
    assert sorted(o["client_order_id"] for o in broker.orders()) == ["v-1", "v-2", "v-4", "w-1"]


async def test_pre_trade_hook_can_deny(broker: PaperBroker) -> None:
    def deny_big(request: OrderRequest) -> None:
        if request.qty and request.qty > 100:
            raise ValueError("order too large")

    async with OrderRouter(make_client(broker), session_id="p", pre_trade=deny_big) as checked:
        with pytest.raises(ValueError, match="too large"):
            await checked.submit(buy(101))
        await checked.submit(buy(100))
    assert len(broker.orders()) == 1


# --- cancel racing a fill -----------------------------------------------------------------------------


@pytest.mark.parametrize("cross_first", [False, True])
async def test_cancel_racing_a_fill_ends_consistent(broker: PaperBroker, book: StaticBook, cross_first: bool) -> None:
    fills: list[tuple] = []
    client = make_client(broker)
    async with OrderRouter(client, session_id="race") as racer, TradeUpdatesStream(
        client, state=racer.state, on_fill=lambda *f: fills.append(f)
    ) as stream:
        await stream.wait_connected(5)
        outcomes = []
        for round_no in range(6):
            book.set_book("AAPL", AAPL_BIDS, AAPL_ASKS)
            order = await racer.submit(buy(100, type="limit", limit_price=Decimal("99.50"), time_in_force="gtc"))
            crossing_size = 60.0 if round_no % 2 else 500.0  # partial or complete fill

            async def cross(delay_ticks: int = round_no % 3) -> None:
                for _ in range(delay_ticks):
                    await asyncio.sleep(0)
                book.set_book("AAPL", [(99.0, 10.0)], [(99.40, crossing_size)])

            async def cancel() -> str:
                try:
                    await racer.cancel(order.id)
                    return "canceled"
                except Unprocessable:
                    return "too late"

            if cross_first:
                _, outcome = await asyncio.gather(cross(), cancel())
            else:
                outcome, _ = await asyncio.gather(cancel(), cross())
            final = await racer.get_order(order.id)
            if outcome == "canceled":
                assert final.status == "canceled" and final.filled_qty in (0, 60)
            else:
                assert final.status == "filled" and final.filled_qty == 100
            outcomes.append((outcome, final.filled_qty))
        await racer.cancel_all()
        position = sum((p.qty for p in await racer.positions()), Decimal(0))
        assert position == sum(filled for _, filled in outcomes)
        await eventually(lambda: sum(f[2] for f in fills) == float(position))


# --- secrets stay secret ---------------------------------------------------------------------------------


async def test_secrets_never_reach_reprs_errors_or_logs(broker: PaperBroker, caplog: pytest.LogCaptureFixture) -> None:
    secret = SIM.secret_key.get_secret_value()
    caplog.set_level(logging.DEBUG)
    client = make_client(broker)
    errors: list[BaseException] = []
    async with OrderRouter(client, session_id="s") as quiet, TradeUpdatesStream(client, state=quiet.state) as stream:
        await stream.wait_connected(5)
        broker.faults.error_next = 10_000
        try:
            await quiet.submit(buy(1))
        except UnknownOrderOutcome as exc:
            errors.append(exc)
        broker.faults.error_next = 0
        wrong = AlpacaRestClient(broker.base_url, "tickforge-sim", "not-the-secret", fast_execution())
        try:
            await wrong.get_account()
        except Forbidden as exc:
            errors.append(exc)
        await wrong.aclose()
    assert len(errors) == 2
    for text in [repr(client), str(client), caplog.text, *(str(e) for e in errors), repr(SIM), repr(fast_execution())]:
        assert secret not in text and "not-the-secret" not in text


def test_public_api_is_what_the_docs_name() -> None:
    import subprocess
    import sys

    import engine.execution as execution

    documented = {
        "AlpacaRestClient", "OrderRouter", "ClientOrderIds", "OrderRequest", "Order", "Position", "Account",
        "CancelResult", "TradeUpdate", "OrderStateTable", "OrderRecord", "RateLimiter", "RetryPolicy", "is_retryable",
        "SlippageGuard", "TradeUpdatesStream", "StreamAuthError", "TwapExecutor", "TwapResult", "TwapSlice",
        "plan_slices", "ExecutionError", "ApiError", "Unauthorized", "Forbidden", "NotFound", "Unprocessable",
        "DuplicateClientOrderId", "RateLimited", "ServerError", "SlippageRejected", "SubmitFailed",
        "UnknownOrderOutcome", "RetryExhausted",
    }
    assert set(execution.__all__) == documented
    # the execution layer pulls in no GPU stack and no vendor SDK
    probe = "import sys, engine.execution; print(sorted(m for m in ('cupy', 'numba.cuda', 'alpaca') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
