"""Logging helpers that keep credentials out of log lines."""

from __future__ import annotations

import logging


_AUTH_MARKERS = ("authenticate", '"action":"auth"', "secret")  # lower case; "secret" also catches APCA-API-SECRET-KEY


class RedactAuthFrames(logging.Filter):
    """websockets logs every frame at DEBUG; a frame that authenticates carries a secret, so blank it.

    Covers the market-data ``{"action":"auth","key","secret"}`` and the trading stream's
    ``{"action":"authenticate",...}`` frames and the secret header of a header-authenticated upgrade;
    msgpack frames are logged as byte counts only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and any(m in str(arg).lower() for arg in record.args for m in _AUTH_MARKERS):  # type: ignore[union-attr]
            record.msg, record.args = "%s", ("[authentication frame redacted]",)
        return True


def wire_logger(name: str) -> logging.Logger:
    """The logger to hand to websockets for one connection type, with auth frames redacted."""
    logger = logging.getLogger(name + ".wire")
    if not any(isinstance(f, RedactAuthFrames) for f in logger.filters):
        logger.addFilter(RedactAuthFrames())
    return logger
