"""Terminal views of a live run (rich): the refreshing dashboard and the end-of-run summary.

Both draw the same picture from the same inputs: the engine's ``LiveStats``, one ``SymbolRow`` per
symbol (book top, position, P&L) and the latency summary. Rendering happens a few times a second on
the event loop, so it only formats numbers that already exist.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.metrics import LiveStats, SymbolRow


@dataclass(frozen=True)
class RunView:
    """Everything one frame of the dashboard (or the summary) shows."""

    title: str
    elapsed_s: float
    stats: LiveStats
    rows: list[SymbolRow]
    latency: dict[str, dict[str, float]]


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.1f}"


def _money(x: float) -> Text:
    if not math.isfinite(x):
        return Text("-")
    return Text(f"{x:,.2f}", style="green" if x > 0 else "red" if x < 0 else "")


def _price(x: float) -> str:
    return f"{x:,.4f}".rstrip("0").rstrip(".") if x > 0 and math.isfinite(x) else "-"


def counters_table(view: RunView) -> Table:
    s = view.stats
    t = Table(title="activity", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("elapsed", f"{view.elapsed_s:,.1f} s")
    t.add_row("trading state", s.trading_state + (f" ({s.halt_reason})" if s.halt_reason else ""))
    t.add_row("messages", f"{sum(s.messages.values()):,}  " + " ".join(f"{k}={v:,}" for k, v in sorted(s.messages.items())))
    t.add_row("frames", f"{s.frames:,}")
    t.add_row("drops", f"{sum(s.drops.values()):,}  " + " ".join(f"{k}={v}" for k, v in sorted(s.drops.items())))
    t.add_row("reconnects", str(s.reconnects))
    t.add_row("orders", f"{sum(s.orders.values()):,}  " + " ".join(f"{k}={v}" for k, v in sorted(s.orders.items())))
    t.add_row("acked / rejected / unknown", f"{s.orders_acked} / {s.orders_rejected} / {s.orders_unknown}")
    t.add_row("cancels", str(s.cancels))
    t.add_row("fills", f"{s.fills:,} ({s.filled_qty:,.0f} units)")
    t.add_row("bar closes / cross-sections", f"{s.bar_closes} / {s.cross_section_steps}")
    t.add_row("strategy errors", str(s.strategy_errors))
    return t


def denials_table(view: RunView) -> Table:
    t = Table(title="risk denials")
    t.add_column("reason")
    t.add_column("count", justify="right")
    for reason, n in sorted(view.stats.denials.items(), key=lambda kv: -kv[1]):
        t.add_row(reason, f"{n:,}")
    if not view.stats.denials:
        t.add_row("none", "0")
    return t


def symbols_table(view: RunView, limit: int = 20) -> Table:
    t = Table(title="book top, positions and P&L")
    for name, justify in (("symbol", "left"), ("bid", "right"), ("ask", "right"), ("position", "right"),
                          ("avg price", "right"), ("realized", "right"), ("unrealized", "right"), ("total", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows = sorted(view.rows, key=lambda r: (-abs(r.position), -abs(r.realized_pnl), r.symbol))
    for r in rows[:limit]:
        t.add_row(
            r.symbol, _price(r.best_bid_price), _price(r.best_ask_price), f"{r.position:,.0f}",
            _price(r.avg_entry_price), _money(r.realized_pnl), _money(r.unrealized_pnl),
            _money(r.realized_pnl + r.unrealized_pnl),
        )
    realized = sum(r.realized_pnl for r in view.rows)
    unrealized = sum(r.unrealized_pnl for r in view.rows)
    t.add_row(Text("all", style="bold"), "", "", "", "", _money(realized), _money(unrealized), _money(realized + unrealized))
    return t


def latency_table(view: RunView) -> Table:
    t = Table(title="latency (us)")
    for name in ("stage", "count", "p50", "p99", "max"):
        t.add_column(name, justify="left" if name == "stage" else "right")
    for stage, s in view.latency.items():
        t.add_row(stage, f"{int(s['count']):,}", _us(s["p50_ns"]), _us(s["p99_ns"]), _us(s["max_ns"]))
    return t


def render(view: RunView) -> Group:
    """The whole picture as one renderable."""
    return Group(Text(view.title, style="bold"), counters_table(view), denials_table(view), symbols_table(view), latency_table(view))


def print_summary(view: RunView, console: Console | None = None) -> None:
    (console or Console()).print(render(view))


class Dashboard:
    """A rich ``Live`` display refreshed from ``snapshot()`` until ``stop`` is set."""

    def __init__(self, snapshot: Callable[[], RunView], refresh_per_s: float = 4.0, console: Console | None = None) -> None:
        self.snapshot = snapshot
        self.refresh_s = 1.0 / refresh_per_s
        self.console = console or Console()

    async def run(self, stop: asyncio.Event) -> None:
        with Live(render(self.snapshot()), console=self.console, auto_refresh=False, transient=True) as live:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.refresh_s)
                except TimeoutError:
                    pass
                live.update(render(self.snapshot()), refresh=True)
