"""Alpaca Trading API v2 REST client: one ``httpx.AsyncClient``, rate limited, errors mapped to ``ApiError``.

The client does one request per call and never retries by itself: whether a retry is safe depends on
the call (an order submit is not idempotent without its ``client_order_id`` check), so the router and
``RetryPolicy`` decide. Credentials go into the two Alpaca headers and nowhere else: not the repr, not
a log line, not an exception.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr, TypeAdapter

from engine.config import ExecutionConfig, TickforgeConfig
from engine.errors import TickforgeError
from engine.execution.errors import ApiError, api_error
from engine.execution.lane import OrderLane, SentRequest
from engine.execution.models import Account, ApiErrorBody, CancelResult, Order, OrderRequest, Position
from engine.execution.ratelimit import RateLimiter

log = logging.getLogger(__name__)

_ORDERS = TypeAdapter(list[Order])
_POSITIONS = TypeAdapter(list[Position])
_CANCELS = TypeAdapter(list[CancelResult])


class AlpacaRestClient:
    """The REST endpoints the engine needs, with connection reuse and explicit per-phase timeouts."""

    def __init__(
        self,
        base_url: str,
        key_id: SecretStr | str,
        secret_key: SecretStr | str,
        config: ExecutionConfig | None = None,
        *,
        limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or ExecutionConfig()
        self.base_url = base_url.rstrip("/")
        key = key_id.get_secret_value() if isinstance(key_id, SecretStr) else key_id
        secret = secret_key.get_secret_value() if isinstance(secret_key, SecretStr) else secret_key
        if not key or not secret:
            raise TickforgeError("trading API credentials are empty")
        self.limiter = limiter or RateLimiter(self.config.rate_limit_per_min)
        cfg = self.config
        timeout = httpx.Timeout(
            connect=cfg.connect_timeout_s, read=cfg.read_timeout_s, write=cfg.write_timeout_s, pool=cfg.pool_timeout_s
        )
        self._headers = {
            "APCA-API-KEY-ID": key,
            "APCA-API-SECRET-KEY": secret,
            "Accept": "application/json",
        }
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=60.0),
            transport=transport,
            follow_redirects=False,  # a redirect on an order endpoint is a misconfiguration, not something to follow
        )
        self._orders_url = f"{self.base_url}/v2/orders"
        auth = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}
        self._lane = OrderLane(self.base_url, auth, cfg) if cfg.order_lane and transport is None else None

    @classmethod
    def from_config(cls, config: TickforgeConfig, *, sim_base_url: str | None = None) -> AlpacaRestClient:
        """Alpaca (paper or live) when credentials are configured, else the embedded broker at ``sim_base_url``."""
        alpaca = config.alpaca
        if alpaca.has_credentials:
            return cls(alpaca.base_trading_url, alpaca.key_id, alpaca.secret_key, config.execution)  # type: ignore[arg-type]
        if sim_base_url is None:
            raise TickforgeError("no Alpaca credentials configured and no embedded broker URL given")
        return cls(sim_base_url, config.sim.key_id, config.sim.secret_key, config.execution)

    def __repr__(self) -> str:
        return f"AlpacaRestClient(base_url={self.base_url!r})"

    @property
    def stream_url(self) -> str:
        """The trade_updates WebSocket on the same host: ``wss://.../stream`` (``ws://`` for plain HTTP)."""
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/stream"

    def stream_auth_message(self) -> str:
        """The trade_updates ``authenticate`` message (holds the secret: send it, never log it)."""
        return json.dumps(
            {
                "action": "authenticate",
                "data": {"key_id": self._headers["APCA-API-KEY-ID"], "secret_key": self._headers["APCA-API-SECRET-KEY"]},
            }
        )

    async def aclose(self) -> None:
        if self._lane is not None:
            await self._lane.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> AlpacaRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- plumbing --------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One rate-limited request; an error status raises the matching ``ApiError``."""
        await self.limiter.acquire()
        request = self._http.build_request(
            method,
            url,
            params=params,
            content=content,
            headers=self._json_headers if content is not None else self._headers,
            extensions=extensions,
        )
        response = await self._http.send(request)
        self.limiter.observe(response.status_code, response.headers)
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    # --- orders ----------------------------------------------------------------------------------

    async def connect_ahead(self) -> None:
        """Open the order lane's first connection now (see ``OrderLane.connect_ahead``); no-op without a lane."""
        if self._lane is not None:
            await self._lane.connect_ahead()

    def start_order(self, body: bytes, *, on_sent: Callable[[int], None] | None = None) -> SentRequest | None:
        """Write ``POST /v2/orders`` before returning, with no await, when the order lane has a pooled
        connection free and the rate limiter a token; None otherwise. Pass the result to ``submit_order``."""
        lane = self._lane
        if lane is None or not lane.ready or not self.limiter.try_acquire():
            return None
        sent = lane.send_now("POST", "/v2/orders", body, on_sent=on_sent)
        if sent is None:  # every pooled connection had been closed by the server
            self.limiter.give_back()
        return sent

    async def submit_order(
        self,
        request: OrderRequest | bytes,
        *,
        extensions: dict[str, Any] | None = None,
        on_sent: Callable[[int], None] | None = None,
        on_accepted: Callable[[int], None] | None = None,
        started: SentRequest | None = None,
    ) -> Order:
        """``POST /v2/orders``. Pass pre-serialised bytes to keep serialisation out of the send path.

        Goes over the order lane when it is enabled (``on_sent(perf_counter_ns)`` then fires once the
        request is on the socket), else through httpx (``on_sent`` fires as the request is handed to
        it; ``extensions`` reach httpx, e.g. a trace hook for the socket write).
        ``started`` is this request already written by ``start_order``. ``on_accepted(time_ns)`` gets
        the moment a success answer arrived, before its body is parsed.
        """
        body = request if isinstance(request, bytes) else request.to_wire()
        if self._lane is None:
            if on_sent is not None:
                on_sent(time.perf_counter_ns())
            response = await self.send("POST", self._orders_url, content=body, extensions=extensions)
            if on_accepted is not None:
                on_accepted(time.time_ns())
            return Order.model_validate_json(response.content)
        if started is not None:
            reply = await self._lane.finish(started)
        else:
            limiter = self.limiter
            if not limiter.try_acquire():  # a free token is the usual case: no coroutine for it
                await limiter.acquire()
            reply = await self._lane.request("POST", "/v2/orders", body, on_sent=on_sent)
        self.limiter.observe(reply.status, reply.headers)
        if reply.status >= 400:
            raise _error_from_parts(reply.status, reply.reason, reply.headers, reply.content)
        if on_accepted is not None:
            on_accepted(reply.received_ns)
        return Order.model_validate_json(reply.content)

    async def get_order(self, order_id: str) -> Order:
        response = await self.send("GET", f"{self._orders_url}/{order_id}")
        return Order.model_validate_json(response.content)

    async def get_order_by_client_id(self, client_order_id: str) -> Order:
        response = await self.send(
            "GET", f"{self.base_url}/v2/orders:by_client_order_id", params={"client_order_id": client_order_id}
        )
        return Order.model_validate_json(response.content)

    async def list_orders(
        self,
        status: str = "open",
        *,
        limit: int | None = None,
        after: datetime | str | None = None,
        until: datetime | str | None = None,
        direction: str | None = None,
        symbols: list[str] | None = None,
    ) -> list[Order]:
        """``GET /v2/orders`` (``status`` open, closed or all)."""
        params: dict[str, Any] = {"status": status}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after.isoformat() if isinstance(after, datetime) else after
        if until is not None:
            params["until"] = until.isoformat() if isinstance(until, datetime) else until
        if direction is not None:
            params["direction"] = direction
        if symbols:
            params["symbols"] = ",".join(symbols)
        response = await self.send("GET", self._orders_url, params=params)
        return _ORDERS.validate_json(response.content)

    async def cancel_order(self, order_id: str) -> None:
        """``DELETE /v2/orders/{id}``: 204 on success; ``NotFound`` or ``Unprocessable`` (not cancelable)."""
        await self.send("DELETE", f"{self._orders_url}/{order_id}")

    async def cancel_all_orders(self) -> list[CancelResult]:
        """``DELETE /v2/orders``: one status per open order (HTTP 207 multi-status)."""
        response = await self.send("DELETE", self._orders_url)
        return _CANCELS.validate_json(response.content) if response.content else []

    # --- account ---------------------------------------------------------------------------------

    async def list_positions(self) -> list[Position]:
        response = await self.send("GET", f"{self.base_url}/v2/positions")
        return _POSITIONS.validate_json(response.content)

    async def get_position(self, symbol: str) -> Position:
        response = await self.send("GET", f"{self.base_url}/v2/positions/{symbol.replace('/', '')}")
        return Position.model_validate_json(response.content)

    async def get_account(self) -> Account:
        response = await self.send("GET", f"{self.base_url}/v2/account")
        return Account.model_validate_json(response.content)


def _error_from(response: httpx.Response) -> ApiError:
    return _error_from_parts(response.status_code, response.reason_phrase, response.headers, response.content)


def _error_from_parts(status: int, reason: str, headers: Mapping[str, str], content: bytes) -> ApiError:
    code: int | None = None
    message = reason or "error"
    if content:
        try:
            body = ApiErrorBody.model_validate_json(content)
            code, message = body.code, body.message or message
        except ValueError:
            message = content[:200].decode("utf-8", "replace")
    retry_after = headers.get("retry-after")
    try:
        retry_after_s = float(retry_after) if retry_after is not None else None
    except ValueError:
        retry_after_s = None
    return api_error(status, code, message, retry_after_s)
