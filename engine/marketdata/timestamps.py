"""Exact timestamp conversion for the wire formats: RFC 3339 text and msgpack Timestamp (ext -1).

Alpaca sends up to nine fractional digits ("2022-05-26T09:40:16.812456789Z"); ``datetime`` keeps
only six, so parsing is done here, in numba over a whole batch at once: the decoder joins a frame's
timestamp strings into one buffer and gets back int64 nanoseconds plus a validity flag per item.
Per-item Python helpers exist for the non-hot paths (the exchange, tests, the recorder).
"""

from __future__ import annotations

import struct
import time

import numpy as np
from numba import njit

NS_PER_S = 1_000_000_000
# int64 nanoseconds cover 1677-09-21 .. 2262-04-11; stay strictly inside that span.
_MIN_YEAR, _MAX_YEAR = 1678, 2261


@njit(cache=True, inline="always")
def _days_from_civil(y: int, m: int, d: int) -> int:
    # Howard Hinnant's proleptic Gregorian day count, exact for every date in range.
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True, inline="always")
def _digits(buf, start: int, count: int) -> int:
    # value of `count` ASCII digits at `start`, or -1 when any is not a digit
    v = 0
    for k in range(start, start + count):
        c = buf[k] - 48
        if c < 0 or c > 9:
            return -1
        v = v * 10 + c
    return v


@njit(cache=True)
def _parse_one(buf, start: int, end: int):
    """Parse buf[start:end] as an RFC 3339 date-time; returns (ns, ok)."""
    if end - start < 20:
        return 0, False
    year = _digits(buf, start, 4)
    month = _digits(buf, start + 5, 2)
    day = _digits(buf, start + 8, 2)
    hour = _digits(buf, start + 11, 2)
    minute = _digits(buf, start + 14, 2)
    second = _digits(buf, start + 17, 2)
    if year < _MIN_YEAR or year > _MAX_YEAR or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23:
        return 0, False
    if minute < 0 or minute > 59 or second < 0 or second > 60:  # 60: a leap second, allowed by RFC 3339
        return 0, False
    if buf[start + 4] != 45 or buf[start + 7] != 45 or buf[start + 13] != 58 or buf[start + 16] != 58:
        return 0, False
    sep = buf[start + 10]
    if sep != 84 and sep != 116 and sep != 32:  # 'T', 't', ' '
        return 0, False
    mdays = 31
    if month == 4 or month == 6 or month == 9 or month == 11:
        mdays = 30
    elif month == 2:
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        mdays = 29 if leap else 28
    if day > mdays:
        return 0, False
    pos = start + 19
    frac = 0
    if buf[pos] == 46:  # '.' then at least one digit; digits past the ninth are truncated
        pos += 1
        n_digits = 0
        while pos < end and 48 <= buf[pos] <= 57:
            if n_digits < 9:
                frac = frac * 10 + (buf[pos] - 48)
            n_digits += 1
            pos += 1
        if n_digits == 0:
            return 0, False
        for _ in range(n_digits, 9):
            frac *= 10
    if pos >= end:
        return 0, False
    offset_s = 0
    zone = buf[pos]
    if zone == 90 or zone == 122:  # 'Z' / 'z'
        pos += 1
    elif zone == 43 or zone == 45:  # '+HH:MM' / '-HH:MM'
        if end - pos != 6 or buf[pos + 3] != 58:
            return 0, False
        oh = _digits(buf, pos + 1, 2)
        om = _digits(buf, pos + 4, 2)
        if oh < 0 or oh > 23 or om < 0 or om > 59:
            return 0, False
        offset_s = oh * 3600 + om * 60
        if zone == 45:
            offset_s = -offset_s
        pos += 6
    else:
        return 0, False
    if pos != end:
        return 0, False
    secs = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s
    return secs * 1_000_000_000 + frac, True


