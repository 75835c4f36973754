"""Order-state table: the engine's view of every order, keyed by ``client_order_id``.

Two kinds of facts live here and are kept apart on purpose:

* the latest known **order snapshot** (status, cumulative filled quantity), merged monotonically from
  REST answers and stream events, so a stale snapshot never moves an order backwards;
* the **fill ledger** (quantity and notional already reported to the fill callback), advanced only by
  the trade_updates consumer. Comparing the two is how reconciliation finds fills that were missed
  while the stream was down, and how a replayed fill is recognised as already counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from engine.execution.models import TERMINAL_STATUSES, Order, OrderRequest

_ZERO = Decimal(0)


class OrderKey(NamedTuple):
    """What identifies an order's intent for the state table and the router's look-ups (an
    ``OrderRequest`` has the same three fields)."""

    symbol: str
    side: str
    qty: Decimal | None


@dataclass(slots=True)
class OrderRecord:
    """One order as the engine knows it."""

    client_order_id: str
    symbol: str
    side: str
    qty: Decimal | None
    status: str = "unknown"  # "unknown": submitted, outcome not yet known
    order_id: str | None = None
    filled_qty: Decimal = _ZERO
    filled_avg_price: Decimal | None = None
    recorded_ns: int = field(default_factory=time.time_ns)
    submitted_ns: int | None = None
    order: Order | None = None
    reject_reason: str | None = None
    # fill ledger: what the fill callback has already been told
    reported_qty: Decimal = _ZERO
    reported_notional: Decimal = _ZERO

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_unresolved(self) -> bool:
        return self.status == "unknown"

    @property
    def is_settled(self) -> bool:
        """Finished, and every fill it had is reported: no event or reconciliation can change it."""
        return self.status in TERMINAL_STATUSES and self.reported_qty >= self.filled_qty

    @property
    def seen_ns(self) -> int:
        """The latest of when it was recorded and when the venue says it was submitted."""
        return max(self.recorded_ns, self.submitted_ns or 0)


class OrderStateTable:
    """All orders of this session (and any others the stream reports), by ``client_order_id``."""

    def __init__(self) -> None:
        self._records: dict[str, OrderRecord] = {}
        self._by_order_id: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[OrderRecord]:
        return iter(list(self._records.values()))

    def get(self, client_order_id: str) -> OrderRecord | None:
        return self._records.get(client_order_id)

    def by_order_id(self, order_id: str) -> OrderRecord | None:
        coid = self._by_order_id.get(order_id)
        return self._records.get(coid) if coid is not None else None

    def record_intent(self, client_order_id: str, request: OrderRequest | OrderKey) -> OrderRecord:
        """Note an order before its first submit attempt, so an unknown outcome is never forgotten."""
        record = self._records.get(client_order_id)
        if record is None:
            record = OrderRecord(client_order_id, request.symbol, request.side, request.qty)
            self._records[client_order_id] = record
        return record

    def mark_rejected(self, client_order_id: str, reason: str) -> None:
        """The venue definitely refused (or never created) the order."""
        record = self._records.get(client_order_id)
        if record is not None and record.order_id is None:
            record.status = "rejected"
            record.reject_reason = reason

    def apply(self, order: Order) -> OrderRecord:
        """Merge a snapshot: fills only grow, a terminal status is final, older snapshots lose."""
        record = self._records.get(order.client_order_id)
        if record is None:
            record = OrderRecord(order.client_order_id, order.symbol or "", order.side or "", order.qty)
            self._records[order.client_order_id] = record
        if record.order_id is None:
            record.order_id = order.id
            self._by_order_id[order.id] = order.client_order_id
        if order.submitted_at is not None and record.submitted_ns is None:
            record.submitted_ns = int(order.submitted_at.timestamp() * 1e9)
        newer_fill = order.filled_qty > record.filled_qty
        stale = order.filled_qty < record.filled_qty or (record.is_terminal and not order.is_terminal)
        if newer_fill or not stale:
            record.filled_qty = max(record.filled_qty, order.filled_qty)
            if order.filled_avg_price is not None and newer_fill:
                record.filled_avg_price = order.filled_avg_price
            if not (record.is_terminal and not order.is_terminal):
                record.status = order.status
            record.order = order
        return record

    def record_fill(self, client_order_id: str, qty: Decimal, price: Decimal) -> None:
        """Advance the fill ledger after the fill callback was told about ``qty`` at ``price``."""
        record = self._records[client_order_id]
        record.reported_qty += qty
        record.reported_notional += qty * price

    def open_orders(self) -> list[OrderRecord]:
        """Orders not known to be finished (including unresolved submits)."""
        return [r for r in self._records.values() if not r.is_terminal]

    def unresolved(self) -> list[OrderRecord]:
        return [r for r in self._records.values() if r.is_unresolved]

    def earliest_unsettled_ns(self) -> int | None:
        """When the earliest order not yet settled was submitted (or recorded, before the venue said)."""
        times = [r.submitted_ns or r.recorded_ns for r in self._records.values() if not r.is_settled]
        return min(times) if times else None

    def forget_settled(self, before_ns: int) -> int:
        """Drop settled orders seen before ``before_ns``, oldest first; returns how many.

        A long session would otherwise keep every order it ever sent (~4 KB each with its last
        snapshot). The caller picks ``before_ns`` so that no reconciliation can list a dropped order
        again: one it no longer knew would have its fills reported a second time."""
        gone = []
        for coid, record in self._records.items():
            if record.seen_ns >= before_ns:
                break  # records come in time order: the rest are newer
            if record.is_settled:
                gone.append(coid)
        for coid in gone:
            record = self._records.pop(coid)
            if record.order_id is not None:
                self._by_order_id.pop(record.order_id, None)
        return len(gone)
