"""Concrete Ticket Search as a ticket strategy: level 0 (the engine's) trains the dense network and keeps the
rewind point; level i searches the mask of density ``densities[i-1]`` at the rewind point (or at
initialization) and trains that ticket from there to the end. Levels are independent of each other."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

from ...errors import PracError
from ...tickets.masks import prunable_parameter_names
from ...tickets.checks import check_layer_floor, prunable_sizes
from .checks import check_cts_densities, cts_keep_count
from .search import ConcreteSearchConfig, concrete_ticket_search
from ..base import LevelPlan, RewindOptionsDeclared, StrategyOptions, TicketStrategy, TicketTraits


@dataclass
class CTSOptions(StrategyOptions):
    densities: list[float] = field(default_factory=lambda: [0.05, 0.02, 0.01, 0.005])
    include: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    rewind: str = "1ep"
    rewind_optimizer: bool = False
    search_at: Literal["rewind", "init"] = "rewind"
    objective: Literal["reverse_kl", "forward_kl", "cross_entropy"] = "reverse_kl"
    loss_scale: float = 100.0
    temperature: float = 2.0 / 3.0
    final_temperature: Optional[float] = None
    search_epochs: float = 20.0
    search_steps: Optional[int] = None
    search_batch_size: int = 512
    lr: float = 0.1
    decay_at: float = 0.88
    target_factor: float = 1.1
    sparsity_control: Literal["gradbalance", "lagrangian"] = "gradbalance"
    dual_lr: float = 0.01
    concrete_form: Literal["paper", "reference_code"] = "paper"
    batchnorm: Literal["batch", "running"] = "batch"
    min_per_layer: int = 0

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
        ConcreteSearchConfig(self.densities[0], 1, objective=self.objective, dual_lr=self.dual_lr, concrete_form=self.concrete_form,
                             batchnorm=self.batchnorm)  # validates them


class ConcreteTicketSearch(RewindOptionsDeclared, TicketStrategy):
    name = "cts"
    Options = CTSOptions
    traits = TicketTraits(levels_option=None, independent_levels=True, analyses=frozenset({"sanity", "stability"}),
                          not_applicable="its levels are searched at the rewind point, not pruned from the previous level on a subset")

    @property
    def num_levels(self) -> int:
        return len(self.options.densities)


    def start_point(self) -> str:
        return self.options.search_at

    def rewinds_optimizer(self) -> bool:
        return self.options.rewind_optimizer and self.options.search_at == "rewind"

    def check(self, model, first_schedule) -> None:
        """Every density keeps some but not all of the model's prunable weights."""
        opts = self.options
        sizes = prunable_sizes(model, opts.include, opts.ignore)
        total = sum(sizes.values())
        check_cts_densities(opts.densities, total)
        if opts.min_per_layer:
            check_layer_floor(sizes, opts.min_per_layer, cts_keep_count(min(opts.densities), total), f"density {min(opts.densities)!r}")

    def _search_batches(self, batch_size: int, seed: int):
        context = self.context

        def batches(epoch: int):
            order = torch.randperm(context.train_size, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            for images, labels, _ in context.train_batches(order, batch_size):  # un-augmented
                yield images, labels

        return batches

    def plan(self, level, previous, start, resumed_mask=None) -> LevelPlan:
        """Search the mask of density ``densities[level-1]`` on the start weights (the previous level is not used);
        a resumed level keeps the mask its checkpoint trained with instead of searching again."""
        opts, context = self.options, self.context
        density = opts.densities[level - 1]
        plan = LevelPlan(None, start.step, weights=start.weights, optimizer_state=start.optimizer_state,  # type: ignore[arg-type]
                         info={"rewind_step": start.step, "cts_target_density": density})
        if resumed_mask is not None:
            plan.mask = resumed_mask
            return plan
        model = previous.model
        model.load_state_dict(start.weights)
        names = prunable_parameter_names(model, opts.include, opts.ignore)
        batch_size = opts.search_batch_size
        steps = opts.search_steps or max(1, round(opts.search_epochs * -(-context.train_size // batch_size)))
        cfg = ConcreteSearchConfig(
            density, steps, lr=opts.lr, decay_at=opts.decay_at, temperature=opts.temperature, final_temperature=opts.final_temperature,
            objective=opts.objective, loss_scale=opts.loss_scale, target_factor=opts.target_factor,
            sparsity_control=opts.sparsity_control, dual_lr=opts.dual_lr, concrete_form=opts.concrete_form, batchnorm=opts.batchnorm,
            min_per_layer=opts.min_per_layer, seed=context.seed + level,
        )
        with context.autocast():
            result = concrete_ticket_search(model, names, self._search_batches(batch_size, cfg.seed), cfg, context.reduce_mean)
        plan.mask = result.mask
        plan.info.update({
            "cts_batchnorm": opts.batchnorm, "cts_expected_density": result.expected_density,
            "cts_search_steps": result.steps, "cts_search_forward_passes": result.forward_passes,
            "cts_search_backward_passes": result.backward_passes, "cts_search_wall_time_s": result.wall_time,
            "cts_search_history": result.history,
        })
        return plan
