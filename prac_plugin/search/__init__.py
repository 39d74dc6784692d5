"""Mask search near initialization: Concrete Ticket Search."""

from .concrete import ConcreteSearchConfig, GradBalance, Lagrangian, concrete_ticket_search, divergence

__all__ = ["ConcreteSearchConfig", "GradBalance", "Lagrangian", "concrete_ticket_search", "divergence"]
