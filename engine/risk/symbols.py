"""Symbol names to the integer ids that index the risk and P&L state arrays.

The hot path takes ids; names are for the convenience methods and for output (Alpaca JSON). The
tracker accepts any map with ``get(name) -> id | None``, ``add(name) -> id``, ``name(id) -> str`` and
``len()``, so the engine can hand it the market-data ``SymbolMap`` and every layer shares one set of
ids. ``SymbolIndex`` is the small stand-alone version used when no shared map is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable


@runtime_checkable
class SymbolLookup(Protocol):
    """What the tracker needs from a symbol map (``engine.marketdata.symbols.SymbolMap`` fits)."""

    def get(self, name: str) -> int | None: ...

    def add(self, name: str) -> int: ...

    def name(self, symbol_id: int) -> str: ...

    def __len__(self) -> int: ...


class SymbolIndex:
    """Dense ids 0, 1, 2, ... in the order names are added; an id never changes."""

    __slots__ = ("_ids", "_names")

    def __init__(self, symbols: Iterable[str] = ()) -> None:
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        for name in symbols:
            self.add(name)

    def add(self, name: str) -> int:
        """The id of ``name``, assigning the next free one if it is new."""
        sid = self._ids.get(name)
        if sid is not None:
            return sid
        if not isinstance(name, str) or not name.strip() or len(name) > 32:
            raise ValueError(f"not a symbol name: {name!r}")
        sid = len(self._names)
        self._ids[name] = sid
        self._names.append(name)
        return sid

    def get(self, name: str) -> int | None:
        return self._ids.get(name)

    def name(self, symbol_id: int) -> str:
        if 0 <= symbol_id < len(self._names):
            return self._names[symbol_id]
        raise KeyError(symbol_id)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __repr__(self) -> str:
        return f"SymbolIndex({len(self._names)} symbols)"


def as_symbol_lookup(symbols: SymbolLookup | Iterable[str] | None) -> SymbolLookup:
    """A shared map as it is; a list of names becomes a new ``SymbolIndex``."""
    if symbols is None:
        return SymbolIndex()
    if isinstance(symbols, SymbolLookup) and not isinstance(symbols, (str, list, tuple)):
        return symbols
    if isinstance(symbols, str):
        raise ValueError("pass a list of symbol names, not a single string")
    return SymbolIndex(symbols)
