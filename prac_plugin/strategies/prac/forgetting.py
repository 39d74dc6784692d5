"""Forgetting statistics (Toneva et al.), as PrAC uses them to find examples hard to memorize (CET).

For every example of the training split the tracker keeps, on the device, whether its last training-mode
prediction was correct, whether it was ever correct, and how many correct-to-incorrect transitions it had.

On the training step ``update`` only writes each example's correctness into an epoch buffer (one index
write, no host synchronization, no Python loop per example); ``end_epoch`` folds the buffer into the
counts with a handful of whole-split ops. An example is presented at most once per epoch, so nothing is
lost; queries fold any pending epoch first.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..capturable import capturable

_PENDING = -1  # not presented since the last fold


class ForgettingTracker:
    """Per-example forgetting counts over the training forward passes of one round."""

    def __init__(self, num_examples: int, device: torch.device | str = "cpu"):
        self.num_examples = num_examples
        self.last_correct = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.ever_correct = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.forgetting = torch.zeros(num_examples, dtype=torch.int32, device=device)
        self.presentations = torch.zeros(num_examples, dtype=torch.int32, device=device)
        self._epoch = torch.full((num_examples,), _PENDING, dtype=torch.int8, device=device)

    @capturable  # one index write into the epoch buffer, in place: a captured training step replays it
    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor) -> None:
        """Record one training batch: ``logits`` of the forward pass the update used, hard ``targets``."""
        if targets.ndim > 1:  # soft/mixed targets (mixup, cutmix): correctness against the dominant class
            targets = targets.argmax(1)
        self._epoch[positions.to(self._epoch.device)] = (logits.argmax(1) == targets).to(self._epoch.device, torch.int8)

    @torch.no_grad()
    def end_epoch(self, combine: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        """Fold the epoch's predictions into the counts (call once per pass over the data).

        With several processes, ``combine`` must return the element-wise maximum of every process's
        buffer: each example was presented on exactly one process, the others hold -1 for it.
        """
        if combine is not None:
            combined = combine(self._epoch)
            if combined is not self._epoch:
                self._epoch.copy_(combined)  # in place: a captured step writes into this buffer
        seen = self._epoch != _PENDING
        correct = self._epoch == 1
        self.forgetting += (seen & self.last_correct & ~correct).to(torch.int32)  # correct before, wrong now
        self.ever_correct |= correct
        self.last_correct = torch.where(seen, correct, self.last_correct)
        self.presentations += seen.to(torch.int32)
        self._epoch.fill_(_PENDING)

    @property
    def never_learned(self) -> torch.Tensor:
        """Examples presented at least once and never predicted correctly: infinitely forgettable."""
        self.end_epoch()
        return (self.presentations > 0) & ~self.ever_correct

    def forgetting_scores(self) -> torch.Tensor:
        """Forgetting counts as floats, +inf for never-learned examples, NaN for examples never presented."""
        self.end_epoch()
        scores = self.forgetting.float()
        scores[self.never_learned] = float("inf")
        scores[self.presentations == 0] = float("nan")
        return scores

    def critical(self, threshold: int = 0) -> torch.Tensor:
        """CET: presented examples forgotten more than ``threshold`` times, or never learned."""
        self.end_epoch()
        return (self.presentations > 0) & ((self.forgetting > threshold) | ~self.ever_correct)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Counts and the pending epoch buffer as they are (a mid-epoch checkpoint must not fold a partial epoch)."""
        return {name: getattr(self, name).clone() for name in ("last_correct", "ever_correct", "forgetting", "presentations", "_epoch")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            current = getattr(self, name)
            if value.shape != current.shape:
                raise ValueError(f"tracker state {name!r} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
            current.copy_(value)


def max_over_processes(epoch_buffer: torch.Tensor) -> torch.Tensor:
    """Every process's epoch buffer combined for `ForgettingTracker.end_epoch`: each example was presented on
    exactly one process and holds -1 on the others, so the element-wise maximum has every result exactly once."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return epoch_buffer
    combined = epoch_buffer.to(torch.int32)  # gloo has no int8 reductions
    torch.distributed.all_reduce(combined, op=torch.distributed.ReduceOp.MAX)
    return combined.to(torch.int8)
