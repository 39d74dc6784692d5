"""The life of one level, in one place: plan → restore → train → evaluate → record → save → release.

`LevelLifecycle.run` is that sequence, one method per step, for every level anything trains:

- `prac run` (`prac_plugin.engine.run_loop`) gives a lifecycle its run folder and strategies. The ticket strategy
  plans each pruned level; level 0 is the engine's own plan (`LevelLifecycle.dense_plan`: the dense mask, the
  initialization saved and the rewind point captured as training passes it), which every strategy starts from.
  A mid-level checkpoint is continued, the level trained, evaluated, recorded in its metrics and saved.
- The retrainer (`prac_plugin.engine.retrain`: `prac retrain`, the sanity checks, linear mode connectivity) calls
  the same sequence with its differences as parameters: its own plan (a mask on the start weights), a trainer with
  another data-order seed, no evaluation (it evaluates as it needs), nothing recorded or saved.

So every level is masked, checkpointed, refused on divergence and released the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

from ..version import __version__
from .checkpoint import Checkpoint, LevelCheckpoints, rng_state, set_rng_state
from ..compat.accelerate_private import release_optimizer, unwrapped_optimizer
from ..errors import PracError
from ..rundir.files import state_to_cpu
from ..rundir.folder import FORMAT_VERSION, RunDirectory
from ..tickets.masks import MaskEnforcer, TicketMask
from ..tickets.sharded import ShardedMaskEnforcer
from ..tickets.rewind import RewindPoint, resolve_rewind_step, rewind_record, rewind_start, save_rewind_point
from ..strategies.base import SIZE_KEYS, LevelPlan, PreviousLevel, StartPoint
from .health import MaskHealth, chance_ceiling, empty_layers, start_point_accuracy
from .engine import Engine
from .sharding import FullStateOptimizer
from .trainer import (BatchObserver, DivergedError, EpochHook, LevelSchedule, Trainer, TrainProgress, TrainResult,
                      create_optimizer)

if TYPE_CHECKING:
    from ..strategies.base import DataSelectionStrategy, TicketStrategy


def check_finite(model: torch.nn.Module, level: int) -> None:
    """Refuse to keep a level whose weights or buffers hold NaN or infinities (once per level, before saving)."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PracError(f"level {level} diverged: {name} holds NaN or infinite values; nothing of this level is saved. "
                            "Lower train.lr or set train.grad_clip, then run again")


def check_same_mask_everywhere(accelerator, mask: TicketMask, level: int) -> None:
    """Every process computes the level's mask from identical weights; a divergence would train a different
    ticket per process, so compare per-layer survivor counts and position sums once per level."""
    if accelerator.num_processes == 1:
        return
    rows = [(float(m.sum()), float(m.flatten().nonzero().sum())) for m in mask.masks.values()]
    signature = torch.tensor(rows, dtype=torch.float64, device=accelerator.device).flatten()
    everyone = accelerator.gather(signature).view(accelerator.num_processes, -1)
    if not bool((everyone == everyone[0]).all()):
        raise PracError(f"the level {level} mask differs between processes; the processes' weights diverged")


def load_start_point(run_dir: RunDirectory, name: str, schedule: LevelSchedule, with_optimizer: bool) -> StartPoint:
    """The weights (and step, and optimizer state) a pruned level starts from: ``rewind`` or ``init``."""
    weights, info = run_dir.load_state(name)
    step = rewind_start(info, schedule.total_steps) if name == "rewind" else 0
    return StartPoint(name, weights, step, run_dir.load_rewind_optimizer() if with_optimizer and name == "rewind" else None)


def remaining_pct(plan: LevelPlan) -> float:
    """The share of the weights the level keeps, in percent (structured: of the dense model's, from the plan's size)."""
    return plan.size.get("weights_remaining_pct", 100.0 * plan.mask.density)


