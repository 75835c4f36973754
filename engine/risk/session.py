"""The trading-day boundary: when the daily P&L (and so the daily loss limit) starts again.

A session starts every day at a wall-clock time in a named time zone (``"00:00"`` New York by
default), so the boundary follows daylight saving. Timestamps are int64 ns since the Unix epoch, as
everywhere in the engine. This runs in Python, once per boundary, never per event.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import InputError

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_NS = 1_000_000_000


class SessionClock:
    """Computes session starts and the next boundary for timestamps in ns."""

    __slots__ = ("reset_time", "timezone", "_tz", "_time")

    def __init__(self, reset_time: str = "00:00", timezone: str = "America/New_York") -> None:
        match = _HHMM.match(reset_time)
        if not match:
            raise InputError(f"session reset time must be HH:MM (24 h), got {reset_time!r}")
        try:
            self._tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"unknown time zone for the session boundary: {timezone!r}") from None
        self.reset_time = reset_time
        self.timezone = timezone
        self._time = dt.time(int(match.group(1)), int(match.group(2)))

    def session_start_ns(self, ts_ns: int) -> int:
        """The boundary at or before ``ts_ns``: the start of the session that ``ts_ns`` belongs to."""
        local = dt.datetime.fromtimestamp(ts_ns / _NS, tz=self._tz)
        start = self._at(local.date())
        if start > local:
            start = self._at(local.date() - dt.timedelta(days=1))
        return _to_ns(start)

    def next_boundary_ns(self, ts_ns: int) -> int:
        """The first boundary strictly after ``ts_ns``."""
        local = dt.datetime.fromtimestamp(ts_ns / _NS, tz=self._tz)
        day = local.date()
        while True:
            candidate = self._at(day)
            if _to_ns(candidate) > ts_ns:
                return _to_ns(candidate)
            day += dt.timedelta(days=1)

    def _at(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, self._time, tzinfo=self._tz)

    def __repr__(self) -> str:
        return f"SessionClock(reset_time={self.reset_time!r}, timezone={self.timezone!r})"


def _to_ns(when: dt.datetime) -> int:
    # integer arithmetic: float seconds would lose the last ns digits at today's epoch values
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1_000
