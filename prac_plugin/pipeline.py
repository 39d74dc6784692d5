"""Recipe -> data and model -> level loop (select, plan, train, evaluate, save) -> run directory.

One loop serves every strategy: the data-selection strategy chooses the examples of each level, the
ticket strategy the mask and starting weights, and the trainer does the rest.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import is_tensorboard_available, set_seed

from . import __version__
from .engine.data import BatchSource, DataBundle, load_data, resolve_normalization
from .engine.models import create_model
from .engine.trainer import LevelSchedule, Trainer, create_optimizer
from .errors import PracError
from .io import state_to_cpu
from .masks import MaskEnforcer
from .recipes import Recipe
from .report import write_summary
from .rundir import RunDirectory
from .strategies import registry


@dataclass
class RunContext:
    """What strategies may use: the recipe, data, trainer, run directory and accelerator."""

    recipe: Recipe
    accelerator: Accelerator
    data: DataBundle
    trainer: Trainer
    run_dir: RunDirectory

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def schedule_for(self, num_examples: int, budget: str = "linear") -> LevelSchedule:
        """The level's schedule when it trains on ``num_examples`` of the training split."""
        train = self.recipe.train
        return LevelSchedule.for_examples(num_examples, train.batch_size, train.epochs, len(self.data.train), budget)

    @property
    def full_schedule(self) -> LevelSchedule:
        return self.schedule_for(len(self.data.train))


def full_data_steps(full: LevelSchedule, level: LevelSchedule, start_step: int) -> int:
    """Optimizer steps full-data training would spend on this level (same schedule, same rewind point)."""
    return full.total_steps - round(start_step * full.total_steps / level.total_steps)


def default_output_dir(recipe_path: Optional[str]) -> str:
    return str(Path("runs") / (Path(recipe_path).stem if recipe_path else "run"))


def make_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
    tracker = recipe.run.tracker
    if tracker == "tensorboard" and not is_tensorboard_available():
        raise PracError("run.tracker = 'tensorboard' but tensorboard is not installed (pip install tensorboard)")
    log_with = "tensorboard" if tracker == "tensorboard" or (tracker == "auto" and is_tensorboard_available()) else None
    state = AcceleratorState._shared_state
    if state and state.get("num_processes", 1) == 1 and state.get("_mixed_precision") not in (None, recipe.train.mixed_precision):
        # Accelerate keeps one process-wide state and refuses a second precision; a single process (a notebook,
        # several runs in one script) may switch, so start its state afresh. Launched multi-process runs may not.
        AcceleratorState._reset_state(reset_partial_state=False)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    # with several launched processes and no GPU, Accelerate only joins them when asked for the CPU explicitly
    cpu = recipe.train.cpu or (launched > 1 and not torch.cuda.is_available())
    try:
        accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision, cpu=cpu, log_with=log_with, project_dir=str(run_dir))
    except ValueError as exc:
        raise PracError(f"train.mixed_precision = {recipe.train.mixed_precision!r} is not available here: {exc}") from None
    if launched > 1 and accelerator.num_processes != launched:
        # each process would run the whole recipe on its own and write the same files
        raise PracError(f"{launched} processes were launched but Accelerate joined {accelerator.num_processes}; check the launcher's backend")
    if recipe.train.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # Accelerate would silently train in fp32 here
        raise PracError("train.mixed_precision = 'fp16' needs a GPU; on a CPU use 'bf16' or 'no'")
    return accelerator


