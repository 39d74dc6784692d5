"""Training a run's ticket again, as its levels were trained: the run's own recipe and schedule, from the
rewind point (or initialization) to the end, on the full training split.

`prac retrain`, the sanity checks and linear mode connectivity retrain variants of one level's ticket with chosen
data-order seeds, each through the engine's level lifecycle (`prac_plugin.engine.level`) with the retrainer's
differences as parameters: its own plan, the seed's trainer, no evaluation, nothing recorded or saved. With the
run's own seed, a full-data LTR level trains again to the same weights.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from .level import LevelLifecycle, load_start_point, with_seed
from ..models.factory import create_model
from .engine import build_engine
from ..errors import PracError
from ..rundir.files import state_to_cpu
from ..tickets.masks import TicketMask
from ..config.recipes import parse_recipe
from ..rundir.folder import RunDirectory
from .. import registry
from ..strategies.base import LevelPlan, TicketStrategy
from ..rundir.completed import require_files

STARTS = ("rewind", "init")


def ticket_strategy(recipe) -> type[TicketStrategy]:
    """The class of a run's ticket strategy (its declarations: traits, start point, rewound optimizer)."""
    return registry.get("ticket", recipe.ticket.strategy)


def require_analysis(run: RunDirectory, analysis: str, what: str) -> type[TicketStrategy]:
    """The run's ticket strategy class, if it declares ``analysis`` applicable; else one line saying why not."""
    ticket = run.recipe().get("ticket") or {}
    strategy = registry.get("ticket", ticket.get("strategy", "ltr") if isinstance(ticket, dict) else "ltr")
    if analysis not in strategy.traits.analyses:
        reason = strategy.traits.not_applicable or "the strategy does not declare it"
        raise PracError(f"{what} does not apply to run {str(run.path)!r}: ticket.strategy {strategy.name!r} ({reason})")
    return strategy


class Retrainer:
    """Builds the run's engine once and trains masks from the start weights with a given data-order seed."""

    def __init__(self, run: RunDirectory, start: Optional[str] = None):
        self.run = run
        self.recipe = recipe = parse_recipe(run.recipe())
        strategy = ticket_strategy(recipe)(recipe.ticket, None)  # declarations only: it plans nothing here
        self.start = start or strategy.start_point()
        if self.start not in STARTS:
            raise PracError(f"start {self.start!r} is not one of {', '.join(STARTS)}")
        rewinds_optimizer = self.start == "rewind" and strategy.rewinds_optimizer()
        names = [run.state_path("rewind"), run.path / "rewind.json"] if self.start == "rewind" else [run.state_path("init")]
        require_files(run, [run.relative(p) for p in names] + ([run.relative(run.rewind_optimizer_path)] if rewinds_optimizer else []),
                      f"training from the {self.start} point")
        self.include, self.ignore = strategy.prunable_patterns()
        recipe.run.tracker = "none"  # the analysis writes its own files, not tracker logs
        self.engine = engine = build_engine(recipe, run.path)
        self.split = engine.eval_split
        self.schedule = engine.schedule(len(engine.data.train))
        start_point = load_start_point(run, self.start, self.schedule, rewinds_optimizer)
        self.start_weights, self.start_step, self.optimizer_state = start_point.weights, start_point.step, start_point.optimizer_state
        engine.use_model(engine.model)
        self.lifecycle = LevelLifecycle(engine, log=lambda *_: None, evaluate=())  # the analyses evaluate as they need
        self.model, self.unwrapped = engine.model, engine.unwrapped

    @property
    def seed(self) -> int:
        return self.recipe.train.seed

    def load_mask(self, level: int) -> TicketMask:
        """The mask of a completed level of the run: exactly the run's prunable weights, with the model's shapes."""
        return TicketMask.load(self.run.mask_path(level), self.unwrapped, include=self.include, ignore=self.ignore)

    def fresh_init(self, seed: int) -> dict[str, torch.Tensor]:
        """The weights of a newly initialized model (never pretrained) drawn with ``seed``."""
        data = self.engine.data
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(replace(self.recipe.model, pretrained=False), data.num_classes, data.in_chans, data.image_size)
        return {k: v.detach() for k, v in model.state_dict().items()}

    def train(self, mask: TicketMask, weights: dict[str, torch.Tensor], seed: int, level: int, desc: str) -> dict[str, torch.Tensor]:
        """Train ``weights`` under ``mask`` from the start step to the end with data-order ``seed``; the final state."""
        plan = LevelPlan(mask, self.start_step, weights=weights, optimizer_state=self.optimizer_state)
        positions = torch.arange(len(self.engine.data.train))
        self.lifecycle.run(level, positions, self.schedule, plan=plan, trainer=with_seed(self.engine.trainer, seed), desc=desc)
        return state_to_cpu(self.unwrapped)

    def accuracy(self, weights: Optional[dict[str, torch.Tensor]] = None) -> float:
        """Accuracy on the evaluation split (test, else validation) of ``weights`` or the current model."""
        if weights is not None:
            self.unwrapped.load_state_dict(weights)
        return self.engine.trainer.evaluate(self.model, self.split)[1]
