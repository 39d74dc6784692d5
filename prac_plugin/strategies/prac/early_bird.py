"""Early-bird stopping (from the PrAC reference code): stop a round once the mask it would prune stops moving."""

from __future__ import annotations

import torch

from ...tickets.masks import TicketMask, prunable_parameter_names


def mask_distance(previous: torch.Tensor, current: torch.Tensor, remaining: int) -> float:
    """Share of the ``remaining`` weights whose keep/prune decision differs between two flat masks."""
    return int((previous != current).sum()) / max(1, remaining)


class EarlyBird:
    """Each epoch, the global mask pruning ``fraction`` of the non-zero prunable weights; stop when the
    normalized Hamming distance between consecutive epochs' masks stays below ``eps`` for ``window`` epochs.

    The distance is the share of the *remaining* (non-zero) weights whose keep/prune decision changed: divided by
    all prunable weights it would be ``density`` times too small at a sparse level and stop far too early.
    """

    def __init__(self, fraction: float, eps: float, window: int, include=(), ignore=()):
        self.fraction, self.eps, self.window = fraction, eps, window
        self.include, self.ignore = include, ignore
        self.previous: torch.Tensor | None = None
        self.distances: list[float] = []

    def __call__(self, epoch: int, model: torch.nn.Module) -> bool:
        params = dict(model.named_parameters())
        names = prunable_parameter_names(model, self.include, self.ignore)
        alive = TicketMask({n: params[n].detach() != 0 for n in names})
        flat = torch.cat([m.flatten() for m in alive.prune_magnitude(model, self.fraction).masks.values()])
        if self.previous is not None:
            self.distances.append(mask_distance(self.previous, flat, alive.num_remaining))
        self.previous = flat
        recent = self.distances[-self.window :]
        return len(recent) == self.window and max(recent) < self.eps

    def state_dict(self) -> dict:
        return {"previous": self.previous, "distances": list(self.distances)}

    def load_state_dict(self, state: dict) -> None:
        self.previous, self.distances = state["previous"], list(state["distances"])
