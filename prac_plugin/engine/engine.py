"""What a recipe builds before any level: seed, accelerator, data, model, batch sources and trainer.

A run (`prac_plugin.engine.run_loop`) and the retraining of its tickets (`prac_plugin.engine.retrain`) build the
same engine from the same recipe, so a ticket trains again exactly as the run trained it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available, set_seed

from ..compat.accelerate_private import reset_shared_state, shared_state
from ..errors import PracError
from ..config.recipes import Recipe
from ..data.sources import BatchSource, DataBundle, load_data, resolve_normalization
from ..models.factory import create_model
from .sharding import Sharding, sharding_for
from .trainer import LevelSchedule, Trainer


def effective_precision(recipe_precision: str) -> str:
    """The recipe's mixed precision, or the launcher's (``accelerate launch --mixed_precision`` or its config file)
    when the recipe says ``no``; two different requests are an error rather than a silent choice."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if recipe_precision == "no" or launcher in ("no", recipe_precision):
        return recipe_precision if recipe_precision != "no" else launcher
    raise PracError(
        f"accelerate launch asks for mixed precision {launcher!r} but train.mixed_precision = {recipe_precision!r}; "
        "make them agree (the recipe's value, or 'no' there to follow the launcher)"
    )


def _dynamo_backend(compile_option) -> str:
    if compile_option is True:
        return "inductor"
    return "no" if compile_option is False else str(compile_option)


def make_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
    tracker = recipe.run.tracker
    if tracker == "tensorboard" and not is_tensorboard_available():
        raise PracError("run.tracker = 'tensorboard' but tensorboard is not installed (pip install tensorboard)")
    log_with = "tensorboard" if tracker == "tensorboard" or (tracker == "auto" and is_tensorboard_available()) else None
    state = shared_state()
    precision = effective_precision(recipe.train.mixed_precision)
    backend = _dynamo_backend(recipe.train.compile)
    plugin = state.get("dynamo_plugin") if state else None
    changed = state.get("_mixed_precision") not in (None, precision) if state else False
    changed |= plugin is not None and str(plugin.backend.value).lower() != backend.lower()
    if state and state.get("num_processes", 1) == 1 and changed:
        # Accelerate keeps one process-wide state: it refuses a second precision and keeps the first compile
        # backend. A single process (a notebook, several runs in one script) may switch, so start its state
        # afresh. Launched multi-process runs may not.
        reset_shared_state()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    # with several launched processes and no GPU, Accelerate only joins them when asked for the CPU explicitly
    cpu = recipe.train.cpu or (launched > 1 and not torch.cuda.is_available())
    try:
        accelerator = Accelerator(mixed_precision=precision, cpu=cpu, log_with=log_with, project_dir=str(run_dir),
                                  dynamo_backend=backend)
    except ValueError as exc:
        raise PracError(f"train.mixed_precision = {precision!r} is not available here: {exc}") from None
    if launched > 1 and accelerator.num_processes != launched:
        # each process would run the whole recipe on its own and write the same files
        raise PracError(f"{launched} processes were launched but Accelerate joined {accelerator.num_processes}; check the launcher's backend")
    if precision == "fp16" and accelerator.device.type == "cpu":
        # Accelerate would silently train in fp32 here
        raise PracError("train.mixed_precision = 'fp16' needs a GPU; on a CPU use 'bf16' or 'no'")
    return accelerator


@dataclass
class Engine:
    """A recipe's accelerator, data, batch sources and trainer, and the model being trained.

    ``model`` is the model as prepared by Accelerate (possibly compiled or wrapped for DDP), ``unwrapped`` the
    module whose weights are read and written; the level lifecycle replaces both when a level brings a new model.
    With ``sharding`` (FSDP2) the model is not prepared: ``model`` is the plain module between levels and a
    sharded copy of it while a level trains (`prac_plugin.engine.sharding`).
    """

    recipe: Recipe
    accelerator: Accelerator
    data: DataBundle
    normalization: tuple[list[float], list[float], str]  # mean, std, where they came from
    sources: dict[str, BatchSource]
    trainer: Trainer
    model: torch.nn.Module
    sharding: Optional[Sharding] = None
    unwrapped: torch.nn.Module = field(init=False)

    def __post_init__(self):
        self.unwrapped = self.model

    def schedule(self, num_examples: int, budget: str = "linear") -> LevelSchedule:
        """A level's schedule when it trains on ``num_examples`` of the training split (budget scaled by the share)."""
        train = self.recipe.train
        return LevelSchedule.for_examples(num_examples, train.batch_size, train.epochs, len(self.data.train), budget)

    def use_model(self, model: torch.nn.Module) -> None:
        """Train ``model`` from now on: prepared by Accelerate (channels_last when the recipe asks)."""
        if self.recipe.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.sharding is not None:  # sharded per level, never wrapped for DDP
            self.model = self.unwrapped = model.to(self.accelerator.device)
            return
        self.model = self.accelerator.prepare_model(model)
        self.unwrapped = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def eval_split(self) -> str:
        """The split analyses evaluate on: test, else validation."""
        for split in ("test", "val"):
            if split in self.sources:
                return split
        raise PracError("the data has neither a test nor a validation split to evaluate on")


def build_engine(recipe: Recipe, run_dir: Path) -> Engine:
    """Seed, accelerator, data, freshly initialized (not yet prepared) model, batch sources and trainer."""
    train_cfg = recipe.train
    set_seed(train_cfg.seed)
    if train_cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    accelerator = make_accelerator(recipe, run_dir)
    data = load_data(recipe.data)
    model = create_model(recipe.model, data.num_classes, data.in_chans, data.image_size)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std, norm_source = resolve_normalization(recipe.data, data, model)
    sources = {
        name: BatchSource(split, data, recipe.data, mean, std, accelerator.device, accelerator.process_index, accelerator.num_processes)
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test)) if split is not None
    }
    return Engine(recipe, accelerator, data, (mean, std, norm_source), sources, Trainer(accelerator, train_cfg, sources), model,
                  sharding_for(recipe, accelerator))

