"""Symbol names to stable integer ids, the key every event array carries instead of a string.

Ids are dense and assigned in first-seen order, so they index per-symbol numpy state directly and
never change for the life of the map. In ``"add"`` mode an unseen symbol is given the next id; in
``"strict"`` mode it is refused (``UNKNOWN_SYMBOL``) and the caller counts the message as a drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

UNKNOWN_SYMBOL = -1  #: id returned for a symbol that a strict map does not know
MAX_SYMBOL_BYTES = 32

SymbolMode = Literal["add", "strict"]


class SymbolMap:
    """A two-way map between symbol names and dense integer ids (0, 1, 2, ...)."""

    __slots__ = ("_ids", "_names", "mode", "max_symbols", "_slots", "_bytes", "_lens")

    def __init__(self, symbols: Iterable[str] = (), mode: SymbolMode = "add", max_symbols: int = 1_000_000) -> None:
        if mode not in ("add", "strict"):
            raise ValueError(f"symbol map mode must be 'add' or 'strict', not {mode!r}")
        self.mode: SymbolMode = mode
        self.max_symbols = max_symbols
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        # The same map as an open-addressing hash table of name bytes, for compiled decoders.
        self._slots = np.full(64, -1, dtype=np.int32)
        self._bytes = np.zeros((16, MAX_SYMBOL_BYTES), dtype=np.uint8)
        self._lens = np.zeros(16, dtype=np.int32)
        for name in symbols:
            self.add(name)

    def add(self, name: str) -> int:
        """The id of ``name``, assigning the next one if it is new (in either mode)."""
        sid = self._ids.get(name)
        if sid is not None:
            return sid
        if not isinstance(name, str) or not name.strip() or len(name) > 32:
            raise ValueError(f"not a symbol name: {name!r}")
        if len(self._names) >= self.max_symbols:
            raise ValueError(f"symbol map is full ({self.max_symbols} symbols)")
        sid = len(self._names)
        self._ids[name] = sid
        self._names.append(name)
        self._index(sid, name)
        return sid

    def _index(self, sid: int, name: str) -> None:
        raw = name.encode("utf-8")
        if len(raw) > MAX_SYMBOL_BYTES:
            return  # compiled decoders will not find it and fall back to the Python path
        if sid >= len(self._lens):
            grow = max(2 * len(self._lens), sid + 1)
            self._bytes = np.concatenate([self._bytes, np.zeros((grow - len(self._lens), MAX_SYMBOL_BYTES), np.uint8)])
            self._lens = np.concatenate([self._lens, np.zeros(grow - len(self._lens), np.int32)])
        self._bytes[sid, : len(raw)] = np.frombuffer(raw, np.uint8)
        self._lens[sid] = len(raw)
        if 2 * (len(self._names)) > len(self._slots):
            self._rehash(2 * len(self._slots))
        else:
            self._place(sid, raw)

    def _place(self, sid: int, raw: bytes) -> None:
        from engine.marketdata._fastparse import symbol_hash  # noqa: PLC0415 - avoid a cycle at import

        mask = len(self._slots) - 1
        slot = symbol_hash(raw) & mask
        while self._slots[slot] >= 0:
            slot = (slot + 1) & mask
        self._slots[slot] = sid

    def _rehash(self, size: int) -> None:
        self._slots = np.full(size, -1, dtype=np.int32)
        for sid, name in enumerate(self._names):
            raw = name.encode("utf-8")
            if len(raw) <= MAX_SYMBOL_BYTES:
                self._place(sid, raw)

    @property
    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slots, name bytes, name lengths): the hash table compiled decoders look names up in."""
        return self._slots, self._bytes, self._lens

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
