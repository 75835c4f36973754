"""RiskEngine: the pre-trade gate between a signal and an order, and the trading-state kill switch.

It owns the limits (from ``RiskConfig``), the trading state and the rate window, and reads positions
and marks from the ``PnlTracker`` it is given, so both agree by construction. Fills and marks go
through the engine (or straight to the tracker; the next check sees them either way), and the daily
loss limit is re-evaluated after each, so a breach halts trading even before the next order.

Hot path: ``check(symbol_id, side, qty, ...) -> code`` (one preallocated njit call, no allocation)
and ``check_orders(orders) -> codes`` for an ORDER_DTYPE batch. ``check_order(symbol, ...)`` is the
convenience form with names that returns a ``Decision`` with its human reason.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from engine._jit import FixedTypes, entry_point
from engine.config import RiskConfig
from engine.events import (
    FILL_DTYPE,
    ORDER_DTYPE,
    ORDER_LIMIT,
    ORDER_MARKET,
    ORDER_STOP,
    ORDER_STOP_LIMIT,
    QUOTE_DTYPE,
    empty,
)
from engine.risk import _book as book
from engine.risk import checks
from engine.risk.codes import (
    DENIAL_NAMES,
    DENY_DAILY_LOSS,
    DENY_HALTED,
    DENY_INVALID_ORDER_TYPE,
    DENY_INVALID_PRICE,
    DENY_INVALID_QTY,
    DENY_INVALID_SIDE,
    DENY_MAX_GROSS_NOTIONAL,
    DENY_MAX_OPEN_POSITIONS,
    DENY_MAX_ORDER_QTY,
    DENY_MAX_POSITION_QTY,
    DENY_MAX_SYMBOL_NOTIONAL,
    DENY_NO_MARK,
    DENY_PRICE_BAND,
    DENY_RATE_LIMIT,
    DENY_REDUCING,
    DENY_SHORT_NOT_ALLOWED,
    DENY_UNKNOWN_SYMBOL,
    DENY_ZERO_QTY,
    N_CODE_SLOTS,
    RISK_APPROVED,
    STATE_ACTIVE,
    STATE_BY_NAME,
    STATE_HALTED,
    STATE_REDUCING,
    denial_name,
    state_name,
)
from engine.risk.pnl import FillResult, PnlTracker, side_of
from engine.risk.symbols import SymbolLookup

log = logging.getLogger("tickforge.risk")

_NAN = float("nan")
_ORDER_TYPES = {"market": ORDER_MARKET, "limit": ORDER_LIMIT, "stop": ORDER_STOP, "stop_limit": ORDER_STOP_LIMIT}
_warmed = False
#: re-evaluated after every batch of marks: skip numba's per-call dispatch (the argument types are fixed)
_evaluate_daily_loss = FixedTypes(checks.evaluate_daily_loss)


class Decision(NamedTuple):
    """The outcome of one pre-trade check: a stable code (0 = approved), the attempted value the
    code is about, and a sentence naming the limit, its value and the attempted value."""

    code: int
    attempted: float
    reason: str

    @property
    def approved(self) -> bool:
        return self.code == RISK_APPROVED

    @property
    def name(self) -> str:
        return denial_name(self.code)


class RiskEngine:
    """Pre-trade limits and trading state over a ``PnlTracker``'s positions and marks."""

    def __init__(
        self,
        config: RiskConfig | None = None,
        tracker: PnlTracker | None = None,
        *,
        symbols: SymbolLookup | Iterable[str] | None = None,
        warm: bool = True,
    ) -> None:
        self.config = config or RiskConfig()
        if tracker is None:
            tracker = PnlTracker.from_config(self.config, symbols)
        elif symbols is not None:
            raise ValueError("pass symbols to the PnlTracker, not to a RiskEngine that is given one")
        self.tracker = tracker
        self._lim = _limits_of(self.config)
        cap = self.config.max_orders_per_window
        self._rs = np.zeros(checks.R_RING + cap, dtype=np.int64)
        self._rs[checks.R_RING_CAP] = cap
        self._rs[checks.R_STATE] = STATE_BY_NAME[self.config.initial_state]
        self._rs[checks.R_HALT_CODE] = DENY_HALTED
        self._out = np.zeros(1, dtype=np.float64)
        self._state_seen = int(self._rs[checks.R_STATE])
        if warm:
            warm_up()
        self._check_one = None
        self._bind()
        tracker.on_resize(self._bind)

    # --- trading state -----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"ACTIVE"``, ``"REDUCING"`` or ``"HALTED"`` (after re-checking the daily loss)."""
        self.refresh()
        return state_name(self._rs[checks.R_STATE])

    def set_state(self, state: str | int, reason: str = "set by hand") -> None:
        """Move to ``ACTIVE | REDUCING | HALTED``. Leaving HALTED is always a deliberate call."""
        value = STATE_BY_NAME.get(state.upper()) if isinstance(state, str) else int(state)
        if value not in (STATE_ACTIVE, STATE_REDUCING, STATE_HALTED):
            raise ValueError(f"trading state must be ACTIVE, REDUCING or HALTED, not {state!r}")
        old = int(self._rs[checks.R_STATE])
        self._rs[checks.R_STATE] = value
        self._rs[checks.R_HALT_CODE] = DENY_HALTED
        self._state_seen = value
        if old != value:
            log.warning("trading state %s -> %s (%s)", state_name(old), state_name(value), reason)

    def halt(self, reason: str = "kill switch") -> None:
        self.set_state(STATE_HALTED, reason)

    def reduce_only(self, reason: str = "reduce only") -> None:
        self.set_state(STATE_REDUCING, reason)

    def resume(self, reason: str = "resumed") -> None:
        self.set_state(STATE_ACTIVE, reason)

    @property
    def halted_by_daily_loss(self) -> bool:
        return self._rs[checks.R_STATE] == STATE_HALTED and self._rs[checks.R_HALT_CODE] == DENY_DAILY_LOSS

    def refresh(self) -> float:
        """Re-evaluate the daily loss limit now (halting on a breach); returns the daily P&L."""
        t = self.tracker
        t.sync_symbols()
        pnl = float(_evaluate_daily_loss(t.agg, self._lim, self._rs))
        self._note_state()
        return pnl

    # --- checks ------------------------------------------------------------------------------------
    def check(
        self,
        symbol_id: int,
        side: int,
        qty: float,
        limit_price: float = _NAN,
        order_type: int = ORDER_MARKET,
        stop_price: float = _NAN,
        ts_ns: int = 0,
    ) -> int:
        """Check one order by symbol id; returns its code (0 = approved, the order is now in flight).

        ``ts_ns`` (epoch ns) places it in the rate window; 0 means now (the tracker's clock). The
        attempted value behind a denial is in ``last_attempted``; ``explain(code, last_attempted)``
        words it. Bad values are denials; only arguments that are not numbers at all raise."""
        t = self.tracker
        if ts_ns <= 0:
            ts_ns = t.clock()
        if ts_ns >= t.next_reset_ns:
            t.roll_session(ts_ns)
        # the compiled entry converts the scalars as int64/float64 itself (a non-number raises)
        code = self._check_one(symbol_id, side, qty, order_type, limit_price, stop_price, ts_ns)
        if code:
            code = self._after_denial(code, symbol_id, side, qty, order_type, limit_price, stop_price, ts_ns)
        return code

    def _after_denial(self, code: int, *order: object) -> int:
        # off the approval path: notice a state change made by the kernel (an approval cannot make
        # one), and give a symbol id that a shared map handed out since the last sync a second try
        if code == DENY_UNKNOWN_SYMBOL and len(self.tracker.symbols) != self.tracker.known_symbols:
            self.tracker.sync_symbols()
            code = self._check_one(*order)
        self._note_state()
        return code

    def _bind(self) -> None:
        """Bind the state arrays to the compiled single-order check, so a call passes only scalars."""
        t = self.tracker
        arrays = (t.st, t.ix, t.active, t.agg, t.cnt, self._lim, self._rs, self._out)
        self._check_one = functools.partial(entry_point(checks.check_order, (*arrays, *_CHECK_SCALARS)), *arrays)

    @property
    def last_attempted(self) -> float:
        """The attempted value of the last ``check`` (order qty, resulting position, notional, ...)."""
        return float(self._out[0])

    def check_order(
        self,
        symbol: str | int,
        side: int | str,
        qty: float,
        *,
        limit_price: float | None = None,
        stop_price: float | None = None,
        order_type: int | str | None = None,
        ts_ns: int = 0,
    ) -> Decision:
        """Check one order by symbol name (or id); the order type defaults to limit when a limit
        price is given, else market. Bad input is a denial, never an exception."""
        sid = self.tracker.symbol_id(symbol)
        if order_type is None:
            kind = ORDER_LIMIT if limit_price is not None else ORDER_MARKET
            if stop_price is not None:
                kind = ORDER_STOP_LIMIT if limit_price is not None else ORDER_STOP
        elif isinstance(order_type, str):
            kind = _ORDER_TYPES.get(order_type.lower(), 255)
        else:
            kind = int(order_type)
        code = self.check(
            sid, side_of(side), _float(qty),
            _NAN if limit_price is None else _float(limit_price), kind,
            _NAN if stop_price is None else _float(stop_price), ts_ns,
        )
        attempted = self.last_attempted
        reason = self.explain(code, attempted)
        if code == DENY_UNKNOWN_SYMBOL and isinstance(symbol, str):
            reason = f"unknown symbol {symbol!r}: not registered with the risk engine"
        decision = Decision(code, attempted, reason)
        if code != RISK_APPROVED:
            log.info("order denied [%s] %s: %s", decision.name, symbol, decision.reason)
        return decision

    def check_orders(
        self,
        orders: np.ndarray,
        now_ns: int | None = None,
        codes: np.ndarray | None = None,
        attempted: np.ndarray | None = None,
    ) -> np.ndarray:
        """Check an ORDER_DTYPE batch in order in one call; returns int32 codes (0 = approved).

        ``ts_ns`` of 0 in a record means ``now_ns`` (default: the tracker's clock). ``codes`` and
        ``attempted`` (float64) may be preallocated outputs of the batch's length."""
        if orders.dtype != ORDER_DTYPE:
            raise TypeError(f"orders must be an engine.events.ORDER_DTYPE array, not {orders.dtype}")
        n = orders.size
        codes = np.empty(n, dtype=np.int32) if codes is None else _checked_out(codes, np.int32, n, "codes")
        attempted = (np.empty(n, dtype=np.float64) if attempted is None
                     else _checked_out(attempted, np.float64, n, "attempted"))
        t = self.tracker
        now = t.clock() if now_ns is None else int(now_ns)
        t.sync_symbols()
        t.roll_session(now)
        checks.check_orders(orders, t.st, t.ix, t.active, t.agg, t.cnt, self._lim, self._rs, now, codes, attempted)
        self._note_state()
        return codes

    def decisions(self, codes: np.ndarray, attempted: np.ndarray) -> list[Decision]:
        """Codes and attempted values of a batch as ``Decision`` objects (for logs and replies)."""
        return [Decision(int(c), float(a), self.explain(int(c), float(a))) for c, a in zip(codes, attempted)]

    def explain(self, code: int, attempted: float) -> str:
        """The human reason for a code: which limit, its value, and the attempted value."""
        c = self.config
        x = _num(attempted)
        if code == RISK_APPROVED:
            return "approved"
        if code == DENY_UNKNOWN_SYMBOL:
            return f"unknown symbol: symbol id {x} is not registered with the risk engine"
        if code == DENY_INVALID_SIDE:
            return f"invalid side {x}: must be 1 (buy) or -1 (sell)"
        if code == DENY_INVALID_ORDER_TYPE:
            return f"invalid order type {x}: must be 0 (market), 1 (limit), 2 (stop) or 3 (stop limit)"
        if code == DENY_ZERO_QTY:
            return "order qty is 0: there is nothing to trade"
        if code == DENY_INVALID_QTY:
            return f"invalid order qty {x}: must be a finite number above 0"
        if code == DENY_INVALID_PRICE:
            return f"invalid order price {x}: a limit or stop price must be a finite number above 0"
        if code == DENY_NO_MARK:
            return "no mid price for the symbol yet: notional and price band cannot be checked"
        if code == DENY_HALTED:
            return "trading state is HALTED: every new order is denied"
        if code == DENY_DAILY_LOSS:
            return f"max_daily_loss {_num(c.max_daily_loss)} breached: daily P&L is {x}; trading state is HALTED"
        if code == DENY_REDUCING:
            return ("trading state is REDUCING: only orders that shrink the position pass; "
                    f"this one would take the position (with in-flight orders) to {x}")
        if code == DENY_MAX_ORDER_QTY:
            return f"max_order_qty {_num(c.max_order_qty)} exceeded: order qty {x}"
        if code == DENY_SHORT_NOT_ALLOWED:
            return f"allow_short is false: the sell would leave the position (with in-flight orders) at {x}"
        if code == DENY_MAX_POSITION_QTY:
            return f"max_position_qty {_num(c.max_position_qty)} exceeded: position with in-flight orders would be {x}"
        if code == DENY_MAX_SYMBOL_NOTIONAL:
            return f"max_symbol_notional {_num(c.max_symbol_notional)} exceeded: symbol notional would be {x}"
        if code == DENY_MAX_GROSS_NOTIONAL:
            return f"max_gross_notional {_num(c.max_gross_notional)} exceeded: gross notional would be {x}"
        if code == DENY_MAX_OPEN_POSITIONS:
            return f"max_open_positions {c.max_open_positions} exceeded: open positions would be {x}"
        if code == DENY_PRICE_BAND:
            return f"price_band_bps {_num(c.price_band_bps)} exceeded: limit price is {x} bps through the mid"
        if code == DENY_RATE_LIMIT:
            return (f"max_orders_per_window {c.max_orders_per_window} per {_num(c.rate_window_s)} s exceeded: "
                    f"this would be order {x} in the window")
        return f"denied with unknown code {code}"

    # --- orders ending, fills, marks ---------------------------------------------------------------
    def release(self, symbol: str | int, side: int | str, qty: float) -> bool:
        """Give back the unfilled quantity of an approved order that was canceled, rejected or
        expired (fills give back their own quantity). False when the input is malformed."""
        t = self.tracker
        return bool(checks.release(t.st, t.ix, t.active, t.agg, t.cnt, t.symbol_id(symbol), side_of(side), _float(qty)))

    def release_orders(self, orders: np.ndarray) -> int:
        """``release`` for finished ORDER_DTYPE records (``qty - filled_qty`` each); returns refusals."""
        if orders.dtype != ORDER_DTYPE:
            raise TypeError(f"orders must be an engine.events.ORDER_DTYPE array, not {orders.dtype}")
        t = self.tracker
        refused = int(checks.release_orders(orders, t.st, t.ix, t.active, t.agg, t.cnt))
        if refused:
            log.warning("refused to release %d malformed order record(s)", refused)
        return refused

    def apply_fills(self, fills: np.ndarray, realized_out: np.ndarray | None = None) -> np.ndarray:
        """Book fills in the tracker, then re-check the daily loss limit."""
        status = self.tracker.apply_fills(fills, realized_out)
        self.refresh()
        return status

    def apply_fill(self, symbol: str | int, side: int | str, qty: float, price: float, fee: float = 0.0,
                   exec_id: int | str | None = None, ts_ns: int | None = None) -> FillResult:
        result = self.tracker.apply_fill(symbol, side, qty, price, fee, exec_id, ts_ns)
        self.refresh()
        return result

    def update_marks(self, symbol_ids: np.ndarray, prices: np.ndarray) -> int:
        dropped = self.tracker.update_marks(symbol_ids, prices)
        self.refresh()
        return dropped

    def update_marks_from_quotes(self, quotes: np.ndarray) -> int:
        dropped = self.tracker.update_marks_from_quotes(quotes)
        self.refresh()
        return dropped

    def set_mark(self, symbol: str | int, price: float) -> bool:
        ok = self.tracker.set_mark(symbol, price)
        self.refresh()
        return ok

    # --- figures -----------------------------------------------------------------------------------
    @property
    def daily_pnl(self) -> float:
        return self.refresh()

    @property
    def gross_exposure(self) -> float:
        """Worst-case gross notional, in-flight orders included, at current marks."""
        return float(book.gross_exposure(self.tracker.agg))

    @property
    def open_positions(self) -> int:
        """Symbols with a position or in-flight orders (what max_open_positions counts)."""
        return int(self.tracker.cnt[book.C_N_ACTIVE])

    def decision_counts(self) -> dict[str, int]:
        """Checks since start by outcome name (``APPROVED``, ``MAX_ORDER_QTY``, ...), for metrics."""
        counts = self._rs[checks.R_COUNTS : checks.R_COUNTS + N_CODE_SLOTS]
        return {name: int(counts[code]) for code, name in DENIAL_NAMES.items()}

    def reconfigure(self, config: RiskConfig) -> None:
        """New limits from now on; the rate window keeps its most recent approvals."""
        cap = config.max_orders_per_window
        old = self._rs
        times = _ring_times(old)[-cap:]
        rs = np.zeros(checks.R_RING + cap, dtype=np.int64)
        rs[: checks.R_RING] = old[: checks.R_RING]
        rs[checks.R_RING_CAP] = cap
        rs[checks.R_RING_HEAD] = 0
        rs[checks.R_RING_COUNT] = times.size
        rs[checks.R_RING : checks.R_RING + times.size] = times
        self._lim = _limits_of(config)
        self._rs = rs
        self.config = config
        self._bind()
        log.info("risk limits reconfigured: %s", config)

    def __repr__(self) -> str:
        return f"RiskEngine(state={state_name(self._rs[checks.R_STATE])}, {self.tracker!r})"

    def _note_state(self) -> None:
        now = int(self._rs[checks.R_STATE])
        if now != self._state_seen:
            cause = "daily loss limit breached" if self.halted_by_daily_loss else "risk kernel"
            log.error("trading state %s -> %s (%s)", state_name(self._state_seen), state_name(now), cause)
            self._state_seen = now


