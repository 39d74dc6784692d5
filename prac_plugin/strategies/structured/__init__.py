"""Structured (channel-level) lottery tickets: pruning with torch-pruning, history replay, export and loading.

Importing the package imports no torch: its declarations (``options.py``) are read without it, and
`export_ticket` / `load_structured_ticket` load ``ticket.py`` on first use.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("export_ticket", "load_structured_ticket"):
        from . import ticket

        return getattr(ticket, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["export_ticket", "load_structured_ticket"]
