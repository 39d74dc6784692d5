"""A level's length and learning rate: the step budget of a level, and the learning rate as a pure function of
the optimizer step.

A pure function makes rewinding exact: training resumed at step k gets the learning rate it had at step k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..data.sources import num_batches
from ..errors import PracError

SCHEDULES = ("constant", "step", "cosine")


def lr_factor(
    step: int,
    total_steps: int,
    steps_per_epoch: float,
    schedule: str = "constant",
    milestones: tuple[int, ...] | list[int] = (),
    gamma: float = 0.1,
    warmup_steps: int = 0,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based); milestones in epochs of ``steps_per_epoch`` steps."""
    if warmup_steps and step < warmup_steps:
        warm = (step + 1) / warmup_steps
    else:
        warm = 1.0
    if schedule == "constant":
        factor = 1.0
    elif schedule == "step":
        passed = sum(1 for m in milestones if step >= m * steps_per_epoch)
        factor = gamma**passed
    elif schedule == "cosine":
        start = warmup_steps
        progress = min(1.0, max(0.0, (step - start) / max(1, total_steps - start)))
        factor = min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return warm * factor


def check_batch_size(batch_size: int, examples: int, num_processes: int = 1) -> None:
    """Refuse a training batch larger than the examples level 0 trains on, or one that leaves a process an empty
    share of a batch (a batch is split between processes; an empty share makes a NaN loss late in the epoch)."""
    if batch_size > examples:
        raise PracError(
            f"train.batch_size = {batch_size:,} is larger than the {examples:,} training examples level 0 trains on; "
            f"allowed: 1 to {examples:,}"
        )
    if num_processes > 1:
        if batch_size < num_processes:
            raise PracError(
                f"train.batch_size = {batch_size} is smaller than the {num_processes} processes, each of which needs "
                f"examples in every batch; allowed: {num_processes} to {examples:,}"
            )
        last = examples % batch_size
        if 0 < last < num_processes:
            raise PracError(
                f"train.batch_size = {batch_size:,} leaves a last batch of {last} of the {examples:,} training examples "
                f"for {num_processes} processes, so one would get none; choose a batch size whose last batch is full "
                f"or holds at least {num_processes}"
            )


BUDGETS = ("linear", "quadratic", "none")


@dataclass
class LevelSchedule:
    """Length of one level's training.

    ``steps_per_epoch`` is one pass over the level's examples; the learning-rate schedule spans
    ``total_steps`` as ``epochs`` schedule-epochs, so milestones fall at the same fraction of every level.
    """

    steps_per_epoch: int
    total_steps: int
    epochs: float

    @property
    def schedule_epoch_steps(self) -> float:
        return self.total_steps / self.epochs

    @classmethod
    def for_examples(cls, num_examples: int, batch_size: int, epochs: int, full_examples: Optional[int] = None,
                     budget: str = "linear") -> "LevelSchedule":
        """Training on ``num_examples`` of ``full_examples``, the step budget scaled by their ratio.

        ``linear`` (PrAC paper): the same epochs over fewer examples, steps scale with |P|/|D|;
        ``quadratic`` (PrAC reference code): the epochs shrink too, steps scale with (|P|/|D|)^2;
        ``none``: the full-data step count, i.e. more passes over the subset.
        """
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget scaling {budget!r}")
        spe = num_batches(num_examples, batch_size)
        full = full_examples or num_examples
        if budget == "none":
            total = num_batches(full, batch_size) * epochs
        elif budget == "quadratic":
            total = max(1, round(spe * epochs * num_examples / full))
        else:
            total = spe * epochs
        return cls(spe, total, epochs)