def run_recipe(recipe: Recipe, output_dir: str, log=print) -> list[dict]:
    """Run (or continue) the ticket search a recipe describes; returns the summary rows."""
    recipe_dict = recipe.to_dict()
    run_dir = RunDirectory.open(output_dir, recipe_dict)
    train_cfg = recipe.train
    set_seed(train_cfg.seed)
    if train_cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    accelerator = make_accelerator(recipe, run_dir.path)
    data = load_data(recipe.data)
    model = create_model(recipe.model, data.num_classes, data.in_chans, data.image_size)
    mean, std, norm_source = resolve_normalization(recipe.data, data, model)
    sources = {
        name: BatchSource(split, data, recipe.data, mean, std, accelerator.device, accelerator.process_index, accelerator.num_processes)
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test)) if split is not None
    }
    trainer = Trainer(accelerator, train_cfg, sources)
    context = RunContext(recipe, accelerator, data, trainer, run_dir)
    ticket = registry.get("ticket", recipe.ticket.strategy)(recipe.ticket, context)
    selection = registry.get("data_selection", recipe.data_selection.strategy)(recipe.data_selection, context)

    first = selection.positions_for_level(0)
    ticket.check(context.schedule_for(len(data.train) if first is None else len(first), selection.budget))
    if accelerator.is_main_process:
        run_dir.create()  # only now: a recipe that fails validation above leaves nothing behind
    accelerator.wait_for_everyone()
    completed = run_dir.completed_levels()
    if completed:
        model = ticket.restore_model(completed[-1], model)
        log(f"Resuming {run_dir.path}: levels 0..{completed[-1]} already complete")
    model = accelerator.prepare_model(model)
    unwrapped = accelerator.unwrap_model(model)
    accelerator.init_trackers("prac", config={"model": recipe.model.name, "data": recipe.data.path, "ticket": recipe.ticket.strategy})
    log(
        f"{recipe.model.name} on {recipe.data.path}: {data.info['sizes']} examples, {data.num_classes} classes, "
        f"normalization from {norm_source}; {ticket.num_levels + 1} levels into {run_dir.path}"
    )

    for level in range(len(completed), ticket.num_levels + 1):
        started = time.perf_counter()
        positions = selection.positions_for_level(level)
        if positions is None:
            positions = torch.arange(len(data.train))
        schedule = context.schedule_for(len(positions), selection.budget)
        plan = ticket.plan_level(level, unwrapped, schedule)
        if plan.model is not None:
            # the strategy built a new (smaller) model: drop Accelerate's references to the old one and its
            # optimizers, then train the new one from here on (the optimizer below is created on it)
            accelerator.free_memory()
            model = accelerator.prepare_model(plan.model)
            unwrapped = accelerator.unwrap_model(model)
        enforcer = MaskEnforcer(unwrapped, plan.mask)
        enforcer.apply()
        optimizer = accelerator.prepare_optimizer(create_optimizer(unwrapped, train_cfg))
        if plan.optimizer_state is not None:
            optimizer.load_state_dict(plan.optimizer_state)
        remaining = plan.info.get("weights_remaining_pct", 100.0 * plan.mask.density)  # structured: against the dense model
        result = trainer.train(
            model, optimizer, enforcer, positions, schedule, plan.start_step, level, plan.step_callbacks,
            selection.batch_observer(level), selection.epoch_hook(level), desc=f"level {level:2d} ({remaining:6.2f}% left)",
        )
        val = trainer.evaluate(model, "val") if "val" in sources else (None, None)
        test = trainer.evaluate(model, "test") if "test" in sources else (None, None)
        extra = selection.end_level(level, unwrapped)
        metrics = {
            "format_version": 1, "package_version": __version__, "level": level, "num_processes": accelerator.num_processes,
            "weights_remaining_pct": remaining, "sparsity_pct": 100.0 - remaining,
            "prunable_weights": plan.mask.num_total, "remaining_weights": plan.mask.num_remaining,
            "val_loss": val[0], "val_acc": val[1], "test_loss": test[0], "test_acc": test[1],
            "train_loss": result.train_loss, "train_acc": result.train_acc,
            "optimizer_steps": result.steps, "examples_seen": result.examples,
            "start_step": plan.start_step, "total_steps": schedule.total_steps, "steps_per_epoch": schedule.steps_per_epoch,
            "train_examples": int(positions.numel()), "wall_time_s": time.perf_counter() - started,
            "full_data_steps": full_data_steps(context.full_schedule, schedule, plan.start_step),
            "layers": [{"name": l.name, "total": l.total, "remaining": l.remaining, "density": l.density} for l in plan.mask.layers()],
            "history": result.history, "data": data.info, "normalization": {"mean": mean, "std": std, "source": norm_source},
            **plan.info, **extra,  # last: a strategy's figures replace the mask-based ones above
        }
        if accelerator.is_main_process:
            run_dir.save_level(
                level, lambda path: plan.mask.save(path, {"level": str(level), "density": f"{plan.mask.density:.6f}"}),
                state_to_cpu(unwrapped), metrics,
            )
        accelerator.wait_for_everyone()
        accelerator.log({"level/test_acc": test[1] or 0.0, "level/weights_remaining_pct": remaining}, step=level)

    accelerator.end_training()
    rows, table = write_summary(run_dir) if accelerator.is_main_process else ([], "")
    log("\n" + table)
    log(f"Run directory: {run_dir.path}")
    return rows
