"""Pydantic models of Alpaca Trading API v2 requests and responses (orders, positions, account, trade_updates).

Decimals travel as strings on the wire, both ways; here they are ``Decimal`` so quantities and prices
stay exact. Response models ignore fields they do not know (Alpaca adds fields over time) and accept
``null`` wherever the API may send it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.events import (
    SIDE_BUY,
    SIDE_SELL,
    STATUS_CANCELED,
    STATUS_EXPIRED,
    STATUS_FILLED,
    STATUS_NEW,
    STATUS_PARTIALLY_FILLED,
    STATUS_PENDING_NEW,
    STATUS_REJECTED,
    STATUS_UNKNOWN,
)

_encode = msgspec.json.encode

OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc", "opg", "cls", "ioc", "fok"]

#: statuses after which an order never changes again
TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})

_STATUS_CODES = {
    "new": STATUS_NEW,
    "accepted": STATUS_NEW,
    "pending_new": STATUS_PENDING_NEW,
    "accepted_for_bidding": STATUS_PENDING_NEW,
    "partially_filled": STATUS_PARTIALLY_FILLED,
    "filled": STATUS_FILLED,
    "canceled": STATUS_CANCELED,
    "pending_cancel": STATUS_NEW,
    "expired": STATUS_EXPIRED,
    "done_for_day": STATUS_EXPIRED,
    "rejected": STATUS_REJECTED,
    "unknown": STATUS_UNKNOWN,
}


def status_code(status: str) -> int:
    """Alpaca's status string as the engine's ``STATUS_*`` integer (``STATUS_UNKNOWN`` if unrecognised)."""
    return _STATUS_CODES.get(status, STATUS_UNKNOWN)


def side_code(side: str) -> int:
    """``"buy"``/``"sell"`` as ``SIDE_BUY``/``SIDE_SELL``."""
    return SIDE_BUY if side == "buy" else SIDE_SELL


class OrderRequest(BaseModel):
    """The body of ``POST /v2/orders`` for a simple order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1, max_length=32)
    side: OrderSide
    type: OrderType = "market"
    time_in_force: TimeInForce = "day"
    qty: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    notional: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    limit_price: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    stop_price: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    extended_hours: bool = False
    client_order_id: str | None = Field(None, min_length=1, max_length=128)

    def __init__(self, /, **data: Any) -> None:
        # Orders are built on every signal, on the latency path, and pydantic's validator is a large
        # body of code that runs cache-cold after the engine waited on the network (tens of
        # microseconds). Input already in its final types (str, int or finite Decimal, bool) is
        # checked here against the same rules; anything else, valid or not, goes through pydantic,
        # so errors and conversions stay pydantic's own.
        values = _plain_order_fields(data)
        if values is None:
            super().__init__(**data)
            return
        # the instance state pydantic's own model_construct sets, through the slots' descriptors
        _SET_DICT(self, values)
        _SET_FIELDS_SET(self, set(data))
        _SET_EXTRA(self, None)
        _SET_PRIVATE(self, None)

    @model_validator(mode="after")
    def _consistent(self) -> OrderRequest:
        problem = _inconsistency(self.type, self.time_in_force, self.qty, self.notional, self.limit_price,
                                 self.stop_price, self.extended_hours)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def is_buy(self) -> bool:
        return self.side == "buy"

    def to_wire(self, client_order_id: str | None = None) -> bytes:
        """JSON body with decimals as plain-notation strings and unset fields left out."""
        fields: dict[str, object] = {
            "symbol": self.symbol,
            "side": self.side,
            "type": self.type,
            "time_in_force": self.time_in_force,
        }
        # field by field rather than a getattr loop: this runs on every order, before the send
        if self.qty is not None:
            fields["qty"] = _plain_notation(self.qty)
        if self.notional is not None:
            fields["notional"] = _plain_notation(self.notional)
        if self.limit_price is not None:
            fields["limit_price"] = _plain_notation(self.limit_price)
        if self.stop_price is not None:
            fields["stop_price"] = _plain_notation(self.stop_price)
        if self.extended_hours:
            fields["extended_hours"] = True
        coid = client_order_id or self.client_order_id
        if coid is not None:
            fields["client_order_id"] = coid
        return _encode(fields)


