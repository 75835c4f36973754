"""Symbol names to stable integer ids, the key every event array carries instead of a string.

Ids are dense and assigned in first-seen order, so they index per-symbol numpy state directly and
never change for the life of the map. In ``"add"`` mode an unseen symbol is given the next id; in
``"strict"`` mode it is refused (``UNKNOWN_SYMBOL``) and the caller counts the message as a drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

UNKNOWN_SYMBOL = -1  #: id returned for a symbol that a strict map does not know

SymbolMode = Literal["add", "strict"]


class SymbolMap:
    """A two-way map between symbol names and dense integer ids (0, 1, 2, ...)."""

    __slots__ = ("_ids", "_names", "mode", "max_symbols")

    def __init__(self, symbols: Iterable[str] = (), mode: SymbolMode = "add", max_symbols: int = 1_000_000) -> None:
        if mode not in ("add", "strict"):
            raise ValueError(f"symbol map mode must be 'add' or 'strict', not {mode!r}")
        self.mode: SymbolMode = mode
        self.max_symbols = max_symbols
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        for name in symbols:
            self.add(name)

    def add(self, name: str) -> int:
        """The id of ``name``, assigning the next one if it is new (in either mode)."""
        sid = self._ids.get(name)
        if sid is not None:
            return sid
        if not isinstance(name, str) or not name or len(name) > 32:
            raise ValueError(f"not a symbol name: {name!r}")
        if len(self._names) >= self.max_symbols:
            raise ValueError(f"symbol map is full ({self.max_symbols} symbols)")
        sid = len(self._names)
        self._ids[name] = sid
        self._names.append(name)
        return sid

    def id_of(self, name: str) -> int:
        """The id of ``name``; a new one in ``add`` mode, ``UNKNOWN_SYMBOL`` for an unseen name in ``strict`` mode."""
        sid = self._ids.get(name)
        if sid is not None:
            return sid
        if self.mode == "strict":
            return UNKNOWN_SYMBOL
        try:
            return self.add(name)
        except ValueError:
            return UNKNOWN_SYMBOL

    def get(self, name: str) -> int | None:
        """The id of a known symbol, else ``None`` (never assigns)."""
        return self._ids.get(name)

    def name(self, symbol_id: int) -> str:
        """The name behind an id; ``KeyError`` for an id this map never gave out."""
        if 0 <= symbol_id < len(self._names):
            return self._names[symbol_id]
        raise KeyError(symbol_id)

    @property
    def names(self) -> list[str]:
        """All names, indexed by id (a copy)."""
        return list(self._names)

    @property
    def lookup(self) -> dict[str, int]:
        """The name -> id dict itself, for hot loops that do their own ``.get`` (do not mutate)."""
        return self._ids

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __repr__(self) -> str:
        return f"SymbolMap({len(self._names)} symbols, mode={self.mode!r})"
