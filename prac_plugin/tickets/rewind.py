"""Rewind points (``0it``, ``500it``, ``2ep``, ``1ep50it``) and where they fall in a training schedule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PracError

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