@njit(cache=True)
def parse_rfc3339_joined(buf, n: int, out_ns, out_ok) -> int:
    """Parse ``n`` newline-separated timestamps from ``buf`` (uint8) into ``out_ns``/``out_ok``.

    Returns the number of valid items. A missing item (fewer separators than ``n``) is invalid.
    """
    size = buf.shape[0]
    pos = 0
    good = 0
    # Messages of one frame mostly share the same second: when the date-time part (19 bytes) and
    # the shape of the fraction repeat, only the fraction differs, so reuse the previous parse.
    prev_start = -1
    prev_ns_s = 0
    for k in range(n):
        end = pos
        while end < size and buf[end] != 10:
            end += 1
        if pos > size:
            out_ns[k] = 0
            out_ok[k] = False
            continue
        reused = False
        if prev_start >= 0 and end - pos >= 21 and buf[end - 1] == 90 and buf[pos + 19] == 46:
            same = True
            for j in range(19):
                if buf[pos + j] != buf[prev_start + j]:
                    same = False
                    break
            if same:
                frac = 0
                n_digits = 0
                q = pos + 20
                while q < end - 1:
                    c = buf[q] - 48
                    if c < 0 or c > 9:
                        break
                    if n_digits < 9:
                        frac = frac * 10 + c
                    n_digits += 1
                    q += 1
                if q == end - 1 and n_digits > 0:
                    for _ in range(n_digits, 9):
                        frac *= 10
                    out_ns[k] = prev_ns_s + frac
                    out_ok[k] = True
                    good += 1
                    reused = True
        if not reused:
            ns, ok = _parse_one(buf, pos, end)
            out_ns[k] = ns
            out_ok[k] = ok
            good += ok
            if ok and end - pos >= 21 and buf[end - 1] == 90 and buf[pos + 19] == 46:
                prev_start = pos
                prev_ns_s = ns - ns % 1_000_000_000
            else:
                prev_start = -1
        pos = end + 1
    return good


@njit(cache=True)
def parse_msgpack_timestamps(buf, lengths, codes, out_ns, out_ok) -> int:
    """Decode msgpack Timestamp payloads (ext type -1: 4, 8 or 12 bytes) laid end to end in ``buf``."""
    pos = 0
    good = 0
    max_s = (1 << 63) // 1_000_000_000 - 1
    for k in range(lengths.shape[0]):
        n = lengths[k]
        secs = 0
        nanos = 0
        ok = codes[k] == -1
        if ok and n == 4:
            for j in range(4):
                secs = (secs << 8) | buf[pos + j]
        elif ok and n == 8:
            v = np.uint64(0)
            for j in range(8):
                v = (v << np.uint64(8)) | np.uint64(buf[pos + j])
            nanos = np.int64(v >> np.uint64(34))
            secs = np.int64(v & np.uint64((1 << 34) - 1))
        elif ok and n == 12:
            for j in range(4):
                nanos = (nanos << 8) | buf[pos + j]
            u = np.uint64(0)
            for j in range(4, 12):
                u = (u << np.uint64(8)) | np.uint64(buf[pos + j])
            secs = np.int64(u)  # two's complement reinterpretation of the signed seconds
        else:
            ok = False
        if ok and (nanos >= 1_000_000_000 or secs > max_s or secs < -max_s):
            ok = False
        out_ns[k] = secs * 1_000_000_000 + nanos if ok else 0
        out_ok[k] = ok
        good += ok
        pos += n
    return good


def parse_rfc3339(text: str) -> int:
    """One RFC 3339 timestamp to int64 nanoseconds since the epoch; ``ValueError`` if invalid."""
    buf = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)
    out = np.zeros(1, np.int64)
    ok = np.zeros(1, np.bool_)
    if "\n" in text or not parse_rfc3339_joined(buf, 1, out, ok):
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    return int(out[0])


_second_prefix_cache: dict[int, str] = {}


def format_rfc3339(ts_ns: int) -> str:
    """int64 nanoseconds to Alpaca's text form, e.g. ``2022-05-26T09:40:16.812456789Z``.

    Trailing zeros of the fraction are trimmed as Alpaca does; whole seconds carry no fraction.
    """
    secs, nanos = divmod(int(ts_ns), NS_PER_S)
    prefix = _second_prefix_cache.get(secs)
    if prefix is None:
        if len(_second_prefix_cache) > 4096:
            _second_prefix_cache.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _second_prefix_cache[secs] = prefix
    if nanos == 0:
        return prefix + "Z"
    return f"{prefix}.{nanos:09d}".rstrip("0") + "Z"


def msgpack_timestamp_payload(ts_ns: int) -> bytes:
    """The payload of a msgpack Timestamp (ext -1) for ``ts_ns``, in the smallest form that fits."""
    secs, nanos = divmod(int(ts_ns), NS_PER_S)
    if secs >> 34 == 0:
        if nanos == 0 and secs >> 32 == 0:
            return struct.pack(">I", secs)
        return struct.pack(">Q", (nanos << 34) | secs)
    return struct.pack(">Iq", nanos, secs)
