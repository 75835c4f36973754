"""The ``tickforge halt`` command: engage a running engine's kill switch through its control endpoint.

The engine serves ``POST /halt`` on its metrics port (``tickforge run --metrics-port PORT``); this
command posts the reason there and prints the engine's answer. Exit 0 when the engine confirmed the
halt; exit 2 with one line when it is unreachable, refuses, or answers something that is not an engine.
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import urlsplit

from engine.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the engine's metrics/control endpoint, e.g. http://127.0.0.1:9100")
    parser.add_argument("--reason", default="operator halt (tickforge halt)", help="why trading is halted (shown in /status and the logs)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="how long to wait for the engine (default 5)")


def halt(url: str, reason: str, timeout: float = 5.0) -> dict[str, object]:
    """POST the kill switch to the engine at ``url``; the engine's JSON answer, or ``InputError``."""
    import httpx  # noqa: PLC0415 - keep `tickforge --help` light

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--url must look like http://127.0.0.1:PORT, not {url!r}")
    endpoint = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/halt"
    try:
        response = httpx.post(endpoint, content=reason.encode("utf-8"), timeout=timeout)
    except httpx.HTTPError as exc:  # refused, timed out, bad host: the engine is not there
        raise InputError(f"engine unreachable at {endpoint}: {type(exc).__name__}: {exc or 'no answer'}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise InputError(f"{endpoint} answered HTTP {response.status_code} without the engine's JSON; is that a tickforge engine?")
    if response.status_code != 200 or answer.get("state") != "HALTED":
        raise InputError(f"engine refused the halt (HTTP {response.status_code}): {answer.get('error', answer)}")
    return answer


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise InputError("--timeout must be > 0")
    answer = halt(args.url, args.reason, args.timeout)
    print(f"trading HALTED at {args.url}; the engine answered {json.dumps(answer)}")
    return 0


__all__ = ["add_arguments", "halt", "run"]
