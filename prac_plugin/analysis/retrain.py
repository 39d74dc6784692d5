"""Training a run's ticket again, as its levels were trained: the run's own recipe and schedule, from the
rewind point (or initialization) to the end, on the full training split.

Sanity checks and linear mode connectivity both retrain variants of one level's ticket with chosen data-order
seeds. With the run's own seed, a full-data LTR level trains again to the same weights.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from ..engine.models import create_model
from ..engine.trainer import Trainer, create_optimizer
from ..errors import PracError
from ..io import state_to_cpu
from ..masks import MaskEnforcer, TicketMask
from ..pipeline import RunContext, build_engine
from ..recipes import Recipe, parse_recipe
from ..rundir import RunDirectory
from ..strategies.ltr import rewind_start
from .runs import require_files

STARTS = ("rewind", "init")


def ticket_start(recipe: Recipe) -> str:
    """Where the recipe's tickets start training: the rewind point, or initialization for CTS searched at init."""
    return "init" if getattr(recipe.ticket, "search_at", "rewind") == "init" else "rewind"


class Retrainer:
    """Builds the run's engine once and trains masks from the start weights with a given data-order seed."""

    def __init__(self, run: RunDirectory, start: Optional[str] = None):
        self.run = run
        self.recipe = recipe = parse_recipe(run.recipe())
        self.start = start or ticket_start(recipe)
        if self.start not in STARTS:
            raise PracError(f"start {self.start!r} is not one of {', '.join(STARTS)}")
        rewinds_optimizer = self.start == "rewind" and getattr(recipe.ticket, "rewind_optimizer", False)
        names = ["rewind.safetensors", "rewind.json"] if self.start == "rewind" else ["init.safetensors"]
        require_files(run, names + (["rewind_optimizer.pt"] if rewinds_optimizer else []), f"training from the {self.start} point")
        recipe.run.tracker = "none"  # the analysis writes its own files, not tracker logs
        self.engine = engine = build_engine(recipe, run.path)
        if "test" in engine.sources or "val" in engine.sources:
            self.split = "test" if "test" in engine.sources else "val"
        else:
            raise PracError(f"the data of {str(run.path)!r} has neither a test nor a validation split to evaluate on")
        self.schedule = RunContext(recipe, engine.accelerator, engine.data, engine.trainer, run).full_schedule
        self.start_weights, info = run.load_state(self.start)
        self.start_step = rewind_start(info, self.schedule) if self.start == "rewind" else 0
        self.optimizer_state = torch.load(run.path / "rewind_optimizer.pt", weights_only=True) if rewinds_optimizer else None
        self.model = engine.accelerator.prepare_model(engine.model)
        self.unwrapped = engine.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def seed(self) -> int:
        return self.recipe.train.seed

    def fresh_init(self, seed: int) -> dict[str, torch.Tensor]:
        """The weights of a newly initialized model (never pretrained) drawn with ``seed``."""
        data = self.engine.data
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(replace(self.recipe.model, pretrained=False), data.num_classes, data.in_chans, data.image_size)
        return {k: v.detach() for k, v in model.state_dict().items()}

    def train(self, mask: TicketMask, weights: dict[str, torch.Tensor], seed: int, level: int, desc: str) -> dict[str, torch.Tensor]:
        """Train ``weights`` under ``mask`` from the start step to the end with data-order ``seed``; the final state."""
        acc, unwrapped = self.engine.accelerator, self.unwrapped
        unwrapped.load_state_dict(weights)
        enforcer = MaskEnforcer(unwrapped, mask)
        enforcer.apply()
        cfg = replace(self.recipe.train, seed=seed)
        optimizer = acc.prepare_optimizer(create_optimizer(unwrapped, cfg))
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
        trainer = Trainer(acc, cfg, self.engine.sources)
        positions = torch.arange(len(self.engine.data.train))
        trainer.train(self.model, optimizer, enforcer, positions, self.schedule, self.start_step, level, desc=desc)
        return state_to_cpu(unwrapped)

    def accuracy(self, weights: Optional[dict[str, torch.Tensor]] = None) -> float:
        """Accuracy on the evaluation split (test, else validation) of ``weights`` or the current model."""
        if weights is not None:
            self.unwrapped.load_state_dict(weights)
        return self.engine.trainer.evaluate(self.model, self.split)[1]
