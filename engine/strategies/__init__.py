"""Strategies for the live engine, and loading one by dotted path.

``load_strategy("engine.strategies.MovingAverageRsi", {"fast": 5})`` imports the class and builds it
with the parameters; any class with the ``Strategy`` handlers works (``package.module.ClassName``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from engine.errors import InputError
from engine.strategies.base import (
    BarClose,
    CancelIntent,
    CrossSection,
    Fill,
    Intent,
    OpenOrder,
    OrderIntent,
    Strategy,
    StrategyContext,
)
from engine.strategies.ma_rsi import MovingAverageRsi
from engine.strategies.market_maker import MidPriceMarketMaker

#: short names accepted wherever a dotted path is
ALIASES = {
    "ma_rsi": "engine.strategies.MovingAverageRsi",
    "market_maker": "engine.strategies.MidPriceMarketMaker",
    "mm": "engine.strategies.MidPriceMarketMaker",
}


def load_strategy(path: str, params: Mapping[str, object] | None = None) -> Strategy:
    """Import ``package.module.ClassName`` (or a short alias) and instantiate it with ``params``."""
    dotted = ALIASES.get(path, path)
    module_name, _, class_name = dotted.rpartition(".")
    if not module_name or not class_name:
        raise InputError(f"strategy must be a dotted path like 'package.module.ClassName', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import strategy module {module_name!r}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise InputError(f"module {module_name!r} has no strategy class {class_name!r}")
    missing = [h for h in ("on_book", "on_bar", "on_fill") if not callable(getattr(cls, h, None))]
    if missing:
        raise InputError(f"{dotted} is not a strategy: missing {', '.join(missing)}")
    try:
        return cls(**dict(params or {}))
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad parameters for strategy {dotted}: {exc}") from None


__all__ = [
    "ALIASES",
    "BarClose",
    "CancelIntent",
    "CrossSection",
    "Fill",
    "Intent",
    "MidPriceMarketMaker",
    "MovingAverageRsi",
    "OpenOrder",
    "OrderIntent",
    "Strategy",
    "StrategyContext",
    "load_strategy",
]
