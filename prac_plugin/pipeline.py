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
from .checkpoint import CheckpointPolicy, LevelCheckpoints, rng_state, set_rng_state
from .engine.trainer import DivergedError, LevelSchedule, Trainer, TrainProgress, create_optimizer
from .errors import PracError
from .io import state_to_cpu
from .masks import MaskEnforcer, TicketMask
from .recipes import Recipe
from .report import write_summary
from .schedule_check import check_batch_size
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
    state = AcceleratorState._shared_state
    precision = effective_precision(recipe.train.mixed_precision)
    backend = _dynamo_backend(recipe.train.compile)
    plugin = state.get("dynamo_plugin") if state else None
    changed = state.get("_mixed_precision") not in (None, precision) if state else False
    changed |= plugin is not None and str(plugin.backend.value).lower() != backend.lower()
    if state and state.get("num_processes", 1) == 1 and changed:
        # Accelerate keeps one process-wide state: it refuses a second precision and keeps the first compile
        # backend. A single process (a notebook, several runs in one script) may switch, so start its state
        # afresh. Launched multi-process runs may not.
        AcceleratorState._reset_state(reset_partial_state=False)
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


def check_same_mask_everywhere(accelerator: Accelerator, mask: TicketMask, level: int) -> None:
    """Every process computes the level's mask from identical weights; a divergence would train a different
    ticket per process, so compare per-layer survivor counts and position sums once per level."""
    if accelerator.num_processes == 1:
        return
    rows = [(float(m.sum()), float(m.flatten().nonzero().sum())) for m in mask.masks.values()]
    signature = torch.tensor(rows, dtype=torch.float64, device=accelerator.device).flatten()
    everyone = accelerator.gather(signature).view(accelerator.num_processes, -1)
    if not bool((everyone == everyone[0]).all()):
        raise PracError(f"the level {level} mask differs between processes; the processes' weights diverged")


def check_finite(model: torch.nn.Module, level: int) -> None:
    """Refuse to keep a level whose weights or buffers hold NaN or infinities (once per level, before saving)."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PracError(f"level {level} diverged: {name} holds NaN or infinite values; nothing of this level is saved. "
                            "Lower train.lr or set train.grad_clip, then run again")


def release_optimizer(accelerator: Accelerator, optimizer) -> None:
    """Forget a finished level's optimizer: Accelerate keeps every prepared optimizer (and with it the
    momentum buffers, one model's worth per level) until ``free_memory``, which would drop the model too."""
    accelerator._optimizers = [kept for kept in accelerator._optimizers if kept is not optimizer]


def _is_compiled(model: torch.nn.Module) -> bool:
    while hasattr(model, "module") and not isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        model = model.module  # DDP around a compiled module
    return isinstance(model, torch._dynamo.eval_frame.OptimizedModule)


def _quiet(*args, **kwargs) -> None:
    pass


@dataclass
class Engine:
    """What a recipe builds before any level: a run and the retraining of its tickets (analysis) share it."""

    accelerator: Accelerator
    data: DataBundle
    model: torch.nn.Module
    normalization: tuple[list[float], list[float], str]  # mean, std, where they came from
    sources: dict[str, BatchSource]
    trainer: Trainer


def build_engine(recipe: Recipe, run_dir: Path) -> Engine:
    """Seed, accelerator, data, freshly initialized model, batch sources and trainer for a recipe."""
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
    return Engine(accelerator, data, model, (mean, std, norm_source), sources, Trainer(accelerator, train_cfg, sources))


