"""Lottery ticket rewinding (IMP with weight rewinding), as in Frankle et al. and open_lth.

Level 0 (the engine's) trains the dense network and keeps the weights at the rewind point k. Level L prunes
a fraction of the remaining weights by magnitude (from the end of level L-1), resets the survivors to their
values at k, and trains from step k to the end. Rewind ``0it`` is classic IMP (reset to initialization).
"""

from __future__ import annotations

from ...tickets.checks import check_layer_floor, prunable_sizes
from .checks import check_ltr_schedule, ltr_counts
from .options import LTR
from ..base import LevelPlan, RewindOptionsDeclared, TicketStrategy


class LotteryTicketRewinding(RewindOptionsDeclared, TicketStrategy):
    spec = LTR

    @property
    def num_levels(self) -> int:
        return self.options.levels

    def step_fraction(self) -> float:
        return self.options.fraction

    def rewinds_optimizer(self) -> bool:
        return self.options.rewind_optimizer

    def check(self, model, first_schedule) -> None:
        """No planned level prunes nothing or leaves nothing (counted from the prunable tensors' sizes)."""
        opts = self.options
        sizes = prunable_sizes(model, opts.include, opts.ignore)
        check_ltr_schedule(sizes, opts.fraction, opts.scope, opts.levels)
        if opts.min_per_layer and opts.scope == "global" and opts.levels:
            last = list(ltr_counts(list(sizes.values()), opts.fraction, opts.scope, opts.levels))[-1]
            check_layer_floor(sizes, opts.min_per_layer, last.remaining[0], f"level {opts.levels}")

    def plan(self, level, previous, start, resumed_mask=None) -> LevelPlan:
        """Prune ``fraction`` of the previous mask's survivors by the previous level's trained magnitudes."""
        opts = self.options
        mask = previous.mask.prune_magnitude(previous.model, opts.fraction, opts.scope, opts.min_per_layer)
        return LevelPlan(mask, start.step, weights=start.weights, optimizer_state=start.optimizer_state, info={"rewind_step": start.step})
