"""What the risk and P&L state needs from a symbol map, and the map it makes when given only names.

The hot path takes ids; names are for the convenience methods and for output (Alpaca JSON). The
tracker accepts any map with ``get(name) -> id | None``, ``add(name) -> id``, ``name(id) -> str`` and
``len()``, so the engine hands it its market-data ``SymbolMap`` and every layer shares one set of ids.
Given a list of names instead, the tracker makes its own ``SymbolMap`` of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from engine.marketdata.symbols import SymbolMap


@runtime_checkable
class SymbolLookup(Protocol):
    """What the tracker needs from a symbol map (``engine.marketdata.symbols.SymbolMap`` fits)."""

    def get(self, name: str) -> int | None: ...

    def add(self, name: str) -> int: ...

    def name(self, symbol_id: int) -> str: ...

    def __len__(self) -> int: ...


def as_symbol_lookup(symbols: SymbolLookup | Iterable[str] | None) -> SymbolLookup:
    """A shared map as it is; a list of names becomes a new ``SymbolMap`` (ids in list order)."""
    if symbols is None:
        return SymbolMap()
    if isinstance(symbols, SymbolLookup) and not isinstance(symbols, (str, list, tuple)):
        return symbols
    if isinstance(symbols, str):
        raise ValueError("pass a list of symbol names, not a single string")
    return SymbolMap(symbols)
