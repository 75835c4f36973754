"""Test kit: small helpers shared by the tests (no mocks of our own code)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable


async def eventually(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Wait until ``cond()`` is true, or fail after ``timeout`` seconds (instead of sleeping blindly)."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(cond, '__name__', cond)}")
        await asyncio.sleep(interval)


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Synchronous ``eventually``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(cond, '__name__', cond)}")
        time.sleep(interval)


def free_port() -> int:
    """A currently free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
