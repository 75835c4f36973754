"""Alpaca market-data protocol vocabulary: control messages, channel names and error codes.

Shared by the decoder, the stream client and the embedded exchange so all three speak the same
words. Control messages (``success``, ``subscription``, ``error``) are small frozen Python objects;
market data never takes this form (it becomes numpy event arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Channels a subscribe/unsubscribe action may name, per stream family.
STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections", "cancelErrors")
CRYPTO_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "orderbooks")
#: channels that a client subscribes to explicitly (corrections/cancelErrors follow trades on stocks)
SUBSCRIBABLE_STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")

# Error codes as documented by Alpaca for the market-data stream.
ERR_INVALID_SYNTAX = 400
ERR_NOT_AUTHENTICATED = 401
ERR_AUTH_FAILED = 402
ERR_ALREADY_AUTHENTICATED = 403
ERR_AUTH_TIMEOUT = 404
ERR_SYMBOL_LIMIT = 405
ERR_CONNECTION_LIMIT = 406
ERR_SLOW_CLIENT = 407
ERR_INSUFFICIENT_SUBSCRIPTION = 409
ERR_INVALID_SUBSCRIBE_ACTION = 410
ERR_INTERNAL = 500

ERROR_TEXT: dict[int, str] = {
    ERR_INVALID_SYNTAX: "invalid syntax",
    ERR_NOT_AUTHENTICATED: "not authenticated",
    ERR_AUTH_FAILED: "auth failed",
    ERR_ALREADY_AUTHENTICATED: "already authenticated",
    ERR_AUTH_TIMEOUT: "auth timeout",
    ERR_SYMBOL_LIMIT: "symbol limit exceeded",
    ERR_CONNECTION_LIMIT: "connection limit exceeded",
    ERR_SLOW_CLIENT: "slow client",
    ERR_INSUFFICIENT_SUBSCRIPTION: "insufficient subscription",
    ERR_INVALID_SUBSCRIBE_ACTION: "invalid subscribe action for this feed",
    ERR_INTERNAL: "internal error",
}

#: codes after which retrying cannot help: the configuration (credentials, plan, symbols) must change
FATAL_ERROR_CODES = frozenset(
    {ERR_AUTH_FAILED, ERR_SYMBOL_LIMIT, ERR_CONNECTION_LIMIT, ERR_INSUFFICIENT_SUBSCRIPTION, ERR_INVALID_SUBSCRIBE_ACTION}
)
#: codes that are reported but leave the connection usable (a request of ours was refused)
BENIGN_ERROR_CODES = frozenset({ERR_INVALID_SYNTAX, ERR_ALREADY_AUTHENTICATED})


@dataclass(frozen=True, slots=True)
class Success:
    """``{"T":"success","msg":...}``: ``connected`` on open, ``authenticated`` after auth."""

    msg: str


@dataclass(frozen=True, slots=True)
class Subscription:
    """``{"T":"subscription",...}``: the full current subscription, channel -> symbols."""

    channels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def symbols(self, channel: str) -> tuple[str, ...]:
        return self.channels.get(channel, ())


@dataclass(frozen=True, slots=True)
class StreamError:
    """``{"T":"error","code":N,"msg":...}``."""

    code: int
    msg: str

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_ERROR_CODES


ControlMessage = Success | Subscription | StreamError


def error_message(code: int) -> dict[str, object]:
    """The wire form of an error message with Alpaca's text for ``code``."""
    return {"T": "error", "code": code, "msg": ERROR_TEXT.get(code, "error")}
