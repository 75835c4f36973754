"""Execution: routes orders to Alpaca's Trading API v2 (or the embedded paper broker) exactly once.

``AlpacaRestClient`` speaks the REST API (rate limited, per-phase timeouts); ``OrderRouter`` adds
pre-trade checks, the slippage guard and idempotent submits; ``TwapExecutor`` slices a parent order;
``TradeUpdatesStream`` consumes ``trade_updates`` and reports each fill exactly once.
"""

from engine.execution.client import AlpacaRestClient
from engine.execution.errors import (
    ApiError,
    DuplicateClientOrderId,
    ExecutionError,
    Forbidden,
    NotFound,
    RateLimited,
    RetryExhausted,
    ServerError,
    SlippageRejected,
    SubmitFailed,
    Unauthorized,
    UnknownOrderOutcome,
    Unprocessable,
)
from engine.execution.models import Account, CancelResult, Order, OrderRequest, Position, TradeUpdate
from engine.execution.order_state import OrderRecord, OrderStateTable
from engine.execution.ratelimit import RateLimiter
from engine.execution.retry import RetryPolicy, is_retryable
from engine.execution.router import ClientOrderIds, OrderRouter
from engine.execution.slippage import SlippageGuard
from engine.execution.trade_updates import StreamAuthError, TradeUpdatesStream
from engine.execution.twap import TwapExecutor, TwapResult, TwapSlice, plan_slices

__all__ = [
    "Account",
    "AlpacaRestClient",
    "ApiError",
    "CancelResult",
    "ClientOrderIds",
    "DuplicateClientOrderId",
    "ExecutionError",
    "Forbidden",
    "NotFound",
    "Order",
    "OrderRecord",
    "OrderRequest",
    "OrderRouter",
    "OrderStateTable",
    "Position",
    "RateLimited",
    "RateLimiter",
    "RetryExhausted",
    "RetryPolicy",
    "ServerError",
    "SlippageGuard",
    "SlippageRejected",
    "StreamAuthError",
    "SubmitFailed",
    "TradeUpdate",
    "TradeUpdatesStream",
    "TwapExecutor",
    "TwapResult",
    "TwapSlice",
    "Unauthorized",
    "UnknownOrderOutcome",
    "Unprocessable",
    "is_retryable",
    "plan_slices",
]
