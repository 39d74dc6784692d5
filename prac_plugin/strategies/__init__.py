"""Strategies: ticket search (which weights) and data selection (which examples), looked up by name."""

from . import cts, data_selection, ltr, prac, structured  # noqa: F401  (register the built-ins)
from .base import DataSelectionStrategy, LevelPlan, StrategyOptions, TicketStrategy
from .registry import ENTRY_POINT_GROUP, available, get, register

__all__ = [
    "DataSelectionStrategy", "LevelPlan", "StrategyOptions", "TicketStrategy", "ENTRY_POINT_GROUP", "available", "get", "register",
]
