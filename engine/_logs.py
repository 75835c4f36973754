"""Logging helpers that keep credentials out of log lines."""

from __future__ import annotations

import logging


class RedactAuthFrames(logging.Filter):
    """websockets logs every frame at DEBUG; a frame that authenticates carries a secret, so blank it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and any("authenticate" in str(arg) for arg in record.args):  # type: ignore[union-attr]
            record.msg, record.args = "%s", ("[authenticate frame redacted]",)
        return True


def wire_logger(name: str) -> logging.Logger:
    """The logger to hand to websockets for one connection type, with auth frames redacted."""
    logger = logging.getLogger(name + ".wire")
    if not any(isinstance(f, RedactAuthFrames) for f in logger.filters):
        logger.addFilter(RedactAuthFrames())
    return logger