def full_data_steps(full: LevelSchedule, level: LevelSchedule, start_step: int) -> int:
    """Optimizer steps full-data training would spend on this level (same schedule, same rewind point)."""
    return full.total_steps - round(start_step * full.total_steps / level.total_steps)


def with_seed(trainer: Trainer, seed: int) -> Trainer:
    """The same trainer with another data-order seed (retraining a ticket with several seeds)."""
    return Trainer(trainer.accelerator, replace(trainer.cfg, seed=seed), trainer.sources)


@dataclass
class LevelOutcome:
    result: TrainResult
    val: tuple[Optional[float], Optional[float]]
    test: tuple[Optional[float], Optional[float]]
    remaining_pct: float
    resumed_elapsed: float = 0.0  # seconds the level had trained before the checkpoint it resumed from
    metrics: Optional[dict] = None  # the level's record (a run's levels; the retrainer's keep none)


@dataclass
class TrainingStart:
    """What `LevelLifecycle.restore` prepared and `LevelLifecycle.train` continues from."""

    enforcer: MaskEnforcer  # or a ShardedMaskEnforcer
    optimizer: Any  # prepared by Accelerate; released at the end of the level
    observer: Optional[BatchObserver] = None
    epoch_hook: Optional[EpochHook] = None
    progress: Optional[TrainProgress] = None  # where a resumed level's checkpoint stood
    resumed_elapsed: float = 0.0  # read before training moves ``progress`` on


