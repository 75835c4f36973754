"""P&L tracker: positions, average entry, realised/unrealised P&L and fees per symbol, fill by fill.

``PnlTracker`` owns the position book (``engine.risk._book``): numba kernels book FILL_DTYPE batches
and marks in one call each, and the risk engine reads the same arrays, so positions and marks have a
single source of truth. A fill whose execution id was applied before (a replay after a stream
reconnect) is counted and ignored. A new session starts at a configurable wall-clock boundary: day
figures go back to zero, positions and lifetime figures stay.

Hot path: ``apply_fills(fills)``, ``update_marks(ids, prices)``, ``update_marks_from_quotes(quotes)``.
Convenience (symbol names, one fill at a time): ``apply_fill``, ``set_mark``, ``position``,
``positions``, ``alpaca_positions``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from engine.errors import InputError
from engine.events import FILL_DTYPE, QUOTE_DTYPE, SIDE_BUY, SIDE_SELL
from engine._jit import FixedTypes
from engine.risk import _book as book
from engine.risk.codes import (
    FILL_APPLIED,
    FILL_DUPLICATE,
    FILL_NOT_PROCESSED,
    FILL_STATUS_NAMES,
    FILL_UNKNOWN_SYMBOL,
    N_FILL_STATUSES,
)
from engine.risk.session import SessionClock
from engine.risk.symbols import SymbolLookup, as_symbol_lookup

if TYPE_CHECKING:
    from engine.config import RiskConfig

log = logging.getLogger("tickforge.risk.pnl")

_MIN_SEEN_SLOTS = 1024


def exec_id_of(venue_execution_id: str) -> int:
    """The int64 key FILL_DTYPE.exec_id carries for a venue execution id (stable across processes).

    Never 0: 0 marks a fill without an id, which the tracker refuses."""
    digest = hashlib.blake2b(venue_execution_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def side_of(side: int | str) -> int:
    """``SIDE_BUY``/``SIDE_SELL`` from an int or ``"buy"``/``"sell"``; anything else is 0 (invalid)."""
    if isinstance(side, str):
        return {"buy": SIDE_BUY, "sell": SIDE_SELL}.get(side.lower(), 0)
    try:
        value = int(side)
    except (TypeError, ValueError):
        return 0
    return value if value in (SIDE_BUY, SIDE_SELL) else 0



#: marks move on every book change: skip numba's per-call dispatch (the argument types are fixed)
_update_marks = FixedTypes(book.update_marks)

class FillResult(NamedTuple):
    """What booking one fill did: its status code (``FILL_*``) and the P&L it realised (gross of fees)."""

    status: int
    realized_pnl: float

    @property
    def applied(self) -> bool:
        return self.status == FILL_APPLIED

    @property
    def status_name(self) -> str:
        return FILL_STATUS_NAMES.get(self.status, str(self.status))


@dataclass(frozen=True)
class Position:
    """A snapshot of one symbol's position and P&L (money in account currency)."""

    symbol: str
    symbol_id: int
    qty: float                 # signed: long > 0, short < 0
    avg_entry_price: float     # 0 when flat
    mark: float                # NaN until the first mark or fill
    lastday_price: float       # mark at the session start; NaN before the first session roll
    intraday_basis_price: float
    realized_pnl: float        # since start, gross of fees
    realized_pnl_day: float
    fees: float
    fees_day: float
    trade_count: int
    trade_count_day: int
    daily_pnl: float           # this session, realised + unrealised, after fees
    pending_buy_qty: float
    pending_sell_qty: float

    @property
    def side(self) -> str:
        return "short" if self.qty < 0 else "long"

    @property
    def market_value(self) -> float:
        return self.qty * self.mark if self.qty else 0.0

    @property
    def cost_basis(self) -> float:
        return self.qty * self.avg_entry_price

    @property
    def unrealized_pnl(self) -> float:
        return self.qty * (self.mark - self.avg_entry_price) if self.qty else 0.0

    @property
    def unrealized_intraday_pnl(self) -> float:
        return self.qty * (self.mark - self.intraday_basis_price) if self.qty else 0.0

    @property
    def net_pnl(self) -> float:
        """Since start: realised + unrealised - fees."""
        return self.realized_pnl + self.unrealized_pnl - self.fees


@dataclass(frozen=True)
class AssetInfo:
    """What Alpaca's position JSON says about the asset beyond its symbol."""

    asset_id: str
    exchange: str
    asset_class: str


