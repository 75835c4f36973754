"""HTTP/1.1 head framing shared by the order lane (client side) and the paper broker (server side).

Both parse with llhttp (``httptools``) but find where a head ends themselves, so a head's size limit
is exact and no byte past the message is ever parsed; both accept bare-LF line ends as h11 did.
"""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


def head_end(data: bytes | bytearray, start: int) -> int:
    """Offset just past the first blank line at or after ``start`` (CRLF or bare LF line ends), or -1."""
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf + 2 if crlf >= 0 else len(data))
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


def crlf(head: bytes) -> bytes:
    """``head`` with bare LF line ends made CRLF: h11 took them in a head, llhttp takes only CRLF."""
    return head if head.count(b"\n") == head.count(b"\r\n") else _BARE_LF.sub(b"\r\n", head)
