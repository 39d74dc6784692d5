"""Concrete Ticket Search as a ticket strategy: level 0 trains the dense network (and keeps the rewind
point, as LTR does); level i searches the mask of density ``densities[i-1]`` at the rewind point (or at
initialization) and trains that ticket from there to the end. Levels are independent of each other."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

from ..errors import PracError
from ..masks import prunable_parameter_names
from ..schedule_check import check_cts_densities, prunable_sizes
from ..search.concrete import ConcreteSearchConfig, concrete_ticket_search
from .base import LevelPlan, StrategyOptions
from .ltr import LotteryTicketRewinding, rewind_start
from .registry import register


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
        ConcreteSearchConfig(self.densities[0], 1, objective=self.objective, dual_lr=self.dual_lr, concrete_form=self.concrete_form)  # validates them


@register
class ConcreteTicketSearch(LotteryTicketRewinding):
    name = "cts"
    Options = CTSOptions

    @property
    def num_levels(self) -> int:
        return len(self.options.densities)

    def check(self, first_schedule, model) -> None:
        """The rewind point fits level 0, and every density keeps some but not all of the model's prunable weights."""
        self.check_rewind(first_schedule)
        check_cts_densities(self.options.densities, sum(prunable_sizes(model, self.options.include, self.options.ignore).values()))

    def _search_batches(self, batch_size: int, seed: int):
        source, n = self.run.trainer.sources["train"], len(self.run.data.train)

        def batches(epoch: int):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            for images, labels, _ in source.batches(order, batch_size, training=False):  # un-augmented
                yield images, labels

        return batches

    def plan_level(self, level, model, schedule) -> LevelPlan:
        if level == 0:
            return super().plan_level(0, model, schedule)
        opts, run = self.options, self.run
        density = opts.densities[level - 1]
        weights, info = run.run_dir.load_state("rewind" if opts.search_at == "rewind" else "init")
        model.load_state_dict(weights)
        start = rewind_start(info, schedule) if opts.search_at == "rewind" else 0
        names = prunable_parameter_names(model, opts.include, opts.ignore)
        batch_size = opts.search_batch_size
        steps = opts.search_steps or max(1, round(opts.search_epochs * -(-len(run.data.train) // batch_size)))
        cfg = ConcreteSearchConfig(
            density, steps, lr=opts.lr, decay_at=opts.decay_at, temperature=opts.temperature, final_temperature=opts.final_temperature,
            objective=opts.objective, loss_scale=opts.loss_scale, target_factor=opts.target_factor,
            sparsity_control=opts.sparsity_control, dual_lr=opts.dual_lr, concrete_form=opts.concrete_form, seed=run.recipe.train.seed + level,
        )
        accelerator = run.accelerator
        reduce = (lambda g: accelerator.reduce(g, "mean")) if accelerator.num_processes > 1 else (lambda g: g)
        with accelerator.autocast():
            result = concrete_ticket_search(model, names, self._search_batches(batch_size, cfg.seed), cfg, reduce)
        optimizer_state = None
        if opts.rewind_optimizer and opts.search_at == "rewind":
            optimizer_state = torch.load(run.run_dir.path / "rewind_optimizer.pt", weights_only=True)
        return LevelPlan(
            result.mask, start, optimizer_state=optimizer_state,
            info={
                "rewind_step": start, "cts_target_density": density, "cts_expected_density": result.expected_density,
                "cts_search_steps": result.steps, "cts_search_forward_passes": result.forward_passes,
                "cts_search_backward_passes": result.backward_passes, "cts_search_wall_time_s": result.wall_time,
                "cts_search_history": result.history,
            },
        )
