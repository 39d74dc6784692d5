"""Concrete Ticket Search: a whole mask searched near initialization (strategy, search, checks)."""
