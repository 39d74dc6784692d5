"""Concrete Ticket Search as a ticket strategy: level 0 (the engine's) trains the dense network and keeps the
rewind point; level i searches the mask of density ``densities[i-1]`` at the rewind point (or at
initialization) and trains that ticket from there to the end. Levels are independent of each other."""

from __future__ import annotations

import torch

from ...tickets.masks import prunable_parameter_names
from ...tickets.checks import check_layer_floor, prunable_sizes
from .checks import check_cts_densities, cts_keep_count
from .options import CTS
from .search import ConcreteSearchConfig, concrete_ticket_search
from ..base import LevelPlan, RewindOptionsDeclared, TicketStrategy


class ConcreteTicketSearch(RewindOptionsDeclared, TicketStrategy):
    spec = CTS

    @property
    def num_levels(self) -> int:
        return len(self.options.densities)

    def start_point(self) -> str:
        return self.options.search_at

    def rewinds_optimizer(self) -> bool:
        return self.options.rewind_optimizer and self.options.search_at == "rewind"

    def check(self, model, first_schedule) -> None:
        """Every density keeps some but not all of the model's prunable weights."""
        opts = self.options
        sizes = prunable_sizes(model, opts.include, opts.ignore)
        total = sum(sizes.values())
        check_cts_densities(opts.densities, total)
        if opts.min_per_layer:
            check_layer_floor(sizes, opts.min_per_layer, cts_keep_count(min(opts.densities), total), f"density {min(opts.densities)!r}")

    def _search_batches(self, batch_size: int, seed: int):
        context = self.context

        def batches(epoch: int):
            order = torch.randperm(context.train_size, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            for images, labels, _ in context.train_batches(order, batch_size):  # un-augmented
                yield images, labels

        return batches

    def plan(self, level, previous, start, resumed_mask=None) -> LevelPlan:
        """Search the mask of density ``densities[level-1]`` on the start weights (the previous level is not used);
        a resumed level keeps the mask its checkpoint trained with instead of searching again."""
        opts, context = self.options, self.context
        density = opts.densities[level - 1]
        plan = LevelPlan(None, start.step, weights=start.weights, optimizer_state=start.optimizer_state,  # type: ignore[arg-type]
                         info={"rewind_step": start.step, "cts_target_density": density})
        if resumed_mask is not None:
            plan.mask = resumed_mask
            return plan
        model = previous.model
        model.load_state_dict(start.weights)
        names = prunable_parameter_names(model, opts.include, opts.ignore)
        batch_size = opts.search_batch_size
        steps = opts.search_steps or max(1, round(opts.search_epochs * -(-context.train_size // batch_size)))
        cfg = ConcreteSearchConfig(
            density, steps, lr=opts.lr, decay_at=opts.decay_at, temperature=opts.temperature, final_temperature=opts.final_temperature,
            objective=opts.objective, loss_scale=opts.loss_scale, target_factor=opts.target_factor,
            sparsity_control=opts.sparsity_control, dual_lr=opts.dual_lr, concrete_form=opts.concrete_form, batchnorm=opts.batchnorm,
            min_per_layer=opts.min_per_layer, seed=context.seed + level,
        )
        with context.autocast():
            result = concrete_ticket_search(model, names, self._search_batches(batch_size, cfg.seed), cfg, context.reduce_mean)
        plan.mask = result.mask
        plan.info.update({
            "cts_batchnorm": opts.batchnorm, "cts_expected_density": result.expected_density,
            "cts_search_steps": result.steps, "cts_search_forward_passes": result.forward_passes,
            "cts_search_backward_passes": result.backward_passes, "cts_search_wall_time_s": result.wall_time,
            "cts_search_history": result.history,
        })
        return plan
