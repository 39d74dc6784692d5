"""Forgetting statistics (Toneva et al.), as PrAC uses them to find examples hard to memorize (CET).

For every example of the training split the tracker keeps, on the device, whether its last training-mode
prediction was correct, whether it was ever correct, and how many correct-to-incorrect transitions it had.
Updates are index writes on whole batches: no host synchronization and no Python loop per example.
"""

from __future__ import annotations

import torch


class ForgettingTracker:
    """Per-example forgetting counts over the training forward passes of one round."""

    def __init__(self, num_examples: int, device: torch.device | str = "cpu"):
        self.num_examples = num_examples
        self.last_correct = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.ever_correct = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.forgetting = torch.zeros(num_examples, dtype=torch.int32, device=device)
        self.presentations = torch.zeros(num_examples, dtype=torch.int32, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor) -> None:
        """Record one training batch: ``logits`` of the forward pass the update used, hard ``targets``.

        Positions must be distinct within a batch (true of an epoch's permutation).
        """
        if targets.ndim > 1:  # soft/mixed targets (mixup, cutmix): correctness against the dominant class
            targets = targets.argmax(1)
        correct = logits.argmax(1) == targets
        positions = positions.to(self.last_correct.device)
        correct = correct.to(self.last_correct.device)
        forgot = self.last_correct[positions] & ~correct  # a forgetting event: correct before, wrong now
        self.forgetting.index_add_(0, positions, forgot.to(torch.int32))
        self.ever_correct[positions] |= correct
        self.last_correct[positions] = correct
        self.presentations.index_add_(0, positions, torch.ones_like(positions, dtype=torch.int32))

    @property
    def never_learned(self) -> torch.Tensor:
        """Examples presented at least once and never predicted correctly: infinitely forgettable."""
        return (self.presentations > 0) & ~self.ever_correct

    def forgetting_scores(self) -> torch.Tensor:
        """Forgetting counts as floats, +inf for never-learned examples, NaN for examples never presented."""
        scores = self.forgetting.float()
        scores[self.never_learned] = float("inf")
        scores[self.presentations == 0] = float("nan")
        return scores

    def critical(self, threshold: int = 0) -> torch.Tensor:
        """CET: presented examples forgotten more than ``threshold`` times, or never learned."""
        return (self.presentations > 0) & ((self.forgetting > threshold) | ~self.ever_correct)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in ("last_correct", "ever_correct", "forgetting", "presentations")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            current = getattr(self, name)
            if value.shape != current.shape:
                raise ValueError(f"tracker state {name!r} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
            current.copy_(value)