def order_wire(
    symbol: str, side: str, type: str, time_in_force: str, qty: Decimal, limit_price: Decimal | None, client_order_id: str
) -> bytes:
    """What ``OrderRequest(...).to_wire()`` gives for a qty order (market or limit) made of values the
    caller has already validated, e.g. the live engine's risk-checked orders: the same bytes, without
    building and checking a model on the way to the socket."""
    fields: dict[str, object] = {"symbol": symbol, "side": side, "type": type, "time_in_force": time_in_force, "qty": _plain_notation(qty)}
    if limit_price is not None:
        fields["limit_price"] = _plain_notation(limit_price)
    fields["client_order_id"] = client_order_id
    return _encode(fields)


def _plain_notation(value: Decimal) -> str:
    """``format(value, "f")``: ``str`` already is plain notation unless it chose an exponent, and costs far less."""
    text = str(value)
    return format(value, "f") if "E" in text else text


def _inconsistency(
    type: str, time_in_force: str, qty: object, notional: object, limit_price: object, stop_price: object,
    extended_hours: bool,
) -> str | None:
    """Why these ``OrderRequest`` fields cannot go together, or None."""
    if (qty is None) == (notional is None):
        return "exactly one of qty or notional is required"
    needs_limit = type in ("limit", "stop_limit")
    needs_stop = type in ("stop", "stop_limit")
    if needs_limit != (limit_price is not None):
        return f"limit_price is {'required' if needs_limit else 'not allowed'} for {type} orders"
    if needs_stop != (stop_price is not None):
        return f"stop_price is {'required' if needs_stop else 'not allowed'} for {type} orders"
    if extended_hours and (type != "limit" or time_in_force != "day"):
        return "extended_hours orders must be limit orders with time_in_force day"
    return None


def _slot_setter(name: str) -> Callable[[object, object], None]:
    descriptor = vars(BaseModel).get(name)
    if descriptor is not None and hasattr(descriptor, "__set__"):
        return descriptor.__set__  # type: ignore[no-any-return]
    return lambda obj, value: object.__setattr__(obj, name, value)  # a pydantic without these slots


_SET_DICT = _slot_setter("__dict__")
_SET_FIELDS_SET = _slot_setter("__pydantic_fields_set__")
_SET_EXTRA = _slot_setter("__pydantic_extra__")
_SET_PRIVATE = _slot_setter("__pydantic_private__")
_ORDER_TYPES = frozenset(("market", "limit", "stop", "stop_limit"))
_TIMES_IN_FORCE = frozenset(("day", "gtc", "opg", "cls", "ioc", "fok"))
_ORDER_FIELDS = frozenset(OrderRequest.model_fields)


def _plain_decimal(value: object) -> Decimal | None:
    """A positive int or positive finite ``Decimal`` as stored; None for anything else."""
    kind = type(value)
    if kind is int:
        return Decimal(value) if value > 0 else None  # type: ignore[arg-type,operator]
    if kind is Decimal and value.is_finite() and value > 0:  # type: ignore[union-attr,operator]
        return value  # type: ignore[return-value]
    return None


