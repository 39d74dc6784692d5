"""Structured lottery tickets: channel-level IMP with rewinding, each level a physically smaller timm model.

Level 0 (the engine's) trains the dense network and keeps the rewind point. Level L scores the channel groups
of level L-1's trained model by group magnitude (torch-pruning's dependency graph couples every layer a channel
touches), removes a fraction of the remaining channels, then replays the whole pruning history on a fresh dense
model holding the rewind weights: the kept channels restart from exactly their rewind values, BN running
statistics included. That compact model replaces the previous one and trains from the rewind step to the end.
"""

from __future__ import annotations

import copy
import functools

import torch

from ...version import __version__
from ...errors import PracError
from ...rundir.files import atomic_write_json
from ...tickets.masks import TicketMask, prunable_parameter_names
from .channels import ChannelPruning, check_forward, count_macs_params, create_dense, example_input, prune_level, replay
from .options import STRUCTURE_FILE, STRUCTURED
from .ticket import FORMAT_VERSION, read_structure
from ..base import LevelPlan, RewindOptionsDeclared, TicketStrategy


def channel_pruning(opts) -> ChannelPruning:
    """The channel-pruning settings of a level, from the recipe's options."""
    return ChannelPruning(
        opts.fraction, opts.scope, opts.min_keep, opts.attention, opts.importance_p, opts.normalizer, opts.round_to,
        tuple(opts.include), tuple(opts.ignore),
    )


def size_metrics(model: torch.nn.Module, dense: torch.nn.Module, example: torch.Tensor, include, ignore) -> dict:
    """A level's size against the dense model: prunable weights (as LTR counts them, so curves compare), all
    parameters and MACs; these replace the engine's mask-based figures, which see only the compact model."""
    names = prunable_parameter_names(dense, include, ignore)
    mine, theirs = dict(model.named_parameters()), dict(dense.named_parameters())
    layers = [{"name": n, "total": theirs[n].numel(), "remaining": mine[n].numel(), "density": mine[n].numel() / theirs[n].numel()} for n in names]
    total, remaining = sum(l["total"] for l in layers), sum(l["remaining"] for l in layers)
    macs, params = count_macs_params(model, example)
    dense_macs, dense_params = count_macs_params(dense, example)
    return {
        "weights_remaining_pct": 100.0 * remaining / total, "sparsity_pct": 100.0 - 100.0 * remaining / total,
        "prunable_weights": total, "remaining_weights": remaining, "layers": layers,
        "macs": macs, "dense_macs": dense_macs, "macs_remaining_pct": 100.0 * macs / dense_macs,
        "params": params, "dense_params": dense_params, "params_remaining_pct": 100.0 * params / dense_params,
    }


class StructuredTicket(RewindOptionsDeclared, TicketStrategy):
    spec = STRUCTURED

    @functools.cached_property
    def base_structure(self) -> dict:
        """The dense model's structure (no pruning history): what every level's structure file starts from."""
        return {"format_version": FORMAT_VERSION, "package_version": __version__, **self.context.model_spec}

    @functools.cached_property
    def example(self) -> torch.Tensor:
        return example_input(self.base_structure)

    @property
    def num_levels(self) -> int:
        return self.options.levels

    def step_fraction(self) -> float:
        return self.options.fraction

    def check(self, model, first_schedule) -> None:
        """Before anything is written: the planned levels tried on a throwaway dense model (a model torch-pruning
        cannot trace, or one that does not run once pruned, fails here, naming the layer; a level that would remove
        no channel, every layer being at its floor, is refused rather than retrained unchanged). The channel counts
        follow from the widths (exactly so in layer scope); global scope ranks the initial weights."""
        dense = create_dense(self.base_structure)
        trial = copy.deepcopy(dense)
        for level in range(1, max(1, self.options.levels) + 1):
            segment, at_floor = prune_level(trial, self.example, channel_pruning(self.options), dense)
            if segment["history"]:
                continue
            if level == 1:
                raise PracError(
                    f"structured pruning finds no channel to remove in {self.base_structure['model']['name']!r} "
                    "(every layer is ignored, coupled to an ignored layer, or at its ticket.min_keep floor)"
                )
            shown = ", ".join(at_floor[:4]) + (", ..." if len(at_floor) > 4 else "")
            raise PracError(
                f"ticket.levels = {self.options.levels}: level {level} would remove no channel, every prunable layer being "
                f"at its ticket.min_keep = {self.options.min_keep!r} floor ({shown}); at most {level - 1} level{'s are' if level > 2 else ' is'} "
                "possible here (or lower ticket.min_keep)"
            )

    # structure files ------------------------------------------------------------------------------------
    def structure(self, level: int) -> dict:
        """The structure of ``level``'s ticket, from its level folder (level 0: the dense model, no history)."""
        return read_structure(self.context.run_dir.level_file(level, STRUCTURE_FILE))

    def _save_structure(self, level: int, structure: dict) -> None:
        if self.context.is_main_process:  # written when the level is planned; identical if the level is planned again
            atomic_write_json(self.context.run_dir.level_file(level, STRUCTURE_FILE), structure)

    def _dense(self) -> torch.nn.Module:
        return create_dense(self.base_structure)

    # the levels ------------------------------------------------------------------------------------------
    def restore_model(self, level: int, model: torch.nn.Module) -> torch.nn.Module:
        """Rebuild ``level``'s compact architecture on ``model`` and load that level's weights."""
        replay(model, self.structure(level)["levels"], self.example)
        model.load_state_dict(self.context.run_dir.level_weights(level))
        return model.train()

    def plan_dense(self, model, plan) -> None:
        self._save_structure(0, {**self.base_structure, "levels": []})
        opts = self.options
        plan.size.update(size_metrics(model, self._dense(), self.example, opts.include, opts.ignore))

    def plan(self, level, previous, start, resumed_mask=None) -> LevelPlan:
        """Score level L-1's channels, cut a copy, and replay the whole history on the rewind weights."""
        opts = self.options
        structure = self.structure(level - 1)
        dense = self._dense()
        trained = copy.deepcopy(previous.model).cpu()  # scores come from level L-1's trained weights; the copy is cut, not the model
        segment, at_floor = prune_level(trained, self.example, channel_pruning(opts), dense)
        structure["levels"].append(segment)
        ticket = copy.deepcopy(dense)
        ticket.load_state_dict(start.weights)
        replay(ticket, structure["levels"], self.example)  # rewind values at exactly the kept channels
        check_forward(ticket, self.example, f"the level {level} ticket does not run")
        self._save_structure(level, structure)
        return LevelPlan(
            TicketMask.dense(ticket, opts.include, opts.ignore), start.step, model=ticket.train(),
            info={
                "rewind_step": start.step, "structured_min_keep": opts.min_keep, "structured_at_floor": at_floor,
                "structured_removed_channels": sum(len(entry[2]) for entry in segment["history"]),
            },
            size=size_metrics(ticket, dense, self.example, opts.include, opts.ignore),
        )
