"""Strategies: ticket search (which weights) and data selection (which examples), looked up by name."""

from . import cts, data_selection, ltr, prac, structured  # noqa: F401  (register the built-ins)
from .base import (
    DataSelectionStrategy, LevelPlan, PreviousLevel, SelectionContext, StartPoint, StrategyOptions, TicketContext,
    TicketStrategy, TicketTraits,
)
from .registry import ENTRY_POINT_GROUP, available, get, register

__all__ = [
    "DataSelectionStrategy", "LevelPlan", "PreviousLevel", "SelectionContext", "StartPoint", "StrategyOptions", "TicketContext",
    "TicketStrategy", "TicketTraits", "ENTRY_POINT_GROUP", "available", "get", "register",
]
