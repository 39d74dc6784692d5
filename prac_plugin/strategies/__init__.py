"""Strategies: ticket search (which weights) and data selection (which examples), one folder per method.

The contract every strategy implements is in ``base.py``; built-ins and plugins alike are found by name through
the registry (``prac_plugin.registry``) from their entry points, so nothing here imports a method.
"""

from ..registry import ENTRY_POINT_GROUP, available, get, register
from .base import (
    DataSelectionStrategy, LevelPlan, PreviousLevel, SelectionContext, StartPoint, StrategyOptions, TicketContext,
    TicketStrategy, TicketTraits,
)

__all__ = [
    "DataSelectionStrategy", "LevelPlan", "PreviousLevel", "SelectionContext", "StartPoint", "StrategyOptions", "TicketContext",
    "TicketStrategy", "TicketTraits", "ENTRY_POINT_GROUP", "available", "get", "register",
]