class PnlTracker:
    """Per-symbol positions and P&L from fills; the engine's one record of positions and marks."""

    def __init__(
        self,
        symbols: SymbolLookup | Iterable[str] | None = None,
        *,
        capacity: int | None = None,
        session_reset_time: str = "00:00",
        session_timezone: str = "America/New_York",
        start_ns: int | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._symbols = as_symbol_lookup(symbols)
        self.clock = clock  # epoch ns; a replay or simulation passes its own event-time clock
        self.session = SessionClock(session_reset_time, session_timezone)
        n = max(int(capacity or 0), len(self._symbols), 16)
        self.st = np.zeros((n, book.N_FLOAT_FIELDS), dtype=np.float64)
        self.st[:, book.F_MARK] = np.nan
        self.st[:, book.F_LASTDAY_PRICE] = np.nan
        self.ix = np.zeros((n, book.N_INT_FIELDS), dtype=np.int64)
        self.ix[:, book.I_ACTIVE_SLOT] = -1
        self.active = np.zeros(n, dtype=np.int64)
        self.agg = np.zeros(book.N_AGG, dtype=np.float64)
        self.cnt = np.zeros(book.N_CNT, dtype=np.int64)
        self.seen = np.zeros(_MIN_SEEN_SLOTS, dtype=np.int64)
        self._known = 0
        self._assets: dict[int, AssetInfo] = {}
        self._resize_listeners: list[Callable[[], None]] = []
        now = clock() if start_ns is None else int(start_ns)
        self.session_start_ns = self.session.session_start_ns(now)
        self.next_reset_ns = self.session.next_boundary_ns(now)
        self.sync_symbols()

    @classmethod
    def from_config(
        cls,
        config: RiskConfig,
        symbols: SymbolLookup | Iterable[str] | None = None,
        *,
        start_ns: int | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> PnlTracker:
        return cls(
            symbols,
            session_reset_time=config.session_reset_time,
            session_timezone=config.session_timezone,
            start_ns=start_ns,
            clock=clock,
        )

    # --- symbols -----------------------------------------------------------------------------------
    @property
    def symbols(self) -> SymbolLookup:
        return self._symbols

    @property
    def known_symbols(self) -> int:
        """How many ids (0 .. n-1) the state arrays know; the map may have handed out more since."""
        return self._known

    @property
    def capacity(self) -> int:
        return self.st.shape[0]

    def sync_symbols(self) -> None:
        """Register ids the (possibly shared) symbol map handed out since the last call."""
        n = len(self._symbols)
        if n == self._known:
            return
        if n > self.st.shape[0]:
            self._grow(max(n, 2 * self.st.shape[0]))
        self.ix[self._known : n, book.I_KNOWN] = 1
        self._known = n

    def add_symbol(self, symbol: str) -> int:
        sid = self._symbols.add(symbol)
        self.sync_symbols()
        return sid

    def symbol_id(self, symbol: str | int) -> int:
        """The id of a symbol name (an int is taken as an id); -1 when unknown."""
        if isinstance(symbol, (int, np.integer)):
            return int(symbol)
        self.sync_symbols()
        sid = self._symbols.get(symbol)
        return -1 if sid is None or sid >= self._known else int(sid)

    def symbol_name(self, symbol_id: int) -> str:
        return self._symbols.name(int(symbol_id))

    def set_asset_info(
        self,
        symbol: str | int,
        *,
        asset_id: str | None = None,
        exchange: str | None = None,
        asset_class: str | None = None,
    ) -> None:
        """Override the asset details shown in the Alpaca position JSON for one symbol."""
        from engine.risk.alpaca_positions import default_asset_info  # noqa: PLC0415 - only for JSON output

        sid = self._require(symbol)
        base = self._assets.get(sid) or default_asset_info(self.symbol_name(sid))
        self._assets[sid] = AssetInfo(
            asset_id=asset_id or base.asset_id, exchange=exchange if exchange is not None else base.exchange,
            asset_class=asset_class or base.asset_class,
        )

    def asset_info(self, symbol: str | int) -> AssetInfo:
        from engine.risk.alpaca_positions import default_asset_info  # noqa: PLC0415

        sid = self._require(symbol)
        return self._assets.get(sid) or default_asset_info(self.symbol_name(sid))

    # --- hot path ----------------------------------------------------------------------------------
    def apply_fills(self, fills: np.ndarray, realized_out: np.ndarray | None = None) -> np.ndarray:
        """Book a FILL_DTYPE array in order; returns one ``FILL_*`` status per fill (uint8).

        ``realized_out`` (float64, same length) receives the P&L each fill realised. A fill at or
        after the session boundary first rolls the session."""
        if fills.dtype != FILL_DTYPE:
            raise TypeError(f"fills must be an engine.events.FILL_DTYPE array, not {fills.dtype}")
        n = fills.size
        status = np.full(n, FILL_NOT_PROCESSED, dtype=np.uint8)
        if realized_out is None:
            realized = np.zeros(n, dtype=np.float64)
        elif (not isinstance(realized_out, np.ndarray) or realized_out.dtype != np.float64
              or realized_out.ndim != 1 or realized_out.size < n):
            # kernels run without bounds checks: a short or mistyped buffer must never reach them
            raise ValueError(f"realized_out must be a 1-d float64 array of at least {n} elements")
        else:
            realized = realized_out
        if n == 0:
            return status
        self.sync_symbols()
        self._reserve_seen(n)
        drops_before = self._drop_total()
        start = 0
        while start < n:
            stop = start + book.apply_fills(
                fills[start:], self.st, self.ix, self.active, self.agg, self.cnt, self.seen,
                self.next_reset_ns, realized[start:], status[start:],
            )
            if stop < n:
                self.roll_session(int(fills[stop]["ts_ns"]))
            start = stop
        if self._drop_total() != drops_before:
            self._log_drops(status)
        return status

    def update_marks(self, symbol_ids: np.ndarray, prices: np.ndarray) -> int:
        """Set marks (mids) by id; bad prices and unknown ids are counted and skipped (returned)."""
        ids = np.ascontiguousarray(symbol_ids, dtype=np.int64)
        px = np.ascontiguousarray(prices, dtype=np.float64)
        if ids.shape != px.shape:
            raise ValueError(f"{ids.size} symbol ids but {px.size} prices")
        self.sync_symbols()
        return int(_update_marks(ids, px, self.st, self.ix, self.active, self.agg, self.cnt))

    def update_marks_from_quotes(self, quotes: np.ndarray) -> int:
        """Mark at the mid of QUOTE_DTYPE quotes; one-sided or crossed quotes are counted and skipped."""
        if quotes.dtype != QUOTE_DTYPE:
            raise TypeError(f"quotes must be an engine.events.QUOTE_DTYPE array, not {quotes.dtype}")
        self.sync_symbols()
        return int(book.update_marks_from_quotes(quotes, self.st, self.ix, self.active, self.agg, self.cnt))

    # --- one at a time ---------------------------------------------------------------------------------
    def apply_fill(
        self,
        symbol: str | int,
        side: int | str,
        qty: float,
        price: float,
        fee: float = 0.0,
        exec_id: int | str | None = None,
        ts_ns: int | None = None,
    ) -> FillResult:
        """Book one fill. ``exec_id`` (int, or the venue's string id) de-duplicates replays; without
        one the fill is taken as new. Bad input comes back as a status, never as an exception."""
        sid = self.symbol_id(symbol)
        if sid < 0:
            self.cnt[book.C_FILL_STATUS + FILL_UNKNOWN_SYMBOL] += 1
            log.warning("fill dropped: unknown symbol %r", symbol)
            return FillResult(FILL_UNKNOWN_SYMBOL, 0.0)
        if exec_id is None:
            key = secrets.randbits(63) or 1
        elif isinstance(exec_id, str):
            key = exec_id_of(exec_id)
        else:
            key = int(exec_id)
        ts = self.clock() if ts_ns is None else int(ts_ns)
        self.roll_session(ts)
        self._reserve_seen(1)
        status, realized = book.apply_fill(
            self.st, self.ix, self.active, self.agg, self.cnt, self.seen,
            sid, side_of(side), _float(qty), _float(price), _float(fee), key,
        )
        if status not in (FILL_APPLIED, FILL_DUPLICATE):
            log.warning("fill dropped (%s): symbol=%r side=%r qty=%r price=%r fee=%r",
                        FILL_STATUS_NAMES[status], symbol, side, qty, price, fee)
        return FillResult(int(status), float(realized))

    def set_lastday_price(self, symbol: str | int, price: float) -> None:
        """Yesterday's close for one symbol (Alpaca's ``lastday_price``), e.g. from a daily bar; the
        next session roll replaces it with the mark at the boundary."""
        px = _float(price)
        if not (np.isfinite(px) and px > 0.0):
            raise InputError(f"lastday price must be a finite number above 0, got {price!r}")
        self.st[self._require(symbol), book.F_LASTDAY_PRICE] = px

    def set_mark(self, symbol: str | int, price: float) -> bool:
        """Set one mark; False (counted) for an unknown symbol or a bad price."""
        self.sync_symbols()
        sid = self.symbol_id(symbol)
        ids = np.array([sid], dtype=np.int64)
        return book.update_marks(ids, np.array([_float(price)]), self.st, self.ix, self.active, self.agg, self.cnt) == 0

    # --- sessions ----------------------------------------------------------------------------------
    def roll_session(self, now_ns: int) -> bool:
        """Start a new session if ``now_ns`` is at or past the boundary; True when it did."""
        if now_ns < self.next_reset_ns:
            return False
        self.reset_day(now_ns)
        return True

    def reset_day(self, now_ns: int | None = None) -> None:
        """Start a new session now: day P&L, day fees and day trade counts to zero; positions and
        lifetime figures stay; carried positions are valued from current marks onwards."""
        now = self.clock() if now_ns is None else int(now_ns)
        book.roll_session(self.st, self.ix, self.agg)
        self.session_start_ns = self.session.session_start_ns(now)
        self.next_reset_ns = self.session.next_boundary_ns(now)
        log.info("P&L session rolled; next boundary at %d ns", self.next_reset_ns)

    # --- reading ---------------------------------------------------------------------------------------
    def position(self, symbol: str | int) -> Position:
        """Snapshot of one symbol (flat positions included); KeyError for an unknown symbol."""
        sid = self._require(symbol)
        row = self.st[sid]
        qty = float(row[book.F_QTY])
        mark = float(row[book.F_MARK])
        marked = qty * mark if qty else 0.0
        daily = (row[book.F_DAY_CASH] - row[book.F_FEES_DAY] - row[book.F_DAY_START_VALUE] + marked)
        return Position(
            symbol=self.symbol_name(sid),
            symbol_id=sid,
            qty=qty,
            avg_entry_price=float(row[book.F_AVG_PRICE]),
            mark=mark,
            lastday_price=float(row[book.F_LASTDAY_PRICE]),
            intraday_basis_price=float(row[book.F_DAY_AVG_PRICE]),
            realized_pnl=float(row[book.F_REALIZED]),
            realized_pnl_day=float(row[book.F_REALIZED_DAY]),
            fees=float(row[book.F_FEES]),
            fees_day=float(row[book.F_FEES_DAY]),
            trade_count=int(self.ix[sid, book.I_TRADES]),
            trade_count_day=int(self.ix[sid, book.I_TRADES_DAY]),
            daily_pnl=float(daily),
            pending_buy_qty=float(row[book.F_PENDING_BUY]),
            pending_sell_qty=float(row[book.F_PENDING_SELL]),
        )

    def positions(self) -> list[Position]:
        """Open (non-zero) positions, by symbol id."""
        ids = sorted(int(s) for s in self.active[: self.cnt[book.C_N_ACTIVE]] if self.st[s, book.F_QTY] != 0.0)
        return [self.position(sid) for sid in ids]

    def qty(self, symbol: str | int) -> float:
        return float(self.st[self._require(symbol), book.F_QTY])

    def mark(self, symbol: str | int) -> float:
        return float(self.st[self._require(symbol), book.F_MARK])

    @property
    def open_positions(self) -> int:
        return sum(1 for s in self.active[: self.cnt[book.C_N_ACTIVE]] if self.st[s, book.F_QTY] != 0.0)

    @property
    def realized_pnl(self) -> float:
        """Since start, all symbols, gross of fees."""
        return float(self.agg[book.A_REALIZED])

    @property
    def realized_pnl_day(self) -> float:
        return float(self.agg[book.A_REALIZED_DAY])

    @property
    def fees(self) -> float:
        return float(self.agg[book.A_FEES])

    @property
    def fees_day(self) -> float:
        return float(self.agg[book.A_FEES_DAY])

    @property
    def unrealized_pnl(self) -> float:
        return float(book.unrealized_pnl(self.st, self.active, self.cnt))

    @property
    def net_pnl(self) -> float:
        """Since start: realised + unrealised - fees."""
        return self.realized_pnl + self.unrealized_pnl - self.fees

    @property
    def daily_pnl(self) -> float:
        """This session, marked to market, after fees (what the daily loss limit watches)."""
        return float(book.daily_pnl(self.agg))

    @property
    def trade_count(self) -> int:
        return int(self.ix[:, book.I_TRADES].sum())

    def fill_status_counts(self) -> dict[str, int]:
        """How many fills ended in each status since start (for metrics)."""
        counts = self.cnt[book.C_FILL_STATUS : book.C_FILL_STATUS + N_FILL_STATUSES]
        return {FILL_STATUS_NAMES[k]: int(v) for k, v in enumerate(counts)}

    @property
    def marks_dropped(self) -> int:
        return int(self.cnt[book.C_MARKS_DROPPED])

    def alpaca_positions(self) -> list[dict[str, object]]:
        """Open positions in the shape of Alpaca's ``GET /v2/positions`` (decimals as strings)."""
        from engine.risk.alpaca_positions import to_alpaca_position  # noqa: PLC0415

        return [to_alpaca_position(p, self.asset_info(p.symbol_id)) for p in self.positions()]

    def alpaca_position(self, symbol: str | int) -> dict[str, object] | None:
        """One symbol as ``GET /v2/positions/{symbol}`` would show it; None when flat."""
        from engine.risk.alpaca_positions import to_alpaca_position  # noqa: PLC0415

        p = self.position(symbol)
        return to_alpaca_position(p, self.asset_info(p.symbol_id)) if p.qty else None

    def __repr__(self) -> str:
        return (f"PnlTracker({self._known} symbols, {self.open_positions} open, "
                f"realized={self.realized_pnl:.2f}, fees={self.fees:.2f})")

    # --- internals -------------------------------------------------------------------------------------
    def _require(self, symbol: str | int) -> int:
        sid = self.symbol_id(symbol)
        if not 0 <= sid < self._known:
            raise KeyError(f"unknown symbol: {symbol!r}")
        return sid

    def _reserve_seen(self, incoming: int) -> None:
        # keep the id set at most half full so probes stay short; grow here, never inside a kernel
        needed = 2 * (int(self.cnt[book.C_N_SEEN]) + incoming)
        if needed <= self.seen.size:
            return
        size = self.seen.size
        while size < 2 * needed:
            size *= 2
        grown = np.zeros(size, dtype=np.int64)
        book.rehash_seen(self.seen, grown)
        self.seen = grown

    def _grow(self, n: int) -> None:
        old = self.st.shape[0]
        st = np.zeros((n, book.N_FLOAT_FIELDS), dtype=np.float64)
        st[:, book.F_MARK] = np.nan
        st[:, book.F_LASTDAY_PRICE] = np.nan
        st[:old] = self.st
        ix = np.zeros((n, book.N_INT_FIELDS), dtype=np.int64)
        ix[:, book.I_ACTIVE_SLOT] = -1
        ix[:old] = self.ix
        active = np.zeros(n, dtype=np.int64)
        active[:old] = self.active
        self.st, self.ix, self.active = st, ix, active
        for listener in self._resize_listeners:
            listener()

    def on_resize(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the state arrays are replaced by larger ones (symbols added
        beyond the capacity), so a holder of array references can re-bind them."""
        self._resize_listeners.append(listener)

    def _drop_total(self) -> int:
        base = book.C_FILL_STATUS
        return int(self.cnt[base : base + N_FILL_STATUSES].sum() - self.cnt[base + FILL_APPLIED])

    def _log_drops(self, status: np.ndarray) -> None:
        counts = np.bincount(status, minlength=N_FILL_STATUSES)
        bad = {FILL_STATUS_NAMES[k]: int(c) for k, c in enumerate(counts)
               if c and k not in (FILL_APPLIED, FILL_DUPLICATE)}
        if counts[FILL_DUPLICATE]:
            log.info("ignored %d duplicate fill(s) (execution id seen before)", int(counts[FILL_DUPLICATE]))
        if bad:
            log.warning("dropped %d bad fill(s): %s", sum(bad.values()), bad)


def _float(value: object) -> float:
    """A float for the kernels; anything unconvertible becomes NaN so the kernel refuses it."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