# the scalar arguments of checks.check_order as the hot path passes them
_CHECK_SCALARS = (0, 1, 1.0, ORDER_MARKET, _NAN, _NAN, 1)


def _limits_of(config: RiskConfig) -> np.ndarray:
    lim = np.zeros(checks.N_LIMITS, dtype=np.float64)
    lim[checks.L_MAX_ORDER_QTY] = config.max_order_qty
    lim[checks.L_MAX_POSITION_QTY] = config.max_position_qty
    lim[checks.L_MAX_GROSS_NOTIONAL] = config.max_gross_notional
    lim[checks.L_MAX_SYMBOL_NOTIONAL] = config.max_symbol_notional
    lim[checks.L_MAX_OPEN_POSITIONS] = config.max_open_positions
    lim[checks.L_MAX_DAILY_LOSS] = config.max_daily_loss
    lim[checks.L_RATE_WINDOW_NS] = round(config.rate_window_s * 1e9)
    lim[checks.L_PRICE_BAND_BPS] = config.price_band_bps
    lim[checks.L_ALLOW_SHORT] = 1.0 if config.allow_short else 0.0
    return lim


def _ring_times(rs: np.ndarray) -> np.ndarray:
    """Approval times in the rate window, oldest first."""
    cap, head, count = int(rs[checks.R_RING_CAP]), int(rs[checks.R_RING_HEAD]), int(rs[checks.R_RING_COUNT])
    idx = (head + np.arange(count)) % cap
    return rs[checks.R_RING + idx].copy()


