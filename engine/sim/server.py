"""``tickforge sim``: the embedded exchange and paper broker served together on localhost.

``SimStack`` starts one seeded ``SyntheticMarket``, the Alpaca-protocol ``MarketDataServer`` over it
and the ``PaperBroker`` filling against the same market, so quotes and fills agree. The live engine
uses it when no credentials are configured; ``tickforge sim`` serves it until Ctrl-C for other
clients (an Alpaca SDK, ``tickforge run`` in another terminal, a notebook).

Lock-step: with ``lockstep_frame_messages`` set, the exchange sends nothing until the consumer calls
``grant()``; each grant releases exactly one frame of that many messages, stamped with the market's
synthetic clock (not wall time). A consumer that grants the next frame only after it has settled
the previous one gets the same messages, the same fills and the same P&L for the same seed on every
run, however fast or slow the machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from engine.config import SimConfig, TickforgeConfig
from engine.errors import InputError
from engine.sim.broker import PaperBroker
from engine.sim.exchange import MarketDataServer
from engine.sim.market import SyntheticMarket, default_symbols

log = logging.getLogger("tickforge.sim")

#: lock-step producer period: the exchange checks for a grant this often
LOCKSTEP_TICK_S = 0.0005


class LockstepFeed:
    """A feed source that hands the exchange messages only as far as the consumer has granted."""

    def __init__(self, market: SyntheticMarket, frame_messages: int) -> None:
        if frame_messages < 1:
            raise InputError(f"lock-step frame size must be >= 1 message, got {frame_messages}")
        self.market = market
        self.frame_messages = int(frame_messages)
        self.credit = 0
        self.frames_released = 0
        self.messages_released = 0
        self.released = asyncio.Event()  # set when the exchange took the granted messages

    def symbols(self) -> list[str]:
        return self.market.symbols()

    def snapshot(self, symbol: str) -> dict[str, Any] | None:
        return self.market.snapshot(symbol)

    def grant(self, n_messages: int | None = None) -> None:
        """Allow the next frame (``frame_messages`` unless given)."""
        self.credit = self.frame_messages if n_messages is None else int(n_messages)
        self.released.clear()

    def step(self, n: int, now_ns: int | None = None) -> list[dict[str, Any]]:
        take = min(n, self.credit)
        if take <= 0:
            return []
        self.credit -= take
        msgs = self.market.step(take, None)  # synthetic clock: timestamps do not depend on wall time
        self.frames_released += 1
        self.messages_released += len(msgs)
        self.released.set()
        return msgs


class SimStack:
    """Synthetic market + exchange + paper broker on localhost, started and stopped together."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        symbols: Sequence[str] | None = None,
        lockstep_frame_messages: int | None = None,
        max_frame_messages: int = 1000,
        source: Any = None,
    ) -> None:
        """``source``: serve this feed (e.g. a ``MessageLoop`` for benchmarks) instead of the market's
        own messages; the broker still fills against the market."""
        self.config = config or SimConfig()
        names = list(symbols) if symbols else default_symbols(self.config.n_symbols)
        self.market = SyntheticMarket(names, seed=self.config.seed)
        self.lockstep: LockstepFeed | None = None
        if lockstep_frame_messages is not None:
            self.lockstep = LockstepFeed(self.market, lockstep_frame_messages)
            self.exchange = MarketDataServer(
                self.lockstep, self.config, tick_s=LOCKSTEP_TICK_S, wall_clock=False,
                max_frame_messages=max(max_frame_messages, lockstep_frame_messages),
            )
            self.exchange.messages_per_s = math.inf  # the grant, not a rate, paces the feed
        else:
            self.exchange = MarketDataServer(source or self.market, self.config, max_frame_messages=max_frame_messages)
        self.broker = PaperBroker(self.market, self.config)
        self.feed_base_url = ""
        self.trading_url = ""

    @property
    def symbols(self) -> list[str]:
        return self.market.symbols()

    @property
    def feed_url(self) -> str:
        """The stocks stream (``/v2/iex``) of the embedded exchange."""
        return self.exchange.url_for("iex")

    async def start(self) -> SimStack:
        self.feed_base_url = await self.exchange.start()
        try:
            self.trading_url = await self.broker.start()
        except BaseException:
            await self.exchange.stop()
            raise
        return self

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.exchange.stop()
        with contextlib.suppress(Exception):
            await self.broker.stop()

    async def __aenter__(self) -> SimStack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def grant(self) -> None:
        if self.lockstep is None:
            raise RuntimeError("the stack is not in lock-step mode")
        self.lockstep.grant()


# --- the ``tickforge sim`` command ------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file (the [sim] section is used)")
    parser.add_argument("--seed", type=int, help="market seed (default: sim.seed)")
    parser.add_argument("--symbols", type=int, metavar="N", help="number of synthetic stock symbols (default: sim.n_symbols)")
    parser.add_argument("--rate", type=float, metavar="MSG_PER_S", help="market data messages per second (default: sim.messages_per_s)")
    parser.add_argument("--market-port", type=int, help="exchange port (default: sim.market_port; 0 picks a free one)")
    parser.add_argument("--broker-port", type=int, help="broker port (default: sim.broker_port; 0 picks a free one)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: until Ctrl-C)")


def sim_config_from_args(args: argparse.Namespace) -> SimConfig:
    base = TickforgeConfig.load(getattr(args, "config", None)).sim
    updates = {
        key: value
        for key, value in (
            ("seed", getattr(args, "seed", None)),
            ("n_symbols", getattr(args, "symbols", None)),
            ("messages_per_s", getattr(args, "rate", None)),
            ("market_port", getattr(args, "market_port", None)),
            ("broker_port", getattr(args, "broker_port", None)),
        )
        if value is not None
    }
    if not updates:
        return base
    try:
        return SimConfig(**{**base.model_dump(), **updates})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False, include_url=False))
        raise InputError(f"bad sim option: {problems}") from None


def describe(stack: SimStack) -> str:
    """What a client needs to connect; the secret itself is never printed."""
    cfg = stack.config
    return "\n".join(
        [
            f"market data   {stack.feed_url}   (crypto: {stack.exchange.url_for('crypto')})",
            f"trading REST  {stack.trading_url}",
            f"trade_updates {stack.broker.stream_url}",
            f"key id        {cfg.key_id.get_secret_value()}",
            "secret        sim.secret_key in your config file or TICKFORGE_SIM__SECRET_KEY"
            " (unset: the built-in default in engine/config.py SimConfig)",
            f"universe      {len(stack.symbols)} symbols, seed {cfg.seed}, {cfg.messages_per_s:,.0f} messages/s",
        ]
    )


async def serve(config: SimConfig, duration_s: float | None = None) -> dict[str, int]:
    """Serve until SIGINT/SIGTERM or ``duration_s``; returns the exchange and broker counters."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with SimStack(config) as stack:
            print(describe(stack), flush=True)
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration_s)
            ex = stack.exchange.stats
            counters = {
                "seconds": int(time.monotonic() - started),
                "connections": ex.connections_accepted,
                "messages_sent": ex.messages_sent,
                "orders": stack.broker.stats["orders"],
                "fills": stack.broker.stats["fills"],
            }
            print("sim stopped: " + ", ".join(f"{k}={v:,}" for k, v in counters.items()), flush=True)
            return counters
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    config = sim_config_from_args(args)
    duration = getattr(args, "duration", None)
    if duration is not None and duration <= 0:
        raise InputError("--duration must be positive")
    asyncio.run(serve(config, duration))
    return 0
