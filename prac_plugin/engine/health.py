"""Is a ticket a working network before it trains? One look per pruned level, recorded in its metrics.

A mask can cut a network: a prunable tensor left with no weight (the stem convolution, a whole stage) makes the
output independent of the input, and training such a ticket ends at chance however long it runs. Before a level
trains, the engine records which tensors the mask empties and the ticket's accuracy at its start point (masked
start weights, one evaluation pass) beside the unmasked start point's, and warns loudly when a tensor is empty or
the ticket is at chance where the dense start point is not.

Both accuracies are taken with BatchNorm normalising by batch statistics (`batch_statistics`): the start point's
running statistics belong to the dense network, and with them any very sparse mask looks broken.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..tickets.masks import TicketMask
from ..models.batchnorm import batch_statistics

SHOWN_LAYERS = 4  # empty tensors named in the warning line; metrics list them all


def chance_ceiling(labels: torch.Tensor) -> float:
    """The highest accuracy guessing could plausibly reach on ``labels``: the majority class's share plus three
    binomial standard errors."""
    n = max(1, labels.numel())
    p = float(torch.bincount(labels.flatten().long()).max()) / n if labels.numel() else 1.0
    return min(1.0, p + 3.0 * math.sqrt(p * (1.0 - p) / n))


def start_point_accuracy(trainer, model: torch.nn.Module, split: str) -> float:
    """Accuracy of ``model`` as it is, on ``split``, BatchNorm on batch statistics, running buffers untouched; the
    random state is left as it was (a DataLoader draws its seed from it), so training goes on as without the look."""
    with torch.no_grad(), batch_statistics(model), torch.random.fork_rng(devices=[]):
        return trainer.evaluate(model, split)[1]


@dataclass
class MaskHealth:
    split: str
    empty_layers: list[str]
    start_point_acc: float
    dense_start_point_acc: Optional[float]  # None where the level's model is not the dense one (structured)
    chance_ceiling: float
    batchnorm: str = "batch"

    @property
    def at_chance(self) -> bool:
        """The ticket guesses at its start point while the unmasked start point does not (or is unknown)."""
        dense_knows = self.dense_start_point_acc is None or self.dense_start_point_acc > self.chance_ceiling
        return self.start_point_acc <= self.chance_ceiling and dense_knows

    def warning(self, level: int) -> Optional[str]:
        """One line saying what is wrong with the mask, or None when nothing is."""
        problems = []
        if self.empty_layers:
            shown = ", ".join(self.empty_layers[:SHOWN_LAYERS])
            more = f" and {len(self.empty_layers) - SHOWN_LAYERS} more" if len(self.empty_layers) > SHOWN_LAYERS else ""
            problems.append(f"the mask keeps no weight of {shown}{more}")
        if self.at_chance:
            dense = "" if self.dense_start_point_acc is None else f", the unmasked start point {100 * self.dense_start_point_acc:.1f}%"
            problems.append(f"at its start point the ticket classifies at chance ({100 * self.start_point_acc:.1f}% on {self.split}"
                            f"{dense}; chance up to {100 * self.chance_ceiling:.1f}%)")
        if not problems:
            return None
        return f"WARNING: level {level}: " + "; ".join(problems)

    def figures(self, level: int) -> dict:
        return {**asdict(self), "at_chance": self.at_chance, "warning": self.warning(level)}


def empty_layers(mask: TicketMask) -> list[str]:
    return [layer.name for layer in mask.layers() if layer.remaining == 0]