def _checked_out(out: np.ndarray, dtype: type, n: int, name: str) -> np.ndarray:
    # kernels run without bounds checks: a short or mistyped output buffer must never reach them
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.ndim != 1 or out.size < n:
        raise ValueError(f"{name} must be a 1-d {np.dtype(dtype).name} array of at least {n} elements")
    return out


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _NAN


def _num(value: float) -> str:
    """A number for a reason text: plain decimal, at most 6 places, no trailing zeros."""
    if not math.isfinite(value):
        return str(value)
    text = format(Decimal(repr(round(value, 6))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def warm_up() -> None:
    """Compile (or load from the cache) every risk and P&L kernel once per process, on scratch
    state, so the first real check or fill pays no compile time."""
    global _warmed
    if _warmed:
        return
    tracker = PnlTracker(["WARM"], start_ns=1)
    engine = RiskEngine(RiskConfig(), tracker, warm=False)
    engine.set_mark(0, 100.0)
    engine.check(0, 1, 1.0, 100.0, ORDER_LIMIT, _NAN, 2)
    orders = empty(ORDER_DTYPE, 1)
    orders[0] = (2, 0, 0, 1, ORDER_LIMIT, 0, 0, 1.0, 100.0, _NAN, 0.0, 0.0)
    engine.check_orders(orders, now_ns=2)
    engine.release_orders(orders)
    fills = empty(FILL_DTYPE, 1)
    fills[0] = (2, 0, 1, 0, 1, 1.0, 100.0, 0.0)
    engine.apply_fills(fills)
    engine.apply_fill(0, 1, 1.0, 100.0, ts_ns=3)
    engine.release(0, 1, 1.0)
    quotes = empty(QUOTE_DTYPE, 1)
    engine.update_marks_from_quotes(quotes)
    tracker.reset_day(4)
    book.rehash_seen(np.zeros(2, dtype=np.int64), np.zeros(4, dtype=np.int64))
    book.reseed_aggregates(tracker.st, tracker.active, tracker.agg, tracker.cnt)
    _ = tracker.unrealized_pnl, engine.gross_exposure
    _warmed = True