class LevelLifecycle:
    """Trains levels of one engine. With a run folder and its ticket strategy (and data selection, checkpoints):
    the levels of a run, planned, recorded and saved there. Without: plans given by the caller, trained and
    evaluated on ``evaluate``, nothing written (the retrainer)."""

    def __init__(self, engine: Engine, run_dir: Optional[RunDirectory] = None, *, ticket: Optional["TicketStrategy"] = None,
                 selection: Optional["DataSelectionStrategy"] = None, checkpoints: Optional[LevelCheckpoints] = None,
                 log: Callable[[str], None] = print, check_masks: bool = False, evaluate: Sequence[str] = ("val", "test")):
        self.engine, self.run_dir, self.ticket, self.selection, self.checkpoints = engine, run_dir, ticket, selection, checkpoints
        self.log, self.check_masks, self.splits = log, check_masks, tuple(evaluate)

    def run(self, level: int, positions: torch.Tensor, schedule: LevelSchedule, *, plan: Optional[LevelPlan] = None,
            resumed: Optional[Checkpoint] = None, trainer: Optional[Trainer] = None, desc: Optional[str] = None) -> LevelOutcome:
        """The whole life of ``level``, trained on ``positions`` of the training split with ``schedule``: ``plan``
        given, or the run's strategy's; continuing ``resumed``; with ``trainer`` (default: the engine's). The
        level's optimizer is released however the level ends."""
        started = time.perf_counter()
        trainer = trainer or self.engine.trainer
        resumed_mask = None
        if plan is None:
            plan, resumed_mask = self.plan(level, schedule, resumed)
        start = self.restore(level, plan, resumed, resumed_mask, trainer)
        try:
            result = self.train(level, plan, start, positions, schedule, trainer, desc)
            outcome = self.evaluate(plan, result, start, trainer)
            if self.run_dir is not None:  # a level of a run
                outcome.metrics = self.record(level, plan, outcome, positions, schedule, started)
                self.save(level, plan, outcome)
            return outcome
        finally:
            self.release(start.optimizer)

    # plan ------------------------------------------------------------------------------------------------------
    def plan(self, level: int, schedule: LevelSchedule, resumed: Optional[Checkpoint]) -> tuple[LevelPlan, Optional[TicketMask]]:
        """The run's plan of ``level`` and, resuming a strategy that keeps the dense architecture, the checkpoint's
        mask (read once; the strategy may take it instead of searching again). Level 0 is the engine's own plan."""
        if level == 0:
            return self.dense_plan(schedule), None
        ticket, run_dir, model = self.ticket, self.run_dir, self.engine.unwrapped
        include, ignore = ticket.prunable_patterns()
        start = load_start_point(run_dir, ticket.start_point(), schedule, ticket.rewinds_optimizer())
        previous = PreviousLevel(level - 1, model, TicketMask.load(run_dir.mask_path(level - 1), model, include=include, ignore=ignore))
        resumed_mask = None
        if resumed is not None and not ticket.traits.changes_architecture:
            resumed_mask = resumed.mask(model, include, ignore)
        return ticket.plan(level, previous, start, resumed_mask), resumed_mask

    def dense_plan(self, schedule: LevelSchedule) -> LevelPlan:
        """Level 0: the dense mask over the strategy's prunable weights, the initialization saved, and the rewind
        point captured as training passes it (`save_rewind_point`: with the optimizer state when the strategy
        rewinds it)."""
        ticket, run_dir = self.ticket, self.run_dir
        model, is_main = self.engine.unwrapped, self.engine.accelerator.is_main_process
        include, ignore = ticket.prunable_patterns()
        mask = TicketMask.dense(model, include, ignore)
        point = RewindPoint.parse(ticket.rewind_point())
        step = resolve_rewind_step(point, schedule.steps_per_epoch, schedule.total_steps)
        if is_main:
            run_dir.save_state("init", state_to_cpu(model))
        record = rewind_record(point, step, schedule.total_steps, schedule.steps_per_epoch)
        with_optimizer = ticket.rewinds_optimizer()

        def capture(unwrapped, optimizer):
            if is_main:
                save_rewind_point(run_dir, unwrapped, record, optimizer if with_optimizer else None)

        plan = LevelPlan(mask, 0, step_callbacks={step: capture}, info={"rewind_step": step})
        ticket.plan_dense(model, plan)
        return plan

    # restore ---------------------------------------------------------------------------------------------------
    def restore(self, level: int, plan: LevelPlan, resumed: Optional[Checkpoint], resumed_mask: Optional[TicketMask],
                trainer: Trainer) -> TrainingStart:
        """Put the model where the level starts: the plan's model (a new architecture) or weights; a checkpoint's
        weights and mask; the mask enforced and, for a pruned level starting afresh with ``check_masks``, its
        health recorded (`MaskHealth`, kept in ``plan.info`` and its checkpoints). Then the level's optimizer and
        the state training continues from (`TrainingStart`)."""
        engine, accelerator = self.engine, self.engine.accelerator
        if plan.model is not None:
            # the strategy built a new (smaller) model: drop Accelerate's references to the old one and its
            # optimizers, then train the new one from here on (the optimizer below is created on it)
            accelerator.free_memory()
            engine.use_model(plan.model)
        elif plan.weights is not None:
            engine.unwrapped.load_state_dict(plan.weights)
        unwrapped = engine.unwrapped
        look = self.check_masks and level > 0 and resumed is None
        split = ("val" if "val" in engine.sources else engine.eval_split) if look else None
        dense_start = start_point_accuracy(trainer, unwrapped, split) if look and plan.model is None else None  # unmasked
        if resumed is not None:
            self._adopt_checkpoint(level, plan, resumed, resumed_mask)
        check_same_mask_everywhere(accelerator, plan.mask, level)
        enforcer = MaskEnforcer(unwrapped, plan.mask)
        enforcer.apply()
        if look:
            self._record_health(level, plan, trainer, split, dense_start)
        if engine.sharding is not None:  # the level trains a sharded copy of the masked plain model
            engine.model = engine.sharding.shard(unwrapped)
            enforcer = ShardedMaskEnforcer(engine.model, plan.mask)
        optimizer = accelerator.prepare_optimizer(create_optimizer(engine.model if engine.sharding else unwrapped, trainer.cfg))
        try:
            return self._training_start(level, plan, resumed, enforcer, optimizer)
        except BaseException:
            self.release(optimizer)
            raise

    def _adopt_checkpoint(self, level: int, plan: LevelPlan, resumed: Checkpoint, resumed_mask: Optional[TicketMask]) -> None:
        """The checkpoint's mask is the one this level trained with (a mask search need not repeat exactly): it
        replaces the plan's, with the plan figures and the weights the checkpoint kept."""
        unwrapped = self.engine.unwrapped
        saved = resumed_mask if resumed_mask is not None and plan.model is None else resumed.mask(unwrapped)
        if set(saved.masks) != set(plan.mask.masks):
            raise PracError(f"checkpoint mask {str(resumed.mask_path)!r} covers other weights than level {level}'s plan; "
                            f"delete {str(resumed.path)!r} to restart the level from its beginning")
        plan.mask = saved
        plan.info.update(resumed.process.get("plan_info", {}))
        unwrapped.load_state_dict(resumed.model)

    def _record_health(self, level: int, plan: LevelPlan, trainer: Trainer, split: str, dense_start: Optional[float]) -> None:
        """The masked start point's health, before training (the weights are masked already)."""
        labels = self.engine.sources[split].split.labels
        health = MaskHealth(split, empty_layers(plan.mask), start_point_accuracy(trainer, self.engine.unwrapped, split),
                            dense_start, chance_ceiling(labels))
        plan.info["mask_health"] = health.figures(level)
        if health.warning(level):
            self.log(health.warning(level))

    def _training_start(self, level: int, plan: LevelPlan, resumed: Optional[Checkpoint], enforcer: MaskEnforcer,
                        optimizer) -> TrainingStart:
        """The optimizer's start state (the plan's, then a checkpoint's), the data selection's hooks for the level,
        and a checkpoint's scaler, selection, random and progress state."""
        accelerator, selection = self.engine.accelerator, self.selection
        if plan.optimizer_state is not None:
            optimizer.load_state_dict(self._local_state(plan.optimizer_state, optimizer))
        start = TrainingStart(enforcer, optimizer, selection.batch_observer(level) if selection is not None else None,
                              selection.epoch_hook(level) if selection is not None else None)
        if resumed is not None:
            optimizer.load_state_dict(self._local_state(resumed.optimizer, optimizer))
            if accelerator.scaler is not None and resumed.scaler is not None:
                accelerator.scaler.load_state_dict(resumed.scaler)
            if selection is not None:
                selection.load_state_dict(resumed.process["selection"])
            set_rng_state(resumed.process["rng"])
            start.progress = TrainProgress.from_state_dict(resumed.process["progress"])
            start.resumed_elapsed = start.progress.elapsed
            self.log(f"Resuming level {level} at step {start.progress.step} from {resumed.path}")
        return start

    def _local_state(self, state: dict, optimizer) -> dict:
        """An optimizer state in the single-process layout (a rewind point's, a checkpoint's), as this level's
        optimizer takes it: sharded like its parameters when the level is."""
        sharding = self.engine.sharding
        return state if sharding is None else sharding.local_optimizer_state(state, unwrapped_optimizer(optimizer)[0] or optimizer)

    def _refresh_plain(self) -> None:
        """A sharded level: the plain model takes the shards' current weights (every process calls it)."""
        if self.engine.sharding is not None and self.engine.model is not self.engine.unwrapped:
            self.engine.sharding.gather(self.engine.model, self.engine.unwrapped)

    def _hooks(self, plan: LevelPlan, start: TrainingStart) -> tuple[dict, Optional[EpochHook]]:
        """The plan's step callbacks and the selection's epoch hook; for a sharded level, each sees the plain
        model refreshed from the shards (and the optimizer's full state), as an unsharded level's would."""
        engine = self.engine
        if engine.sharding is None:
            return plan.step_callbacks, start.epoch_hook
        plain, hook = engine.unwrapped, start.epoch_hook

        def on_plain(callback):
            def called(_model, optimizer):
                self._refresh_plain()
                return callback(plain, FullStateOptimizer(optimizer))  # every process calls callbacks at the same step
            return called

        def epoch_hook(epochs: int, _model) -> bool:
            self._refresh_plain()
            return hook(epochs, plain)

        return {step: on_plain(callback) for step, callback in plan.step_callbacks.items()}, (epoch_hook if hook else None)

    # train -----------------------------------------------------------------------------------------------------
    def train(self, level: int, plan: LevelPlan, start: TrainingStart, positions: torch.Tensor, schedule: LevelSchedule,
              trainer: Trainer, desc: Optional[str]) -> TrainResult:
        """Train from the plan's start step (or the checkpoint's) to the schedule's end, checkpointing as the run's
        policy says. A diverging level loses its checkpoints (they may hold the diverging weights), so a corrected
        run restarts it from its beginning; a level whose weights are not finite is refused."""
        checkpoints = self.checkpoints
        callbacks, epoch_hook = self._hooks(plan, start)
        try:
            result = trainer.train(
                self.engine.model, start.optimizer, start.enforcer, positions, schedule, plan.start_step, level, callbacks,
                start.observer, epoch_hook, desc=desc or f"level {level:2d} ({remaining_pct(plan):6.2f}% left)",
                resume=start.progress, checkpoint=self._checkpointer(level, plan, start) if checkpoints is not None else None,
                policy=checkpoints.policy if checkpoints is not None else None,
            )
        except DivergedError:
            if checkpoints is not None:
                checkpoints.clear()
            raise
        if self.engine.sharding is not None:  # the sharded copy is done: evaluate and save the plain model
            self._refresh_plain()
            self.engine.model = self.engine.unwrapped
        check_finite(self.engine.unwrapped, level)
        return result

    def _checkpointer(self, level: int, plan: LevelPlan, start: TrainingStart) -> Callable[[TrainProgress], None]:
        """Writes a mid-level checkpoint: everything the rest of the level depends on."""
        accelerator, unwrapped, selection = self.engine.accelerator, self.engine.unwrapped, self.selection

        def save_checkpoint(progress: TrainProgress) -> None:
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            self._refresh_plain()
            optimizer = start.optimizer if self.engine.sharding is None else FullStateOptimizer(start.optimizer)
            self.checkpoints.save(
                level, progress.step, state_to_cpu(unwrapped), optimizer.state_dict(), plan.mask.save, scaler,
                {"progress": progress.state_dict(), "rng": rng_state(), "plan_info": plan.info,
                 "selection": selection.state_dict() if selection is not None else {}},
            )

        return save_checkpoint

    # evaluate, record, save, release ---------------------------------------------------------------------------
    def evaluate(self, plan: LevelPlan, result: TrainResult, start: TrainingStart, trainer: Trainer) -> LevelOutcome:
        """The trained level's (loss, accuracy) on each split asked for that the data has."""
        engine = self.engine
        scores = {split: trainer.evaluate(engine.model, split) if split in engine.sources else (None, None) for split in self.splits}
        return LevelOutcome(result, scores.get("val", (None, None)), scores.get("test", (None, None)), remaining_pct(plan),
                            start.resumed_elapsed)

    def record(self, level: int, plan: LevelPlan, outcome: LevelOutcome, positions: torch.Tensor, schedule: LevelSchedule,
               started: float) -> dict:
        """The level's metrics: the data selection ends the level first (its figures, and its files: the next PrAC
        set), then the engine's figures (`level_figures`) with the strategies' (`strategy_figures`)."""
        extra = self.selection.end_level(level, self.engine.unwrapped) if self.selection is not None else {}
        figures = level_figures(self.engine, level, plan, outcome, positions, schedule, time.perf_counter() - started)
        return strategy_figures(plan, figures, extra)

    def save(self, level: int, plan: LevelPlan, outcome: LevelOutcome) -> None:
        """The level's mask, weights and metrics (last: they mark the level complete), by the main process; its
        checkpoints are no longer needed; the trackers get the level's figures."""
        engine, accelerator = self.engine, self.engine.accelerator
        if accelerator.is_main_process:
            self.run_dir.save_level(
                level, lambda path: plan.mask.save(path, {"level": str(level), "density": f"{plan.mask.density:.6f}"}),
                state_to_cpu(engine.unwrapped), outcome.metrics,
            )
        if self.checkpoints is not None:
            self.checkpoints.clear()
        accelerator.wait_for_everyone()
        accelerator.log({"level/test_acc": outcome.test[1] or 0.0, "level/weights_remaining_pct": outcome.remaining_pct}, step=level)

    def release(self, optimizer) -> None:
        """Drop the level's optimizer (and its state) from Accelerate's references, and a sharded level's copy."""
        release_optimizer(self.engine.accelerator, optimizer)
        if self.engine.sharding is not None:
            self.engine.model = self.engine.unwrapped