def _plain_order_fields(data: dict[str, Any]) -> dict[str, object] | None:
    """``OrderRequest``'s stored fields when ``data`` is valid and already in final types, else None."""
    if not _ORDER_FIELDS.issuperset(data):
        return None
    get = data.get
    symbol = get("symbol")
    side = get("side")
    kind = get("type", "market")
    tif = get("time_in_force", "day")
    extended_hours = get("extended_hours", False)
    coid = get("client_order_id")
    if not (
        type(symbol) is str and 0 < len(symbol) <= 32  # type: ignore[arg-type]
        and type(side) is str and (side == "buy" or side == "sell")
        and type(kind) is str and kind in _ORDER_TYPES
        and type(tif) is str and tif in _TIMES_IN_FORCE
        and type(extended_hours) is bool
        and (coid is None or (type(coid) is str and 0 < len(coid) <= 128))
    ):
        return None
    qty = get("qty")
    notional = get("notional")
    limit_price = get("limit_price")
    stop_price = get("stop_price")
    if qty is not None and (qty := _plain_decimal(qty)) is None:
        return None
    if notional is not None and (notional := _plain_decimal(notional)) is None:
        return None
    if limit_price is not None and (limit_price := _plain_decimal(limit_price)) is None:
        return None
    if stop_price is not None and (stop_price := _plain_decimal(stop_price)) is None:
        return None
    if _inconsistency(kind, tif, qty, notional, limit_price, stop_price, extended_hours) is not None:  # type: ignore[arg-type]
        return None
    return {
        "symbol": symbol, "side": side, "type": kind, "time_in_force": tif, "qty": qty, "notional": notional,
        "limit_price": limit_price, "stop_price": stop_price, "extended_hours": extended_hours, "client_order_id": coid,
    }


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Order(_Response):
    """Alpaca's order object."""

    id: str
    client_order_id: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    expired_at: datetime | None = None
    expires_at: datetime | None = None
    canceled_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    asset_id: str | None = None
    symbol: str | None = None
    asset_class: str | None = None
    notional: Decimal | None = None
    qty: Decimal | None = None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    order_class: str | None = None
    order_type: str | None = None
    type: str | None = None
    side: str | None = None
    time_in_force: str | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    status: str
    extended_hours: bool = False
    legs: list[Order] | None = None
    trail_percent: Decimal | None = None
    trail_price: Decimal | None = None
    hwm: Decimal | None = None
    position_intent: str | None = None

    @field_validator("filled_qty", mode="before")
    @classmethod
    def _null_is_zero(cls, value: object) -> object:
        return Decimal(0) if value is None or value == "" else value

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def remaining_qty(self) -> Decimal:
        return (self.qty or Decimal(0)) - self.filled_qty


class Position(_Response):
    """Alpaca's position object."""

    asset_id: str | None = None
    symbol: str
    exchange: str | None = None
    asset_class: str | None = None
    asset_marginable: bool | None = None
    qty: Decimal
    qty_available: Decimal | None = None
    avg_entry_price: Decimal
    side: Literal["long", "short"]
    market_value: Decimal | None = None
    cost_basis: Decimal
    unrealized_pl: Decimal | None = None
    unrealized_plpc: Decimal | None = None
    unrealized_intraday_pl: Decimal | None = None
    unrealized_intraday_plpc: Decimal | None = None
    current_price: Decimal | None = None
    lastday_price: Decimal | None = None
    change_today: Decimal | None = None


class Account(_Response):
    """Alpaca's account object (the fields the engine uses; the rest are ignored)."""

    id: str
    account_number: str | None = None
    status: str
    currency: str | None = None
    cash: Decimal
    buying_power: Decimal
    regt_buying_power: Decimal | None = None
    daytrading_buying_power: Decimal | None = None
    non_marginable_buying_power: Decimal | None = None
    equity: Decimal | None = None
    last_equity: Decimal | None = None
    portfolio_value: Decimal | None = None
    long_market_value: Decimal | None = None
    short_market_value: Decimal | None = None
    initial_margin: Decimal | None = None
    maintenance_margin: Decimal | None = None
    multiplier: Decimal | None = None
    pattern_day_trader: bool | None = None
    trading_blocked: bool | None = None
    account_blocked: bool | None = None
    shorting_enabled: bool | None = None
    daytrade_count: int | None = None
    created_at: datetime | None = None


class CancelResult(_Response):
    """One entry of the 207 multi-status answer to ``DELETE /v2/orders``."""

    id: str
    status: int
    body: dict[str, Any] | None = None


class ApiErrorBody(_Response):
    """Alpaca's error body."""

    code: int | None = None
    message: str = ""


class TradeUpdate(_Response):
    """The ``data`` of one ``trade_updates`` stream message."""

    event: str
    execution_id: str | None = None
    order: Order
    timestamp: datetime | None = None
    position_qty: Decimal | None = None
    price: Decimal | None = None
    qty: Decimal | None = None
