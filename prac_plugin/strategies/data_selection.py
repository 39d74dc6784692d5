"""Basic data-selection strategies: the full training split, or a seeded random subset of it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PracError
from .base import DataSelectionStrategy, StrategyOptions
from .registry import register


@register
class FullData(DataSelectionStrategy):
    """Every level trains on the whole training split."""

    name = "full"


@dataclass
class RandomOptions(StrategyOptions):
    fraction: float = 0.5
    seed: int = 0
    resample_each_level: bool = True
    full_first_level: bool = True

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise PracError(f"data_selection.fraction = {self.fraction} must be in (0, 1]")


@register
class RandomSubset(DataSelectionStrategy):
    """A seeded random subset of the training split (a baseline for smarter selections).

    Level 0 (dense training) uses the full split unless ``full_first_level`` is false.
    """

    name = "random"
    Options = RandomOptions

    def positions_for_level(self, level: int):
        opts = self.options
        if level == 0 and opts.full_first_level:
            return None
        n = len(self.run.data.train)
        draw = level if opts.resample_each_level else 1
        generator = torch.Generator().manual_seed(opts.seed * 1_000_003 + draw)
        size = max(1, round(opts.fraction * n))
        return torch.randperm(n, generator=generator)[:size].sort().values

    def end_level(self, level, model) -> dict:
        positions = self.positions_for_level(level)
        return {"selected_examples": len(self.run.data.train) if positions is None else int(positions.numel())}