def run_recipe(recipe: Recipe, output_dir: str, log=print) -> list[dict]:
    """Run (or continue) the ticket search a recipe describes; returns the summary rows."""
    recipe_dict = recipe.to_dict()
    run_dir = RunDirectory.open(output_dir, recipe_dict)
    train_cfg = recipe.train
    engine = build_engine(recipe, run_dir.path)
    accelerator, data, model, sources, trainer = engine.accelerator, engine.data, engine.model, engine.sources, engine.trainer
    mean, std, norm_source = engine.normalization
    if not accelerator.is_main_process:
        log = _quiet
    context = RunContext(recipe, accelerator, data, trainer, run_dir)
    ticket = registry.get("ticket", recipe.ticket.strategy)(recipe.ticket, context)
    selection = registry.get("data_selection", recipe.data_selection.strategy)(recipe.data_selection, context)

    first = selection.positions_for_level(0)
    first_examples = len(data.train) if first is None else len(first)
    check_batch_size(train_cfg.batch_size, first_examples, accelerator.num_processes)
    ticket.check(context.schedule_for(first_examples, selection.budget), model)
    if accelerator.is_main_process:
        run_dir.create()  # only now: a recipe that fails validation above leaves nothing behind
    checkpoints = LevelCheckpoints(run_dir.path, CheckpointPolicy.parse(recipe.run.checkpoint_every, recipe.run.checkpoint_keep), accelerator, log)
    checkpoints.clear(partial_only=True)  # left by a kill during a checkpoint write
    accelerator.wait_for_everyone()
    completed = run_dir.completed_levels()
    if completed:
        model = ticket.restore_model(completed[-1], model)
        log(f"Resuming {run_dir.path}: levels 0..{completed[-1]} already complete")
    model = accelerator.prepare_model(model)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
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
            if train_cfg.channels_last:
                plan.model = plan.model.to(memory_format=torch.channels_last)
            model = accelerator.prepare_model(plan.model)
            unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
        resumed = checkpoints.latest(level) if level == len(completed) else None
        if resumed is not None:
            # the checkpoint's mask is the one this level trained with (a mask search need not repeat exactly)
            plan.mask = TicketMask.load(resumed.mask_path, unwrapped)
            unwrapped.load_state_dict(resumed.model)
        check_same_mask_everywhere(accelerator, plan.mask, level)
        enforcer = MaskEnforcer(unwrapped, plan.mask)
        enforcer.apply()
        optimizer = accelerator.prepare_optimizer(create_optimizer(unwrapped, train_cfg))
        if plan.optimizer_state is not None:
            optimizer.load_state_dict(plan.optimizer_state)
        observer, epoch_hook = selection.batch_observer(level), selection.epoch_hook(level)
        progress = None
        if resumed is not None:
            optimizer.load_state_dict(resumed.optimizer)
            if accelerator.scaler is not None and resumed.scaler is not None:
                accelerator.scaler.load_state_dict(resumed.scaler)
            selection.load_state_dict(resumed.process["selection"])
            set_rng_state(resumed.process["rng"])
            progress = TrainProgress.from_state_dict(resumed.process["progress"])
            started -= progress.elapsed
            log(f"Resuming level {level} at step {progress.step} from {resumed.path}")

        def save_checkpoint(progress: TrainProgress) -> None:
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            checkpoints.save(
                level, progress.step, state_to_cpu(unwrapped), optimizer.state_dict(), plan.mask.save, scaler,
                {"progress": progress.state_dict(), "rng": rng_state(), "selection": selection.state_dict()},
            )

        remaining = plan.info.get("weights_remaining_pct", 100.0 * plan.mask.density)  # structured: against the dense model
        try:
            result = trainer.train(
                model, optimizer, enforcer, positions, schedule, plan.start_step, level, plan.step_callbacks,
                observer, epoch_hook, desc=f"level {level:2d} ({remaining:6.2f}% left)",
                resume=progress, checkpoint=save_checkpoint, policy=checkpoints.policy,
            )
        except DivergedError:
            checkpoints.clear()  # they may hold the diverging weights: the level restarts from its beginning
            raise
        check_finite(unwrapped, level)
        val = trainer.evaluate(model, "val") if "val" in sources else (None, None)
        test = trainer.evaluate(model, "test") if "test" in sources else (None, None)
        extra = selection.end_level(level, unwrapped)
        metrics = {
            "format_version": 1, "package_version": __version__, "level": level, "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision, "compiled": _is_compiled(model), "channels_last": train_cfg.channels_last,
            "weights_remaining_pct": remaining, "sparsity_pct": 100.0 - remaining,
            "prunable_weights": plan.mask.num_total, "remaining_weights": plan.mask.num_remaining,
            "val_loss": val[0], "val_acc": val[1], "test_loss": test[0], "test_acc": test[1],
            "train_loss": result.train_loss, "train_acc": result.train_acc,
            "optimizer_steps": result.steps, "examples_seen": result.examples,
            "start_step": plan.start_step, "total_steps": schedule.total_steps, "steps_per_epoch": schedule.steps_per_epoch,
            "train_examples": int(positions.numel()), "wall_time_s": time.perf_counter() - started, "train_time_s": result.wall_time,
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
        checkpoints.clear()  # the level is complete: its checkpoints are no longer needed
        release_optimizer(accelerator, optimizer)
        accelerator.wait_for_everyone()
        accelerator.log({"level/test_acc": test[1] or 0.0, "level/weights_remaining_pct": remaining}, step=level)

    accelerator.end_training()
    rows, table = write_summary(run_dir) if accelerator.is_main_process else ([], "")
    log("\n" + table)
    log(f"Run directory: {run_dir.path}")
    return rows
