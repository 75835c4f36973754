"""Order router: pre-trade checks, deterministic client order ids and exactly-once order submission.

One intent becomes at most one order. Every order gets a ``client_order_id`` made of
``prefix-session-sequence`` and recorded in the order-state table before the first attempt. When an
attempt ends without a definite answer (timeout, dropped connection, 5xx, 429) the outcome is unknown:
before any resubmit the router looks the order up by its ``client_order_id`` and returns it if it
exists. Because a resubmit reuses the same id, even a lookup that races a slow first attempt cannot
create a second order: the venue answers the loser with "client_order_id must be unique".
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import httpx

from engine.config import ExecutionConfig
from engine.execution.client import AlpacaRestClient
from engine.execution.errors import (
    ApiError,
    DuplicateClientOrderId,
    NotFound,
    RateLimited,
    ServerError,
    SubmitFailed,
    UnknownOrderOutcome,
    Unprocessable,
)
from engine.execution.lane import SentRequest
from engine.execution.models import Account, CancelResult, Order, OrderRequest, Position, order_wire
from engine.execution.order_state import OrderKey, OrderStateTable
from engine.execution.retry import RetryPolicy
from engine.execution.slippage import SlippageGuard

log = logging.getLogger(__name__)

#: best bid, best ask for a symbol (None when unknown)
QuoteSource = Callable[[str], "tuple[float, float] | None"]
#: raises to deny an order (the risk layer plugs in here)
PreTradeCheck = Callable[[OrderRequest], None]

# Failures after which the request may or may not have reached the venue.
_AMBIGUOUS = (ServerError, RateLimited, httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError,
              httpx.ReadError, httpx.WriteError, httpx.CloseError)
# Failures before anything was sent: the order certainly does not exist.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def new_session_id() -> str:
    """A session id unique to this run: UTC time to the second plus 4 random hex digits."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + os.urandom(2).hex()


class ClientOrderIds:
    """Deterministic ids ``{prefix}-{session_id}-{sequence}``; the session id must be unique per run."""

    def __init__(self, prefix: str, session_id: str, start: int = 1) -> None:
        if not prefix or not session_id:
            raise ValueError("prefix and session_id are required")
        self.prefix = prefix
        self.session_id = session_id
        self._next = start

    def next(self) -> str:
        seq = self._next
        self._next += 1
        return f"{self.prefix}-{self.session_id}-{seq}"


