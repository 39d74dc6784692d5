"""Structured (channel-level) lottery tickets: pruning with torch-pruning, history replay, export and loading."""

from .ticket import export_ticket, load_structured_ticket

__all__ = ["export_ticket", "load_structured_ticket"]
