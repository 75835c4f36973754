"""Errors of the execution layer: what went wrong with an order or a call to the trading API.

Every error here is a ``TickforgeError``: it carries a clear one-line message and never a credential.
HTTP errors keep Alpaca's status, numeric ``code`` and ``message`` so callers can branch on them.
"""

from __future__ import annotations

from engine.errors import TickforgeError


class ExecutionError(TickforgeError):
    """Base of every execution-layer failure."""


class ApiError(ExecutionError):
    """The trading API answered with an error status and an ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: int | None, message: str, *, retry_after_s: float | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        detail = f" ({code})" if code is not None else ""
        super().__init__(f"HTTP {status}{detail}: {message}")


class Unauthorized(ApiError):
    """401: credentials missing or not accepted."""


class Forbidden(ApiError):
    """403: e.g. insufficient buying power or wrong credentials."""


class NotFound(ApiError):
    """404: no such order, position or endpoint."""


class Unprocessable(ApiError):
    """422: invalid input, or the order cannot be cancelled in its current state."""


class DuplicateClientOrderId(Unprocessable):
    """422: an order with this ``client_order_id`` already exists."""


class RateLimited(ApiError):
    """429: over the account's request limit; ``retry_after_s`` says how long the server asked to wait."""


class ServerError(ApiError):
    """5xx: the server failed; for an order submit the outcome is unknown."""


def api_error(status: int, code: int | None, message: str, retry_after_s: float | None = None) -> ApiError:
    """The most specific ``ApiError`` subclass for a status (and, for 422, the message)."""
    if status == 401:
        cls: type[ApiError] = Unauthorized
    elif status == 403:
        cls = Forbidden
    elif status == 404:
        cls = NotFound
    elif status == 422:
        cls = DuplicateClientOrderId if "client_order_id must be unique" in message else Unprocessable
    elif status == 429:
        cls = RateLimited
    elif status >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(status, code, message, retry_after_s=retry_after_s)


class SlippageRejected(ExecutionError):
    """The slippage guard refused an order: its price is too far from the reference mid."""

    code = "SLIPPAGE_BAND"

    def __init__(self, symbol: str, deviation_bps: float, band_bps: float) -> None:
        self.symbol = symbol
        self.deviation_bps = deviation_bps
        self.band_bps = band_bps
        super().__init__(
            f"{symbol}: order price is {deviation_bps:.1f} bps from the reference mid, beyond the {band_bps:g} bps band"
        )


class SubmitFailed(ExecutionError):
    """An order was definitely not created: every attempt failed and no order exists under its id."""

    def __init__(self, client_order_id: str, attempts: int, last_error: BaseException | None) -> None:
        self.client_order_id = client_order_id
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(f"order {client_order_id} not created after {attempts} attempts: {_describe(last_error)}")


class UnknownOrderOutcome(ExecutionError):
    """Attempts ran out before the outcome could be resolved; reconcile by ``client_order_id`` later."""

    def __init__(self, client_order_id: str, attempts: int, last_error: BaseException | None) -> None:
        self.client_order_id = client_order_id
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(
            f"order {client_order_id}: outcome unknown after {attempts} attempts "
            f"(reconcile by client_order_id): {_describe(last_error)}"
        )


class RetryExhausted(ExecutionError):
    """A retryable call kept failing until the retry policy's attempts ran out."""

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(f"gave up after {attempts} attempts: {_describe(last_error)}")


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error recorded"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
