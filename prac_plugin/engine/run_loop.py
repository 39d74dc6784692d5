"""Recipe -> data and model -> level loop (select, plan, train, evaluate, save) -> run directory.

One loop serves every strategy: the data-selection strategy chooses the examples of each level, the ticket
strategy plans each pruned level (mask and start weights), and the engine's level runner does the rest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

from ..version import __version__
from .checkpoint import CheckpointPolicy, LevelCheckpoints
from .level import LevelRunner, load_start_point, strategy_figures
from ..models.factory import model_kwargs
from .engine import Engine, build_engine
from .trainer import LevelSchedule
from ..rundir.files import state_to_cpu
from ..tickets.masks import TicketMask
from ..config.recipes import Recipe
from ..rundir.report import write_summary
from ..tickets.rewind import RewindPoint, resolve_rewind_step
from ..rundir.folder import FORMAT_VERSION, RunDirectory
from ..rundir.lock import run_lock
from .schedule import check_batch_size
from ..index_files.format import dataset_signature
from .. import registry
from ..strategies.base import PreviousLevel, SelectionContext, TicketContext, TicketStrategy


def full_data_steps(full: LevelSchedule, level: LevelSchedule, start_step: int) -> int:
    """Optimizer steps full-data training would spend on this level (same schedule, same rewind point)."""
    return full.total_steps - round(start_step * full.total_steps / level.total_steps)


def default_output_dir(recipe_path: Optional[str]) -> str:
    return str(Path("runs") / (Path(recipe_path).stem if recipe_path else "run"))


def _is_compiled(model: torch.nn.Module) -> bool:
    while hasattr(model, "module") and not isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        model = model.module  # DDP around a compiled module
    return isinstance(model, torch._dynamo.eval_frame.OptimizedModule)


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


def _run_recipe(recipe: Recipe, output_dir: str, log) -> list[dict]:
    recipe_dict = recipe.to_dict()
    run_dir = RunDirectory.open(output_dir, recipe_dict)
    train_cfg = recipe.train
    engine = build_engine(recipe, run_dir.path)
    accelerator, data = engine.accelerator, engine.data
    mean, std, norm_source = engine.normalization
    if not accelerator.is_main_process:
        log = _quiet
    ticket = registry.get("ticket", recipe.ticket.strategy)(recipe.ticket, ticket_context(engine, run_dir))
    selection = registry.get("data_selection", recipe.data_selection.strategy)(
        recipe.data_selection, selection_context(engine, run_dir, ticket))
    train_size = len(data.train)

    first = selection.positions_for_level(0)
    first_examples = train_size if first is None else len(first)
    check_batch_size(train_cfg.batch_size, first_examples, accelerator.num_processes)
    first_schedule = engine.schedule(first_examples, selection.budget)
    resolve_rewind_step(RewindPoint.parse(ticket.rewind_point()), first_schedule.steps_per_epoch, first_schedule.total_steps)
    ticket.check(engine.model, first_schedule)
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
    runner = LevelRunner(engine, run_dir, checkpoints, log)
    accelerator.init_trackers("prac", config={"model": recipe.model.name, "data": recipe.data.path, "ticket": recipe.ticket.strategy})
    log(
        f"{recipe.model.name} on {recipe.data.path}: {data.info['sizes']} examples, {data.num_classes} classes, "
        f"normalization from {norm_source}; {ticket.num_levels + 1} levels into {run_dir.path}"
    )
    include, ignore = ticket.prunable_patterns()
    full_schedule = engine.schedule(train_size)

    for level in range(len(completed), ticket.num_levels + 1):
        started = time.perf_counter()
        positions = selection.positions_for_level(level)
        if positions is None:
            positions = torch.arange(train_size)
        schedule = engine.schedule(len(positions), selection.budget)
        resumed = checkpoints.latest(level) if level == len(completed) else None
        if level == 0:
            plan = runner.dense_plan(ticket, schedule)
        else:
            start = load_start_point(run_dir, ticket.start_point(), schedule, ticket.rewinds_optimizer())
            previous = PreviousLevel(level - 1, engine.unwrapped, TicketMask.load(run_dir.mask_path(level - 1), engine.unwrapped, include=include, ignore=ignore))
            resumed_mask = None
            if resumed is not None and not ticket.traits.changes_architecture:
                resumed_mask = TicketMask.load(resumed.mask_path, engine.unwrapped, include=include, ignore=ignore)
            plan = ticket.plan(level, previous, start, resumed_mask)
        outcome = runner.run(level, plan, positions, schedule, selection=selection, resumed=resumed, check_mask=level > 0)
        unwrapped, result = engine.unwrapped, outcome.result
        val, test, remaining = outcome.val, outcome.test, outcome.remaining_pct
        extra = selection.end_level(level, unwrapped)
        metrics = strategy_figures(plan, {
            "format_version": FORMAT_VERSION, "package_version": __version__, "level": level, "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision, "compiled": _is_compiled(engine.model), "channels_last": train_cfg.channels_last,
            "cuda_graphs": result.cuda_graphs,
            "weights_remaining_pct": remaining, "sparsity_pct": 100.0 - remaining,
            "prunable_weights": plan.mask.num_total, "remaining_weights": plan.mask.num_remaining,
            "val_loss": val[0], "val_acc": val[1], "test_loss": test[0], "test_acc": test[1],
            "train_loss": result.train_loss, "train_acc": result.train_acc,
            "optimizer_steps": result.steps, "examples_seen": result.examples,
            "start_step": plan.start_step, "total_steps": schedule.total_steps, "steps_per_epoch": schedule.steps_per_epoch,
            "train_examples": int(positions.numel()),
            "num_classes": int(data.num_classes), "input_size": [int(data.in_chans), *map(int, data.image_size)],  # rebuild the model (`prac export --format timm-hub`)
            "wall_time_s": time.perf_counter() - started + outcome.resumed_elapsed, "train_time_s": result.wall_time,
            "full_data_steps": full_data_steps(full_schedule, schedule, plan.start_step),
            "layers": [{"name": l.name, "total": l.total, "remaining": l.remaining, "density": l.density} for l in plan.mask.layers()],
            "history": result.history, "data": data.info, "normalization": {"mean": mean, "std": std, "source": norm_source},
        }, extra)
        if accelerator.is_main_process:
            run_dir.save_level(
                level, lambda path: plan.mask.save(path, {"level": str(level), "density": f"{plan.mask.density:.6f}"}),
                state_to_cpu(unwrapped), metrics,
            )
        checkpoints.clear()  # the level is complete: its checkpoints are no longer needed
        accelerator.wait_for_everyone()
        accelerator.log({"level/test_acc": test[1] or 0.0, "level/weights_remaining_pct": remaining}, step=level)

    accelerator.end_training()
    rows, table = write_summary(run_dir) if accelerator.is_main_process else ([], "")
    log("\n" + table)
    log(f"Run directory: {run_dir.path}")
    return rows
