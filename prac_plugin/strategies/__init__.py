"""Strategies: ticket search (which weights) and data selection (which examples), one folder per method.

The contract every strategy implements is in ``base.py`` (the interfaces, which import torch) and
``declarations.py`` (what a strategy declares about itself, readable without torch); built-ins and plugins alike
are found by name through the registry (``prac_plugin.registry``) from their entry points, so nothing here
imports a method, and importing this package imports no torch (its names load on first use).
"""

from __future__ import annotations

from ..lazy import lazy_names
from ..registry import ENTRY_POINT_GROUP, available, get, register

_EXPORTS = {
    "DataSelectionStrategy": ".base", "LevelPlan": ".base", "PreviousLevel": ".base", "SelectionContext": ".base",
    "StartPoint": ".base", "TicketContext": ".base", "TicketStrategy": ".base",
    "Column": ".declarations", "Starter": ".declarations", "StrategyOptions": ".declarations",
    "StrategySpec": ".declarations", "TicketTraits": ".declarations", "option": ".declarations",
}


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS) + ["ENTRY_POINT_GROUP", "available", "get", "register"]
