"""Concrete Ticket Search's declarations, readable without torch: its recipe options, help, traits and starter
recipe, and the search settings' allowed values (which the search itself checks with the same function)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from ...errors import PracError
from ..declarations import TICKET_HELP, Starter, StrategyOptions, StrategySpec, TicketTraits, option

OBJECTIVES = ("reverse_kl", "forward_kl", "cross_entropy")
CONCRETE_FORMS = ("paper", "reference_code")
SPARSITY_CONTROLS = ("gradbalance", "lagrangian")
BATCHNORM_MODES = ("batch", "running")


def check_search_settings(objective: str, sparsity_control: str, concrete_form: str, batchnorm: str, dual_lr: float) -> None:
    """Refuse a search setting outside its allowed values (the recipe's Literal types say the same to a recipe)."""
    if objective not in OBJECTIVES:
        raise PracError(f"unknown CTS objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if sparsity_control not in SPARSITY_CONTROLS:
        raise PracError(f"unknown CTS sparsity control {sparsity_control!r}; choose one of {', '.join(SPARSITY_CONTROLS)}")
    if concrete_form not in CONCRETE_FORMS:
        raise PracError(f"unknown CTS concrete_form {concrete_form!r}; choose one of {', '.join(CONCRETE_FORMS)}")
    if batchnorm not in BATCHNORM_MODES:
        raise PracError(f"unknown CTS batchnorm mode {batchnorm!r}; choose one of {', '.join(BATCHNORM_MODES)}")
    if dual_lr <= 0:
        raise PracError(f"CTS dual_lr = {dual_lr!r} must be positive")


@dataclass
class CTSOptions(StrategyOptions):
    densities: list[float] = option(default_factory=lambda: [0.05, 0.02, 0.01, 0.005],
                                    help="target densities of the tickets, each in (0, 1): one level each")
    include: list[str] = option(default_factory=list, help=TICKET_HELP["include"])
    ignore: list[str] = option(default_factory=list, help=TICKET_HELP["ignore"])
    rewind: str = option("1ep", help=TICKET_HELP["rewind"])
    rewind_optimizer: bool = option(False, help=TICKET_HELP["rewind_optimizer"])
    search_at: Literal["rewind", "init"] = option("rewind", help="search the mask at the rewind point or at initialization")
    objective: Literal["reverse_kl", "forward_kl", "cross_entropy"] = option(
        "reverse_kl", help="reverse_kl (sparse against dense outputs), forward_kl or cross_entropy")
    loss_scale: float = option(100.0, help="factor on the search objective")
    temperature: float = option(2.0 / 3.0, help="temperature of the concrete (relaxed Bernoulli) gates")
    final_temperature: Optional[float] = option(None, help="anneal the temperature to this value (null: constant)")
    search_epochs: float = option(20.0, help="length of the search in epochs at search_batch_size (the authors: 20, a length of "
                                        "its own, not scaled with training)")
    search_steps: Optional[int] = option(None, help="length of the search in steps (overrides search_epochs)")
    search_batch_size: int = option(512, help="batch of the search")
    lr: float = option(0.1, help="Adam learning rate of the mask logits")
    decay_at: float = option(0.88, help="share of the search after which the search's lr drops x0.1")
    target_factor: float = option(1.1, help="GradBalance aims at this factor times the target number of weights")
    sparsity_control: Literal["gradbalance", "lagrangian"] = option(
        "gradbalance", help="gradbalance (the paper's) or lagrangian (dual ascent)")
    dual_lr: float = option(0.01, help="step of the Lagrangian's dual variable")
    concrete_form: Literal["paper", "reference_code"] = option(
        "paper", help="paper: sigmoid((logit + noise) / T); reference_code: sigmoid(logit + noise / T)")
    batchnorm: Literal["batch", "running"] = option(
        "batch", absent_means="running",  # an old CTS run searched with frozen running statistics
        help="BatchNorm during the search: batch (the authors': the current batch's statistics) or running (frozen; not the "
             "authors' method)")
    min_per_layer: int = option(0, help=TICKET_HELP["min_per_layer"], absent_means=0)

    def __post_init__(self):
        if not self.densities:
            raise PracError("ticket.densities is empty; give target densities in (0, 1), e.g. [0.05, 0.01]")
        bad = [d for d in self.densities if not 0.0 < d < 1.0]
        if bad:
            raise PracError(f"ticket.densities entry {bad[0]!r} is outside (0, 1)")
        if self.search_steps is None and self.search_epochs <= 0:
            raise PracError("ticket.search_epochs must be positive (or set ticket.search_steps)")
        if self.search_steps is not None and self.search_steps < 1:
            raise PracError(f"ticket.search_steps = {self.search_steps} must be at least 1 (or null to use ticket.search_epochs)")
        if self.search_batch_size < 1:
            raise PracError(f"ticket.search_batch_size = {self.search_batch_size} must be at least 1")
        for key in ("lr", "temperature", "loss_scale"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise PracError(f"ticket.{key} = {value} must be a positive finite number")
        if self.final_temperature is not None and not (math.isfinite(self.final_temperature) and self.final_temperature > 0):
            raise PracError(f"ticket.final_temperature = {self.final_temperature} must be a positive finite number (or null)")
        if self.min_per_layer < 0:
            raise PracError(f"ticket.min_per_layer = {self.min_per_layer} must be 0 or more")
        check_search_settings(self.objective, self.sparsity_control, self.concrete_form, self.batchnorm, self.dual_lr)


CTS = StrategySpec(
    "ticket", "cts", CTSOptions, "prac_plugin.strategies.cts.strategy:ConcreteTicketSearch",
    traits=TicketTraits(levels_option=None, independent_levels=True, analyses=frozenset({"sanity", "stability"}),
                        not_applicable="its levels are searched at the rewind point, not pruned from the previous level on a subset"),
    description="Concrete Ticket Search: each level's mask searched at the rewind point for one target density, levels independent",
    starter=Starter(
        {"densities": [0.05, 0.02, 0.01], "ignore": ["fc"], "rewind": "1ep", "search_at": "rewind", "objective": "reverse_kl",
         "search_epochs": 20, "search_batch_size": 512},
        title="Concrete Ticket Search: one ticket per target density, searched at the rewind point",
    ),
)
