"""Lottery ticket rewinding (IMP with weight rewinding), as in Frankle et al. and open_lth.

Level 0 trains the dense network and keeps the weights at the rewind point k. Level L prunes a fraction
of the remaining weights by magnitude (from the end of level L-1), resets the survivors to their values
at k, and trains from step k to the end. Rewind ``0it`` is classic IMP (reset to initialization).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import PracError
from ..io import atomic_path, state_to_cpu
from ..masks import TicketMask, count_to_prune
from ..rewind import RewindPoint, resolve_rewind_step
from ..schedule_check import check_ltr_schedule, prunable_sizes
from .base import LevelPlan, StrategyOptions, TicketStrategy
from .registry import register


def rewind_start(info: dict, schedule) -> int:
    """The step a level resumes at: the rewind step, scaled when the level's schedule is shorter or longer
    than level 0's (a level trained on fewer examples resumes at the same fraction of its schedule)."""
    if schedule.total_steps == info["total_steps"]:
        return info["step"]
    return round(info["step"] * schedule.total_steps / info["total_steps"])


@dataclass
class LTROptions(StrategyOptions):
    levels: int = 8
    fraction: float = 0.2
    scope: Literal["global", "layer"] = "global"
    include: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    rewind: str = "0it"
    rewind_optimizer: bool = False

    def __post_init__(self):
        if self.levels < 0:
            raise PracError(f"ticket.levels = {self.levels} must be 0 or more")
        count_to_prune(self.fraction, 1)  # raises for a fraction outside (0, 1)
        RewindPoint.parse(self.rewind)


@register
class LotteryTicketRewinding(TicketStrategy):
    name = "ltr"
    Options = LTROptions

    @property
    def num_levels(self) -> int:
        return self.options.levels

    def check_rewind(self, first_schedule) -> None:
        resolve_rewind_step(RewindPoint.parse(self.options.rewind), first_schedule.steps_per_epoch, first_schedule.total_steps)

    def check(self, first_schedule, model) -> None:
        """The rewind point fits level 0, and no planned level prunes nothing or leaves nothing (counts from sizes)."""
        self.check_rewind(first_schedule)
        check_ltr_schedule(prunable_sizes(model, self.options.include, self.options.ignore), self.options.fraction,
                           self.options.scope, self.options.levels)

    def plan_level(self, level, model, schedule) -> LevelPlan:
        opts, run_dir = self.options, self.run.run_dir
        if level == 0:
            mask = TicketMask.dense(model, opts.include, opts.ignore)
            point = RewindPoint.parse(opts.rewind)
            step = resolve_rewind_step(point, schedule.steps_per_epoch, schedule.total_steps)
            if self.run.is_main_process:
                run_dir.save_state("init", state_to_cpu(model))
            info = {"point": str(point), "step": step, "total_steps": schedule.total_steps, "steps_per_epoch": schedule.steps_per_epoch}

            def capture(unwrapped, optimizer):
                if not self.run.is_main_process:
                    return
                run_dir.save_state("rewind", state_to_cpu(unwrapped), info)
                if opts.rewind_optimizer:
                    with atomic_path(run_dir.path / "rewind_optimizer.pt") as tmp:
                        torch.save(optimizer.state_dict(), tmp)

            return LevelPlan(mask, 0, step_callbacks={step: capture}, info={"rewind_step": step})

        previous = TicketMask.load(run_dir.level_dir(level - 1) / "mask.safetensors", model)
        mask = previous.prune_magnitude(model, opts.fraction, opts.scope)
        weights, info = run_dir.load_state("rewind")
        model.load_state_dict(weights)
        start = rewind_start(info, schedule)
        optimizer_state = None
        if opts.rewind_optimizer:
            optimizer_state = torch.load(run_dir.path / "rewind_optimizer.pt", weights_only=True)
        return LevelPlan(mask, start, optimizer_state=optimizer_state, info={"rewind_step": start})
