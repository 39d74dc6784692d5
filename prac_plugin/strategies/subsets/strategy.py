"""Data selection without a criterion of its own: the full training split, a seeded random subset of it, or the
rows of an index file (made by ``prac`` with any architecture, or from published scores)."""

from __future__ import annotations

import torch

from ...errors import PracError
from ...index_files.format import PracIndex
from ..base import DataSelectionStrategy
from ..prac.options import round_path
from ..prac.strategy import EarlyBirdStopping
from .options import FULL, INDEX, RANDOM


class FullData(DataSelectionStrategy):
    """Every level trains on the whole training split."""

    spec = FULL


class RandomSubset(EarlyBirdStopping, DataSelectionStrategy):
    """A seeded random subset of the training split (a baseline for smarter selections).

    Level 0 (dense training) uses the full split unless ``full_first_level`` is false. With ``sizes_from``
    (a PrAC run directory) level L draws as many examples as that run's level L trained on. Budget and early-bird
    stopping are PrAC's options, so a control can spend exactly what PrAC spends.
    """

    spec = RANDOM

    def __init__(self, options, context):
        super().__init__(options, context)
        if options.sizes_from is not None and not round_path(options.sizes_from, 0).parent.is_dir():
            raise PracError(f"data_selection.sizes_from {options.sizes_from!r} is not a PrAC run directory (no prac/ folder)")

    def _size(self, level: int, n: int) -> int:
        """``fraction`` of the split, or the size of the set a PrAC run trained level ``level`` on."""
        if self.options.sizes_from is None:
            return max(1, round(self.options.fraction * n))
        path = round_path(self.options.sizes_from, level - 1)
        if not path.is_file():
            raise PracError(f"data_selection.sizes_from: {str(path)!r} does not exist (the PrAC run has no round {level - 1} set)")
        return len(PracIndex.load(path))

    def positions_for_level(self, level: int):
        opts = self.options
        if level == 0 and (opts.full_first_level or opts.sizes_from):
            return None
        n = self.context.train_size
        draw = level if opts.resample_each_level else 1
        generator = torch.Generator().manual_seed(opts.seed * 1_000_003 + draw)
        return torch.randperm(n, generator=generator)[: self._size(level, n)].sort().values

    def end_level(self, level, model) -> dict:
        positions = self.positions_for_level(level)
        return {"selected_examples": self.context.train_size if positions is None else int(positions.numel())}


class IndexSelection(DataSelectionStrategy):
    """Train every level on the rows of a PrAC index file, validated against the dataset."""

    spec = INDEX

    def __init__(self, options, context):
        super().__init__(options, context)
        index = PracIndex.load(options.path)
        where = f"index file {options.path!r}"
        index.check_dataset(context.dataset_signature, where)
        self.positions = index.positions_in(context.train.row_ids, where)
        self.index = index

    def positions_for_level(self, level: int):
        return None if level == 0 and self.options.full_first_level else self.positions

    def end_level(self, level, model) -> dict:
        positions = self.positions_for_level(level)
        return {"selected_examples": self.context.train_size if positions is None else int(positions.numel())}