class OrderRouter:
    """Routes orders to Alpaca or the embedded broker through one ``AlpacaRestClient``."""

    def __init__(
        self,
        client: AlpacaRestClient,
        config: ExecutionConfig | None = None,
        *,
        session_id: str | None = None,
        state: OrderStateTable | None = None,
        quotes: QuoteSource | None = None,
        pre_trade: PreTradeCheck | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.config = config or client.config
        self.ids = ClientOrderIds(self.config.client_order_id_prefix, session_id or new_session_id())
        self.state = state if state is not None else OrderStateTable()
        self.guard = SlippageGuard(self.config.slippage_bps, self.config.slippage_action)
        self.retry = retry or RetryPolicy(self.config.retry)
        self._quotes = quotes
        self._pre_trade = pre_trade
        self.resolved_by_lookup = 0  # unknown outcomes settled by a client_order_id lookup

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> OrderRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- submit ----------------------------------------------------------------------------------

    def prepare(self, request: OrderRequest, quote: tuple[float, float] | None = None) -> tuple[OrderRequest, str, bytes]:
        """Pre-trade check, slippage guard, id assignment and serialisation (no I/O).

        Returns the request as it will be sent, its ``client_order_id`` and its wire body. Raises
        ``SlippageRejected`` or whatever the pre-trade check raises.
        """
        if self._pre_trade is not None:
            self._pre_trade(request)
        if quote is None and self._quotes is not None:
            quote = self._quotes(request.symbol)
        bid, ask = quote if quote is not None else (None, None)
        request = self.guard.screen(request, bid, ask)
        coid = request.client_order_id or self.ids.next()
        return request, coid, request.to_wire(coid)

    async def submit(
        self,
        request: OrderRequest,
        *,
        quote: tuple[float, float] | None = None,
        extensions: dict[str, Any] | None = None,
        on_sent: Callable[[int], None] | None = None,
        on_accepted: Callable[[int], None] | None = None,
    ) -> Order:
        """Check, then submit exactly once; returns the venue's order.

        Raises ``SlippageRejected`` (nothing sent), ``ApiError`` for a definite refusal (403, 422),
        ``SubmitFailed`` when the order certainly does not exist after all attempts, or
        ``UnknownOrderOutcome`` when attempts ran out before the outcome was known.
        ``on_sent(perf_counter_ns)`` fires when the first attempt's bytes are on the socket (order lane only;
        through httpx pass a trace hook in ``extensions``); ``on_accepted(time_ns)`` gets the arrival
        time of the venue's success answer, before its body is parsed.
        """
        request, coid, body = self.prepare(request, quote)
        self.state.record_intent(coid, request)
        return await self._submit_once(request, coid, body, extensions, on_sent, on_accepted, None)

    def submit_now(
        self,
        request: OrderRequest,
        *,
        quote: tuple[float, float] | None = None,
        on_sent: Callable[[int], None] | None = None,
        on_accepted: Callable[[int], None] | None = None,
    ) -> Coroutine[Any, Any, Order]:
        """``submit`` whose first attempt is written before this returns when the order lane has a
        connection free (no task's first turn to wait for); await the returned coroutine for the order.

        ``SlippageRejected`` and bad requests raise here, before anything is sent."""
        request, coid, body = self.prepare(request, quote)
        started = self.client.start_order(body, on_sent=on_sent)
        self.state.record_intent(coid, request)  # nothing can run between the write and this line
        return self._submit_once(request, coid, body, None, on_sent, on_accepted, started)

    def submit_values_now(
        self,
        symbol: str,
        side: str,
        qty: Decimal,
        client_order_id: str,
        *,
        type: str = "market",
        limit_price: Decimal | None = None,
        time_in_force: str = "day",
        quote: tuple[float, float] | None = None,
        on_sent: Callable[[int], None] | None = None,
        on_accepted: Callable[[int], None] | None = None,
    ) -> Coroutine[Any, Any, Order]:
        """``submit_now`` for a market or limit order given as values the caller has validated (the
        live engine's risk-checked orders): the slippage guard and the wire body work on the values, so
        no request model is built and checked on the way to the socket. Other order types, or a router
        with a pre-trade hook, take ``submit_now``'s path."""
        if self._pre_trade is not None or type not in ("market", "limit"):
            request = OrderRequest(symbol=symbol, side=side, type=type, time_in_force=time_in_force, qty=qty,  # type: ignore[arg-type]
                                   limit_price=limit_price, client_order_id=client_order_id)
            return self.submit_now(request, quote=quote, on_sent=on_sent, on_accepted=on_accepted)
        if quote is None and self._quotes is not None:
            quote = self._quotes(symbol)
        bid, ask = quote if quote is not None else (None, None)
        type, limit_price = self.guard.screen_values(symbol, side, type, limit_price, bid, ask)
        body = order_wire(symbol, side, type, time_in_force, qty, limit_price, client_order_id)
        started = self.client.start_order(body, on_sent=on_sent)
        key = OrderKey(symbol, side, qty)
        self.state.record_intent(client_order_id, key)  # nothing can run between the write and this line
        return self._submit_once(key, client_order_id, body, None, on_sent, on_accepted, started)

    async def _submit_once(
        self,
        request: OrderRequest | OrderKey,
        coid: str,
        body: bytes,
        extensions: dict[str, Any] | None,
        on_sent: Callable[[int], None] | None,
        on_accepted: Callable[[int], None] | None,
        started: SentRequest | None,
    ) -> Order:
        maybe_created = False
        last_error: BaseException | None = None
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await self.retry.wait(attempt - 1)
            if maybe_created:
                try:
                    found = await self._lookup(request, coid)
                except (*_AMBIGUOUS, *_NOT_SENT) as exc:
                    last_error = exc  # still cannot tell: never resubmit blind
                    continue
                if found is not None:
                    return found
            try:
                first = attempt == 1
                order = await self.client.submit_order(
                    body, extensions=extensions if first else None, on_sent=on_sent if first else None,
                    on_accepted=on_accepted, started=started if first else None,
                )
            except DuplicateClientOrderId as exc:
                # An earlier attempt created it after all: fetch it now rather than after a backoff.
                last_error, maybe_created = exc, True
                try:
                    found = await self._lookup(request, coid)
                except (*_AMBIGUOUS, *_NOT_SENT) as lookup_exc:
                    last_error = lookup_exc
                    continue
                if found is not None:
                    return found
            except _AMBIGUOUS as exc:
                log.info("order %s: submit attempt %d ended without an answer (%s)", coid, attempt, type(exc).__name__)
                last_error, maybe_created = exc, True
            except _NOT_SENT as exc:
                last_error = exc
            except ApiError as exc:
                self.state.mark_rejected(coid, str(exc))
                raise
            else:
                self.state.apply(order)
                return order
        if maybe_created:
            try:
                found = await self._lookup(request, coid)
            except (*_AMBIGUOUS, *_NOT_SENT) as exc:
                raise UnknownOrderOutcome(coid, attempts, exc) from exc
            if found is not None:
                return found
        self.state.mark_rejected(coid, f"not created: {last_error}")
        raise SubmitFailed(coid, attempts, last_error) from last_error

    async def _lookup(self, request: OrderRequest | OrderKey, coid: str) -> Order | None:
        """The order under ``coid``, or None if the venue has none."""
        try:
            order = await self.client.get_order_by_client_id(coid)
        except NotFound:
            return None
        if order.symbol != request.symbol or order.side != request.side or (
            request.qty is not None and order.qty is not None and order.qty != request.qty
        ):
            # A different order already uses this id: a reused session id, not our intent.
            raise DuplicateClientOrderId(422, None, f"client_order_id {coid} belongs to a different order {order.id}")
        self.resolved_by_lookup += 1
        self.state.apply(order)
        return order

    async def resolve(self, client_order_id: str) -> Order | None:
        """Settle an unknown outcome later: the order if it exists (state updated), else None."""
        record = self.state.get(client_order_id)
        try:
            order = await self.retry.call(
                lambda: self.client.get_order_by_client_id(client_order_id), what="order lookup"
            )
        except NotFound:
            if record is not None:
                self.state.mark_rejected(client_order_id, "not found at the venue")
            return None
        self.state.apply(order)
        return order

    # --- convenience for callers that think in sides and quantities -----------------------------

    async def buy(self, symbol: str, qty: float | Decimal | str, **fields: Any) -> Order:
        return await self.submit(OrderRequest(symbol=symbol, side="buy", qty=qty, **fields))  # type: ignore[arg-type]

    async def sell(self, symbol: str, qty: float | Decimal | str, **fields: Any) -> Order:
        return await self.submit(OrderRequest(symbol=symbol, side="sell", qty=qty, **fields))  # type: ignore[arg-type]

    # --- reads and cancels (idempotent, so retried by the policy) -------------------------------

    async def get_order(self, order_id: str) -> Order:
        order = await self.retry.call(lambda: self.client.get_order(order_id), what="get order")
        self.state.apply(order)
        return order

    async def get_order_by_client_id(self, client_order_id: str) -> Order:
        order = await self.retry.call(lambda: self.client.get_order_by_client_id(client_order_id), what="get order")
        self.state.apply(order)
        return order

    async def list_orders(self, status: str = "open", **filters: Any) -> list[Order]:
        orders = await self.retry.call(lambda: self.client.list_orders(status, **filters), what="list orders")
        for order in orders:
            self.state.apply(order)
        return orders

    async def cancel(self, order_id: str) -> None:
        """Cancel one order. ``NotFound`` if unknown, ``Unprocessable`` if it already finished.

        An order found canceled after a 422 counts as success: an earlier attempt whose answer was
        lost (or another client) cancelled it, which is what the caller wanted.
        """
        try:
            await self.retry.call(lambda: self.client.cancel_order(order_id), what="cancel order")
        except Unprocessable:
            order = await self.get_order(order_id)
            if order.status != "canceled":
                raise

    async def cancel_all(self) -> list[CancelResult]:
        return await self.retry.call(self.client.cancel_all_orders, what="cancel all")

    async def positions(self) -> list[Position]:
        return await self.retry.call(self.client.list_positions, what="positions")

    async def account(self) -> Account:
        return await self.retry.call(self.client.get_account, what="account")
