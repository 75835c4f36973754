"""A trend signal: fast/slow moving-average crossover confirmed by RSI, traded with market orders at bar close.

Long when the fast SMA is above the slow one and RSI is not overbought; short (if allowed) when the
fast SMA is below and RSI is not oversold; otherwise the previous target stands. The position moves
toward its target by at most ``qty`` per bar. When the engine hands over the universe cross-section,
symbols whose beta to the benchmark is beyond ``max_abs_beta`` are taken flat (a market-neutral tilt).
"""

from __future__ import annotations

import math

import numpy as np

from engine.events import SIDE_BUY, SIDE_SELL
from engine.strategies.base import BarClose, Intent, OrderIntent, Strategy, StrategyContext


class MovingAverageRsi(Strategy):
    name = "ma_rsi"

    def __init__(
        self,
        fast: int = 5,
        slow: int = 20,
        rsi_window: int = 14,
        rsi_overbought: float = 70.0,
        rsi_oversold: float = 30.0,
        qty: float = 10.0,
        max_position: float = 50.0,
        allow_short: bool = True,
        max_abs_beta: float = math.inf,
    ) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")
        if rsi_window < 2 or not 0 <= rsi_oversold < rsi_overbought <= 100:
            raise ValueError("need rsi_window >= 2 and 0 <= rsi_oversold < rsi_overbought <= 100")
        if qty <= 0 or max_position <= 0:
            raise ValueError("qty and max_position must be positive")
        self.fast, self.slow, self.rsi_window = int(fast), int(slow), int(rsi_window)
        self.rsi_overbought, self.rsi_oversold = float(rsi_overbought), float(rsi_oversold)
        self.qty, self.max_position = float(qty), float(max_position)
        self.allow_short = bool(allow_short)
        self.max_abs_beta = float(max_abs_beta)
        self.feature_windows = tuple(sorted({self.fast, self.slow, self.rsi_window}))
        self.target: np.ndarray = np.zeros(0)

    def on_start(self, ctx: StrategyContext) -> None:
        self.target = np.zeros(ctx.n_symbols)

    def on_bar(self, ctx: StrategyContext, bars: BarClose) -> list[Intent]:
        # the signal in array operations over the closed symbols (a Python loop with numpy scalars
        # took ~5 us a symbol); only the symbols that trade are visited one by one
        fast = bars.feature(f"sma_{self.fast}")
        slow = bars.feature(f"sma_{self.slow}")
        rsi = bars.feature(f"rsi_{self.rsi_window}")
        ids = bars.symbol_ids
        ready = np.isfinite(fast) & np.isfinite(slow) & np.isfinite(rsi)  # past the lookback
        cs = bars.cross_section
        if cs is not None and self.max_abs_beta < math.inf:
            capped = np.abs(cs.beta[ids]) > self.max_abs_beta
            ready &= ~capped
            self.target[ids[capped]] = 0.0
            considered = ready | capped
        else:
            considered = ready
        long = ready & (fast > slow) & (rsi < self.rsi_overbought)
        short = ready & ~long & (fast < slow) & (rsi > self.rsi_oversold)
        self.target[ids[long]] = self.max_position
        self.target[ids[short]] = -self.max_position if self.allow_short else 0.0
        held = ids[considered]
        gaps = self.target[held] - ctx.position[held]
        intents: list[Intent] = []
        pending = ctx.pending_qty if ctx.open_orders else None  # usually none are open at a bar close
        for sid, gap in zip(held.tolist(), gaps.tolist()):
            if pending is not None:
                gap -= pending(sid)
            size = min(abs(gap), self.qty)
            if size >= 1.0:
                intents.append(OrderIntent.market(sid, SIDE_BUY if gap > 0 else SIDE_SELL, float(math.floor(size)), tag="signal"))
        return intents
