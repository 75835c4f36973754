"""A trend signal: fast/slow moving-average crossover confirmed by RSI, traded with market orders at bar close.

Long when the fast SMA is above the slow one and RSI is not overbought; short (if allowed) when the
fast SMA is below and RSI is not oversold; otherwise the previous target stands. The position moves
toward its target by at most ``qty`` per bar. When the engine hands over the universe cross-section,
symbols whose beta to the benchmark is beyond ``max_abs_beta`` are taken flat (a market-neutral tilt).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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
        self._inputs = (f"sma_{self.fast}", f"sma_{self.slow}", f"rsi_{self.rsi_window}")  # the signal's features
        self.target: np.ndarray = np.zeros(0)

    def on_start(self, ctx: StrategyContext) -> None:
        self.target = np.zeros(ctx.n_symbols)
        # compile (or load) the signal now, with the argument types of a bar close: not at the first one
        _signal(np.zeros(0, dtype=np.int32), np.zeros((0, 3)), np.zeros(3, dtype=np.int64), _NO_BETA, math.inf,
                self.rsi_overbought, self.rsi_oversold, self.max_position, 0.0, self.target, ctx.position,
                np.zeros(0, dtype=np.int64), np.zeros(0))

    def on_bar(self, ctx: StrategyContext, bars: BarClose) -> list[Intent]:
        # the signal for every closed symbol in one compiled call (a Python loop over numpy scalars
        # took ~5 us a symbol, array operations ~2 us each on a bar close's cold caches); only the
        # symbols that may trade come back, with their gap to target before open orders
        columns = np.array([bars.column(name) for name in self._inputs])
        cs = bars.cross_section
        beta = cs.beta if cs is not None and self.max_abs_beta < math.inf else _NO_BETA
        n = len(bars.symbol_ids)
        held, gaps = np.empty(n, dtype=np.int64), np.empty(n)
        n = _signal(bars.symbol_ids, np.asarray(bars.features, dtype=np.float64), columns, beta, self.max_abs_beta,
                    self.rsi_overbought, self.rsi_oversold, self.max_position, -self.max_position if self.allow_short else 0.0,
                    self.target, ctx.position, held, gaps)
        intents: list[Intent] = []
        pending = ctx.pending_qty if ctx.open_orders else None  # usually none are open at a bar close
        for sid, gap in zip(held[:n].tolist(), gaps[:n].tolist()):
            if pending is not None:
                gap -= pending(sid)
            size = min(abs(gap), self.qty)
            if size >= 1.0:
                intents.append(OrderIntent.market(sid, SIDE_BUY if gap > 0 else SIDE_SELL, float(math.floor(size)), tag="signal"))
        return intents


_NO_BETA = np.zeros(0)


@njit(cache=True)
def _signal(ids, features, columns, beta, max_abs_beta, overbought, oversold, long_target, short_target,
            target, position, held, gaps):  # pragma: no cover - njit
    """Move each closed symbol's target (in bar order); list the symbols considered and their gaps."""
    n = 0
    for row in range(ids.shape[0]):
        sid = ids[row]
        fast, slow, rsi = features[row, columns[0]], features[row, columns[1]], features[row, columns[2]]
        if beta.shape[0] and abs(beta[sid]) > max_abs_beta:
            target[sid] = 0.0  # beyond the beta cap: flat
        elif not (np.isfinite(fast) and np.isfinite(slow) and np.isfinite(rsi)):
            continue  # still inside the lookback
        elif fast > slow and rsi < overbought:
            target[sid] = long_target
        elif fast < slow and rsi > oversold:
            target[sid] = short_target
        held[n] = sid
        gaps[n] = target[sid] - position[sid]
        n += 1
    return n
