"""Rewind points (``0it``, ``500it``, ``2ep``, ``1ep50it``), where they fall in a training schedule, and the one rule
for capturing one: what `prac run`'s level 0 and the timm hook write, and what a pruned level reads back."""

from __future__ import annotations

import re
from dataclasses import dataclass

from typing import TYPE_CHECKING, Any, Optional

from ..errors import PracError
from ..rundir.files import state_to_cpu

if TYPE_CHECKING:
    import torch

    from ..rundir.folder import RunDirectory

_PATTERN = re.compile(r"^(?:(\d+)ep)?(?:(\d+)it)?$")


@dataclass(frozen=True)
class RewindPoint:
    """A position in training, as epochs plus iterations (optimizer steps)."""

    epochs: int = 0
    iterations: int = 0

    @classmethod
    def parse(cls, text: str | int) -> "RewindPoint":
        text = str(text).strip()
        match = _PATTERN.match(text)
        if not text or not match or (match.group(1) is None and match.group(2) is None):
            raise PracError(f"rewind point {text!r} is not understood; write e.g. 0it, 500it, 2ep or 1ep50it")
        return cls(int(match.group(1) or 0), int(match.group(2) or 0))

    def to_step(self, steps_per_epoch: int) -> int:
        return self.epochs * steps_per_epoch + self.iterations

    def __str__(self) -> str:
        if self.epochs and self.iterations:
            return f"{self.epochs}ep{self.iterations}it"
        return f"{self.epochs}ep" if self.epochs else f"{self.iterations}it"


def resolve_rewind_step(point: RewindPoint, steps_per_epoch: int, total_steps: int) -> int:
    """The optimizer step of ``point``; a point at or past the end of training is an error."""
    step = point.to_step(steps_per_epoch)
    if step >= total_steps:
        raise PracError(
            f"rewind point {point} is step {step}, beyond the training length of {total_steps} steps "
            f"({steps_per_epoch} steps per epoch); choose a point before the end"
        )
    return step


def rewind_record(point: RewindPoint, step: int, total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """What ``rewind.json`` holds: the point as written, its step, and the schedule it was taken in (a level with a
    shorter or longer schedule resumes at the same fraction of it: `rewind_start`)."""
    return {"point": str(point), "step": step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch}


def save_rewind_point(run_dir: "RunDirectory", model: "torch.nn.Module", record: dict[str, Any],
                      optimizer: Optional["torch.optim.Optimizer"] = None) -> None:
    """Capture the rewind point: the model's weights and buffers (``rewind.safetensors``) with `rewind_record`
    (``rewind.json``) and, when pruned levels rewind it too, the optimizer's state. Called by one process (global
    rank 0: the other ranks hold the same weights), as training passes the point."""
    run_dir.save_state("rewind", state_to_cpu(model), record)
    if optimizer is not None:
        run_dir.save_rewind_optimizer(optimizer.state_dict())


def rewind_start(record: dict[str, Any], total_steps: int) -> int:
    """The step a pruned level of ``total_steps`` resumes at: the recorded rewind step, scaled when the level's
    schedule is shorter or longer than the one the point was taken in (fewer examples: the same fraction)."""
    if total_steps == record["total_steps"]:
        return record["step"]
    return round(record["step"] * total_steps / record["total_steps"])
