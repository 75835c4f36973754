"""The embedded exchange and paper broker in a process of their own.

On the engine's event loop, the synthetic market's generation and the broker's order handling ran
between the engine's frames, so every order's answer waited behind them (milliseconds per ack). In
its own process the venue behaves like a real one: it shares nothing with the engine but loopback
sockets. ``tickforge run`` uses it in real time; lock-step sessions keep ``SimStack`` in the engine's
process, because the engine grants each frame directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from engine.config import SimConfig
from engine.errors import TickforgeError

#: how long the venue's process may take to import, bind its ports and answer
START_TIMEOUT_S = 60.0


def _serve(config: SimConfig, symbols: list[str] | None, reply: Connection, stop: Any) -> None:  # pragma: no cover - child process
    from engine.sim.server import SimStack  # noqa: PLC0415 - imported in the child

    parent = os.getppid()

    async def main() -> None:
        stack = SimStack(config, symbols=symbols)
        try:
            await stack.start()
        except Exception as exc:
            reply.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        gc.collect()
        gc.freeze()  # as the engine does: no full collection walks the start-up objects mid-run
        reply.send(("ready", stack.trading_url, stack.feed_url, stack.symbols))
        try:
            # until told to stop, or until the engine is gone without telling (killed): no orphan venue
            while not stop.is_set() and os.getppid() == parent:
                await asyncio.sleep(0.05)
        finally:
            await stack.stop()

    asyncio.run(main())


class SimProcess:
    """``SimStack``'s URLs and symbols, served from a child process (``start`` / ``stop``)."""

    def __init__(self, config: SimConfig, *, symbols: Sequence[str] | None = None) -> None:
        self.config = config
        self._symbols = list(symbols) if symbols else None
        self._context = multiprocessing.get_context("spawn")  # no fork of a running event loop
        self._stop = self._context.Event()
        self._process: Any = None
        self.trading_url = ""
        self.feed_url = ""
        self.symbols: list[str] = []

    async def start(self) -> SimProcess:
        receive, send = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=_serve, args=(self.config, self._symbols, send, self._stop), name="tickforge-sim", daemon=True
        )
        self._process.start()
        send.close()
        try:
            ready = await asyncio.to_thread(receive.poll, START_TIMEOUT_S)
            answer = receive.recv() if ready else ("error", f"no answer within {START_TIMEOUT_S:g} s")
        except EOFError:
            answer = ("error", f"the process exited with code {self._process.exitcode}")
        finally:
            receive.close()
        if answer[0] != "ready":
            await self.stop()
            raise TickforgeError(f"the embedded venue could not start: {answer[1]}")
        _, self.trading_url, self.feed_url, self.symbols = answer
        return self

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._stop.set()
        await asyncio.to_thread(process.join, 10.0)
        if process.is_alive():
            process.terminate()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(process.join, 5.0)
        self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()


__all__ = ["SimProcess"]
