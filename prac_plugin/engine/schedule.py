"""Learning-rate schedules as pure functions of the optimizer step.

A pure function makes rewinding exact: training resumed at step k gets the learning rate it had at step k.
"""

from __future__ import annotations

import math

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
