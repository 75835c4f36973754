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
        fast = bars.feature(f"sma_{self.fast}")
        slow = bars.feature(f"sma_{self.slow}")
        rsi = bars.feature(f"rsi_{self.rsi_window}")
        beta = bars.cross_section.beta if bars.cross_section is not None else None
        intents: list[Intent] = []
        for row, sid in enumerate(bars.symbol_ids):
            sid = int(sid)
            f, s, r = fast[row], slow[row], rsi[row]
            if beta is not None and abs(beta[sid]) > self.max_abs_beta:
                self.target[sid] = 0.0
            elif not (np.isfinite(f) and np.isfinite(s) and np.isfinite(r)):
                continue  # still inside the lookback
            elif f > s and r < self.rsi_overbought:
                self.target[sid] = self.max_position
            elif f < s and r > self.rsi_oversold:
                self.target[sid] = -self.max_position if self.allow_short else 0.0
            gap = self.target[sid] - (ctx.position[sid] + ctx.pending_qty(sid))
            size = min(abs(gap), self.qty)
            if size >= 1.0:
                side = SIDE_BUY if gap > 0 else SIDE_SELL
                intents.append(OrderIntent.market(sid, side, float(math.floor(size)), tag="signal"))
        return intents