def _is_compiled(model: torch.nn.Module) -> bool:
    while hasattr(model, "module") and not isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        model = model.module  # DDP around a compiled module
    return isinstance(model, torch._dynamo.eval_frame.OptimizedModule)


def level_figures(engine: Engine, level: int, plan: LevelPlan, outcome: LevelOutcome, positions: torch.Tensor,
                  schedule: LevelSchedule, elapsed: float) -> dict:
    """The engine's figures of a trained level: how it ran, its size, scores, steps, examples, times and data."""
    accelerator, data, train_cfg = engine.accelerator, engine.data, engine.recipe.train
    mean, std, norm_source = engine.normalization
    result, val, test, remaining = outcome.result, outcome.val, outcome.test, outcome.remaining_pct
    return {
        "format_version": FORMAT_VERSION, "package_version": __version__, "level": level, "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision, "compiled": _is_compiled(engine.model), "channels_last": train_cfg.channels_last,
        "cuda_graphs": result.cuda_graphs, "sharding": engine.sharding.figures() if engine.sharding is not None else "none",
        "weights_remaining_pct": remaining, "sparsity_pct": 100.0 - remaining,
        "prunable_weights": plan.mask.num_total, "remaining_weights": plan.mask.num_remaining,
        "val_loss": val[0], "val_acc": val[1], "test_loss": test[0], "test_acc": test[1],
        "train_loss": result.train_loss, "train_acc": result.train_acc,
        "optimizer_steps": result.steps, "examples_seen": result.examples,
        "start_step": plan.start_step, "total_steps": schedule.total_steps, "steps_per_epoch": schedule.steps_per_epoch,
        "train_examples": int(positions.numel()),
        "num_classes": int(data.num_classes), "input_size": [int(data.in_chans), *map(int, data.image_size)],  # rebuild the model (`prac export --format timm-hub`)
        "wall_time_s": elapsed + outcome.resumed_elapsed, "train_time_s": result.wall_time,
        "full_data_steps": full_data_steps(engine.schedule(len(data.train)), schedule, plan.start_step),
        "layers": [{"name": l.name, "total": l.total, "remaining": l.remaining, "density": l.density} for l in plan.mask.layers()],
        "history": result.history, "data": data.info, "normalization": {"mean": mean, "std": std, "source": norm_source},
    }


def strategy_figures(plan: LevelPlan, engine_figures: dict, extra: dict) -> dict:
    """The level's metrics: the engine's figures, the plan's size figures in place of the mask-based ones, then
    the strategies' own figures, which may add keys but never replace one (a strategy cannot rewrite the record)."""
    unknown = set(plan.size) - SIZE_KEYS
    if unknown:
        raise PracError(f"ticket strategy size figures {sorted(unknown)} are not size keys ({', '.join(sorted(SIZE_KEYS))})")
    metrics = {**engine_figures, **plan.size}
    for source in (plan.info, extra):
        clash = sorted(set(source) & set(metrics))
        if clash:
            raise PracError(f"a strategy's level figures {clash} would replace figures the engine records; rename them")
        metrics.update(source)
    return metrics
