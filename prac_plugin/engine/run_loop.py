"""Recipe -> engine and strategies -> a short loop over levels -> run directory and summary.

One loop serves every strategy: the data-selection strategy chooses the examples of each level, the level's
schedule follows from their number, and the engine's level lifecycle (`prac_plugin.engine.level`) does the rest:
plan, restore, train, evaluate, record, save, release.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .checkpoint import CheckpointPolicy, LevelCheckpoints
from .level import LevelLifecycle
from ..models.factory import model_kwargs
from .engine import Engine, build_engine
from ..config.recipes import Recipe
from ..rundir.report import write_summary
from ..tickets.rewind import RewindPoint, resolve_rewind_step
from ..rundir.folder import RunDirectory
from ..rundir.lock import run_lock
from .schedule import check_batch_size
from ..index_files.format import dataset_signature
from .. import registry
from ..strategies.base import DataSelectionStrategy, SelectionContext, TicketContext, TicketStrategy


def default_output_dir(recipe_path: Optional[str]) -> str:
    return str(Path("runs") / (Path(recipe_path).stem if recipe_path else "run"))


def _quiet(*args, **kwargs) -> None:
    pass


def ticket_context(engine: Engine, run_dir: RunDirectory) -> TicketContext:
    recipe, data, accelerator = engine.recipe, engine.data, engine.accelerator
    source = engine.sources["train"]
    return TicketContext(
        run_dir=run_dir, is_main_process=accelerator.is_main_process,
        model_spec={"model": {"name": recipe.model.name, "kwargs": model_kwargs(recipe.model, data.num_classes, data.in_chans)},
                    "input_size": [int(data.in_chans), *map(int, data.image_size)]},
        train_size=len(data.train), seed=recipe.train.seed,
        train_batches=lambda positions, batch_size: source.batches(positions, batch_size, training=False),
        reduce_mean=(lambda g: accelerator.reduce(g, "mean")) if accelerator.num_processes > 1 else (lambda g: g),
        autocast=accelerator.autocast,
    )


def selection_context(engine: Engine, run_dir: RunDirectory, ticket: TicketStrategy) -> SelectionContext:
    recipe, data, accelerator = engine.recipe, engine.data, engine.accelerator
    include, ignore = ticket.prunable_patterns()
    return SelectionContext(
        run_dir=run_dir, is_main_process=accelerator.is_main_process, device=accelerator.device,
        train=data.train, train_source=engine.sources["train"], eval_batch_size=recipe.train.eval_batch_size,
        dataset_signature=dataset_signature(data), class_names=data.class_names,
        provenance={"model": recipe.model.name, "val_fraction": recipe.data.val_fraction, "split_seed": recipe.data.split_seed},
        pruning=(ticket.step_fraction(), include, ignore),
        wait_for_everyone=accelerator.wait_for_everyone,
    )


def run_recipe(recipe: Recipe, output_dir: str, log=print) -> list[dict]:
    """Run (or continue) the ticket search a recipe describes; returns the summary rows.

    The run folder's lock is taken before anything in it is read: a second process on the folder is refused.
    """
    with run_lock(output_dir):
        return _run_recipe(recipe, output_dir, log)


@dataclass
class _Run:
    """A run set up for its level loop (`_start`)."""

    engine: Engine
    run_dir: RunDirectory
    ticket: TicketStrategy
    selection: DataSelectionStrategy
    checkpoints: LevelCheckpoints
    completed: list[int]
    log: Callable[[str], None]


def _run_recipe(recipe: Recipe, output_dir: str, log) -> list[dict]:
    """Set the run up, then the loop: each level's examples and schedule, and its whole life; then the summary."""
    run = _start(recipe, output_dir, log)
    engine, selection, checkpoints = run.engine, run.selection, run.checkpoints
    lifecycle = LevelLifecycle(engine, run.run_dir, ticket=run.ticket, selection=selection, checkpoints=checkpoints,
                               log=run.log, check_masks=True)
    first = len(run.completed)
    for level in range(first, run.ticket.num_levels + 1):
        positions = selection.positions_for_level(level)
        if positions is None:
            positions = torch.arange(len(engine.data.train))
        schedule = engine.schedule(len(positions), selection.budget)
        lifecycle.run(level, positions, schedule, resumed=checkpoints.latest(level) if level == first else None)
    return _finish(run)


def _start(recipe: Recipe, output_dir: str, log) -> _Run:
    """The run's engine and strategies; the first level checked before anything is written; the folder; and where
    a re-run continues (after its completed levels, from the last one's model)."""
    run_dir = RunDirectory.open(output_dir, recipe.to_dict())
    engine = build_engine(recipe, run_dir.path)
    accelerator, data = engine.accelerator, engine.data
    if not accelerator.is_main_process:
        log = _quiet
    ticket = registry.get("ticket", recipe.ticket.strategy)(recipe.ticket, ticket_context(engine, run_dir))
    selection = registry.get("data_selection", recipe.data_selection.strategy)(
        recipe.data_selection, selection_context(engine, run_dir, ticket))
    _check_first_level(engine, ticket, selection)
    if accelerator.is_main_process:
        run_dir.create()  # only now: a recipe that fails validation above leaves nothing behind
    checkpoints = LevelCheckpoints(run_dir.path, CheckpointPolicy.parse(recipe.run.checkpoint_every, recipe.run.checkpoint_keep), accelerator, log)
    checkpoints.clear(partial_only=True)  # left by a kill during a checkpoint write
    accelerator.wait_for_everyone()
    completed = run_dir.completed_levels()
    if completed:
        engine.model = ticket.restore_model(completed[-1], engine.model)
        log(f"Resuming {run_dir.path}: levels 0..{completed[-1]} already complete")
    engine.use_model(engine.model)
    accelerator.init_trackers("prac", config={"model": recipe.model.name, "data": recipe.data.path, "ticket": recipe.ticket.strategy})
    log(
        f"{recipe.model.name} on {recipe.data.path}: {data.info['sizes']} examples, {data.num_classes} classes, "
        f"normalization from {engine.normalization[2]}; {ticket.num_levels + 1} levels into {run_dir.path}"
    )
    return _Run(engine, run_dir, ticket, selection, checkpoints, completed, log)


def _check_first_level(engine: Engine, ticket: TicketStrategy, selection: DataSelectionStrategy) -> None:
    """Level 0's batches and schedule, its rewind point inside that schedule, and the ticket strategy's own checks."""
    first = selection.positions_for_level(0)
    first_examples = len(engine.data.train) if first is None else len(first)
    check_batch_size(engine.recipe.train.batch_size, first_examples, engine.accelerator.num_processes)
    first_schedule = engine.schedule(first_examples, selection.budget)
    resolve_rewind_step(RewindPoint.parse(ticket.rewind_point()), first_schedule.steps_per_epoch, first_schedule.total_steps)
    ticket.check(engine.model, first_schedule)


def _finish(run: _Run) -> list[dict]:
    """End the trackers; write and show the summary (main process); its rows."""
    accelerator = run.engine.accelerator
    accelerator.end_training()
    rows, table = write_summary(run.run_dir) if accelerator.is_main_process else ([], "")
    run.log("\n" + table)
    run.log(f"Run directory: {run.run_dir.path}")
    return rows
