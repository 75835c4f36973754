"""trade_updates consumer: order events from Alpaca's ``/stream`` drive the order-state table and the fill callback.

Every fill is reported to ``on_fill(symbol, side, qty, price, exec_id, ts_ns, order)`` exactly once.
Fill events carry the order's cumulative ``filled_qty``; the table's fill ledger records what has been
reported, so an event whose fills are already counted (a duplicate, or one that reconciliation got to
first) is skipped, and an event that reveals an earlier missed fill reports the gap too. After every
(re)connect the consumer lists the orders submitted since just before the outage
(``GET /v2/orders?status=all&after=...``) and reports whatever filled while nobody was listening.
Settled orders (finished, every fill reported) are forgotten once no reconciliation can list them
again, so the table and the exec-id set of a day-long session stay bounded.
Reconnects back off exponentially with jitter; the backoff resets only after a connection stayed
healthy for ``healthy_after_s``, so a server that accepts and drops at once is not hammered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from engine._logs import wire_logger
from engine.errors import TickforgeError
from engine.execution.client import AlpacaRestClient
from engine.execution.models import Order, TradeUpdate, side_code
from engine.execution.order_state import OrderRecord, OrderStateTable
from engine.execution.retry import RetryPolicy

log = logging.getLogger(__name__)

_wire_log = wire_logger(__name__)  # websockets frame logs, auth frames redacted

#: on_fill(symbol, side (SIDE_BUY/SIDE_SELL), qty, price, exec_id, ts_ns, order)
FillCallback = Callable[[str, int, float, float, str, int, Order], "Awaitable[None] | None"]
EventCallback = Callable[[TradeUpdate], "Awaitable[None] | None"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PAGE = 500
#: settled orders are kept this long past the reconciliation window, for late duplicate events
KEEP_SETTLED_S = 60.0
#: orders recorded between two sweeps of the settled ones
_SWEEP_EVERY = 1_000
#: the venue's ``after`` is exclusive and times pass through float seconds: windows widen by this much
_EDGE_NS = 1_000


class StreamAuthError(TickforgeError):
    """The trade_updates stream refused the credentials."""


def _ns(when: datetime | None) -> int:
    if when is None:
        return time.time_ns()
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


class TradeUpdatesStream:
    """Keeps one trade_updates connection alive and turns its events into exactly-once fills."""

    def __init__(
        self,
        client: AlpacaRestClient,
        *,
        state: OrderStateTable | None = None,
        on_fill: FillCallback | None = None,
        on_event: EventCallback | None = None,
        retry: RetryPolicy | None = None,
        healthy_after_s: float | None = None,
        reconcile_lookback_s: float | None = None,
        keep_settled_s: float = KEEP_SETTLED_S,
        open_timeout_s: float = 5.0,
        ping_interval_s: float = 10.0,
    ) -> None:
        self.client = client
        self.state = state if state is not None else OrderStateTable()
        self._on_fill = on_fill
        self._on_event = on_event
        self._retry = retry or RetryPolicy(client.config.retry)
        cfg = client.config
        self.healthy_after_s = cfg.stream_healthy_after_s if healthy_after_s is None else healthy_after_s
        lookback_s = cfg.reconcile_lookback_s if reconcile_lookback_s is None else reconcile_lookback_s
        self.reconcile_lookback_ns = int(lookback_s * 1e9)
        self._open_timeout_s = open_timeout_s
        self._ping_interval_s = ping_interval_s
        self._started_ns = time.time_ns()
        self._last_disconnect_ns: int | None = None
        if keep_settled_s < 0:
            raise ValueError(f"keep_settled_s must be >= 0, got {keep_settled_s}")
        self._keep_settled_ns = int(keep_settled_s * 1e9)
        self._seen_exec_ids: set[str] = set()
        self._exec_ids_by_age: deque[tuple[int, str]] = deque()
        self._swept_before_ns = 0  # settled orders seen before this are forgotten: reconcile from here
        self._sweep_at = _SWEEP_EVERY
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = asyncio.Event()  # set while authorised, listening and reconciled
        self.error: BaseException | None = None  # a fatal error that stopped the consumer
        self.stats = {"connects": 0, "events": 0, "fills": 0, "reconciled_fills": 0, "duplicates": 0, "dropped": 0}

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="trade_updates")

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    async def __aenter__(self) -> TradeUpdatesStream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until listening (and reconciled); raises the fatal error if the consumer gave up."""
        waiter = asyncio.ensure_future(self.connected.wait())
        try:
            while not waiter.done():
                if self.error is not None:
                    raise self.error
                if self._task is not None and self._task.done():
                    raise TickforgeError("trade_updates consumer stopped")
                await asyncio.wait({waiter}, timeout=0.02)
                if timeout is not None:
                    timeout -= 0.02
                    if timeout <= 0:
                        raise TimeoutError("trade_updates stream did not connect in time")
        finally:
            waiter.cancel()

    # --- connection loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            healthy_since: float | None = None
            try:
                async with connect(
                    self.client.stream_url,
                    open_timeout=self._open_timeout_s,
                    ping_interval=self._ping_interval_s,
                    ping_timeout=self._ping_interval_s * 2,
                    close_timeout=1.0,
                    max_size=1 << 22,
                    logger=_wire_log,
                ) as ws:
                    self._ws = ws
                    await self._handshake(ws)
                    self.stats["connects"] += 1
                    healthy_since = time.monotonic()
                    await self.reconcile()
                    self.connected.set()
                    log.info("trade_updates: listening on %s", self.client.stream_url)
                    async for raw in ws:
                        await self.feed(raw)
            except StreamAuthError as exc:
                self.error = exc
                log.error("trade_updates: %s; not reconnecting", exc)
                return
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, WebSocketException, InvalidHandshake, TickforgeError) as exc:
                log.warning("trade_updates: connection lost (%s: %s)", type(exc).__name__, exc)
            finally:
                self._ws = None
                if self.connected.is_set() or healthy_since is not None:
                    self._last_disconnect_ns = time.time_ns()
                self.connected.clear()
            if self._stopping:
                return
            if healthy_since is not None and time.monotonic() - healthy_since >= self.healthy_after_s:
                failures = 0
            failures += 1
            await self._retry.wait(failures)

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(self.client.stream_auth_message())
        reply = await self._next_control(ws, "authorization")
        if reply.get("data", {}).get("status") != "authorized":
            raise StreamAuthError("trade_updates stream: credentials not authorized")
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        ack = await self._next_control(ws, "listening")
        if "trade_updates" not in (ack.get("data", {}).get("streams") or []):
            raise TickforgeError(f"trade_updates stream: listen not acknowledged: {ack.get('data')}")

    async def _next_control(self, ws: ClientConnection, stream: str) -> dict:
        """The next control message of ``stream``; trade updates that arrive first are processed."""
        deadline = time.monotonic() + self._open_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"trade_updates stream: no {stream} reply")
            raw = await asyncio.wait_for(ws.recv(), remaining)
            try:
                msg = json.loads(raw)
            except ValueError:
                self.stats["dropped"] += 1
                continue
            if isinstance(msg, dict) and msg.get("stream") == stream:
                return msg
            await self.feed(raw)

    # --- events ----------------------------------------------------------------------------------

    async def feed(self, raw: str | bytes) -> None:
        """Process one raw stream frame (malformed frames are counted and dropped)."""
        try:
            msg = json.loads(raw)
        except ValueError:
            self.stats["dropped"] += 1
            log.warning("trade_updates: dropped a frame that is not JSON")
            return
        if not isinstance(msg, dict) or msg.get("stream") != "trade_updates":
            return
        try:
            update = TradeUpdate.model_validate(msg.get("data"))
        except ValidationError as exc:
            self.stats["dropped"] += 1
            log.warning("trade_updates: dropped a malformed event (%d problems)", exc.error_count())
            return
        await self.apply(update)

    async def apply(self, update: TradeUpdate) -> None:
        """Fold one event into the table and report its fill if it is new."""
        self.stats["events"] += 1
        record = self.state.apply(update.order)
        if update.event in ("fill", "partial_fill"):
            await self._account(record, update.order, update.execution_id, update.qty, update.price, update.timestamp)
        if self._on_event is not None:
            await _maybe_await(self._on_event(update))
        if len(self.state) >= self._sweep_at:
            self.sweep()
            self._sweep_at = len(self.state) + _SWEEP_EVERY

    def sweep(self, now_ns: int | None = None) -> int:
        """Forget the settled orders, and the exec ids, that no reconciliation can list again: seen
        before the oldest unsettled order and before now, less the lookback and ``keep_settled_s``.
        Only while connected (a reconciliation still due looks back to the outage). Returns how
        many orders were forgotten."""
        if not self.connected.is_set():
            return 0
        now = time.time_ns() if now_ns is None else now_ns
        earliest = self.state.earliest_unsettled_ns()
        horizon = min(now, now if earliest is None else earliest) - self.reconcile_lookback_ns - self._keep_settled_ns
        horizon -= _EDGE_NS  # a reconciliation lists after the horizon: the oldest open order must be in it
        if horizon <= self._swept_before_ns:
            return 0
        self._swept_before_ns = horizon
        by_age, seen = self._exec_ids_by_age, self._seen_exec_ids
        while by_age and by_age[0][0] < horizon:
            seen.discard(by_age.popleft()[1])
        return self.state.forget_settled(horizon - _EDGE_NS)  # and no forgotten one

    async def _account(
        self,
        record: OrderRecord,
        order: Order,
        exec_id: str | None,
        qty: Decimal | None,
        price: Decimal | None,
        when: datetime | None,
    ) -> None:
        if exec_id is not None:
            if exec_id in self._seen_exec_ids:
                self.stats["duplicates"] += 1
                return
            self._seen_exec_ids.add(exec_id)
            self._exec_ids_by_age.append((time.time_ns(), exec_id))
        cumulative = order.filled_qty
        delta = cumulative - record.reported_qty
        if delta <= 0:
            self.stats["duplicates"] += 1  # already counted (by reconciliation or an earlier copy)
            return
        avg = order.filled_avg_price
        if exec_id is not None and qty is not None and price is not None and qty > 0:
            event_qty = min(qty, delta)
            gap = delta - event_qty
            if gap > 0 and avg is not None:
                # Events before this one were missed: report them first, at the average they imply.
                gap_notional = cumulative * avg - record.reported_notional - event_qty * price
                await self._report(record, order, gap, gap_notional / gap, f"{order.id}:gap:{cumulative - event_qty}", when)
            await self._report(record, order, event_qty, price, exec_id, when)
            return
        if avg is None:
            log.warning("trade_updates: order %s filled %s with no average price; fill not reported", order.id, delta)
            self.stats["dropped"] += 1
            return
        price_of_gap = (cumulative * avg - record.reported_notional) / delta
        self.stats["reconciled_fills"] += 1
        await self._report(record, order, delta, price_of_gap, exec_id or f"{order.id}:reconciled:{cumulative}", when)

    async def _report(self, record: OrderRecord, order: Order, qty: Decimal, price: Decimal, exec_id: str, when: datetime | None) -> None:
        self.state.record_fill(record.client_order_id, qty, price)
        self.stats["fills"] += 1
        if self._on_fill is None:
            return
        try:
            await _maybe_await(
                self._on_fill(order.symbol or record.symbol, side_code(order.side or record.side), float(qty), float(price), exec_id, _ns(when), order)
            )
        except Exception:  # the consumer must outlive a failing callback; the fill stays counted
            log.exception("trade_updates: fill callback failed for %s", exec_id)

    # --- reconciliation --------------------------------------------------------------------------

    def _reconcile_since_ns(self) -> int:
        since = self._started_ns if self._last_disconnect_ns is None else self._last_disconnect_ns
        earliest = self.state.earliest_unsettled_ns()
        if earliest is not None:
            since = min(since, earliest)
        # never before a sweep: the settled orders it forgot would be reported as new
        return max(since - self.reconcile_lookback_ns - _EDGE_NS, self._swept_before_ns)

    async def reconcile(self) -> int:
        """Report fills the stream did not deliver; returns how many were reported."""
        before = self.stats["fills"]
        after = datetime.fromtimestamp(self._reconcile_since_ns() / 1e9, tz=timezone.utc)
        while True:
            page_after = after
            orders = await self._retry.call(
                lambda: self.client.list_orders("all", after=page_after, direction="asc", limit=_PAGE),
                what="reconcile orders",
            )
            for order in orders:
                record = self.state.apply(order)
                if order.filled_qty > record.reported_qty:
                    await self._account(record, order, None, None, None, order.filled_at or order.updated_at)
            last = orders[-1].submitted_at if orders else None
            if len(orders) < _PAGE or last is None:
                break
            # ``after`` is exclusive: step back a microsecond so an order submitted in the same one as
            # the page's last is not skipped (listing an order twice is harmless, the ledger says so)
            after = max(last - timedelta(microseconds=1), page_after + timedelta(microseconds=1))
        return self.stats["fills"] - before


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result
