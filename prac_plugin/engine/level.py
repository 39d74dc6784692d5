"""The life of one level, owned by the engine: start from a plan (and a checkpoint), train, evaluate, release.

`prac run`, `prac retrain`, the sanity checks, linear mode connectivity and the benchmarks all train levels
through `LevelRunner.run`, so every one of them masks, checkpoints, refuses divergence and frees its optimizer
the same way. Level 0 (dense training, the capture of the initialization and of the rewind point) is the
engine's too (`LevelRunner.dense_plan`): every ticket strategy starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch

from .checkpoint import Checkpoint, LevelCheckpoints, rng_state, set_rng_state
from ..compat.accelerate_private import release_optimizer
from ..errors import PracError
from ..rundir.files import state_to_cpu
from ..tickets.masks import MaskEnforcer, TicketMask
from ..tickets.rewind import RewindPoint, resolve_rewind_step, rewind_record, rewind_start, save_rewind_point
from ..rundir.folder import RunDirectory
from ..strategies.base import SIZE_KEYS, LevelPlan, StartPoint
from .health import MaskHealth, chance_ceiling, empty_layers, start_point_accuracy
from .engine import Engine
from .trainer import DivergedError, LevelSchedule, Trainer, TrainProgress, TrainResult, create_optimizer

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


@dataclass
class LevelOutcome:
    result: TrainResult
    val: tuple[Optional[float], Optional[float]]
    test: tuple[Optional[float], Optional[float]]
    remaining_pct: float
    resumed_elapsed: float = 0.0  # seconds the level had trained before the checkpoint it resumed from


class LevelRunner:
    """Trains levels of one engine; with a run folder and checkpoints, the levels of a run."""

    def __init__(self, engine: Engine, run_dir: Optional[RunDirectory] = None, checkpoints: Optional[LevelCheckpoints] = None,
                 log: Callable[[str], None] = print):
        self.engine, self.run_dir, self.checkpoints, self.log = engine, run_dir, checkpoints, log

    def dense_plan(self, ticket: "TicketStrategy", schedule: LevelSchedule) -> LevelPlan:
        """Level 0: the dense mask over the strategy's prunable weights, the initialization saved, and the weights
        (and optimizer state, when the strategy rewinds it) captured at the rewind point as training passes it."""
        engine, run_dir = self.engine, self.run_dir
        model, is_main = engine.unwrapped, engine.accelerator.is_main_process
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

    def run(self, level: int, plan: LevelPlan, positions: torch.Tensor, schedule: LevelSchedule, *,
            selection: Optional["DataSelectionStrategy"] = None, resumed: Optional[Checkpoint] = None,
            trainer: Optional[Trainer] = None, evaluate: Sequence[str] = ("val", "test"), desc: Optional[str] = None,
            check_mask: bool = False) -> LevelOutcome:
        """Train ``level`` from ``plan`` (continuing ``resumed`` when given) and evaluate it on ``evaluate``.

        With ``check_mask`` a level that starts afresh first records its mask's health (`MaskHealth`) in
        ``plan.info["mask_health"]`` (kept in its checkpoints) and warns when the mask may cut the network.
        The level's optimizer is released when it ends, however it ends; a diverging level also loses its
        checkpoints (they may hold the diverging weights), so a corrected run restarts it from its beginning.
        """
        engine = self.engine
        accelerator, trainer = engine.accelerator, trainer or engine.trainer
        if plan.model is not None:
            # the strategy built a new (smaller) model: drop Accelerate's references to the old one and its
            # optimizers, then train the new one from here on (the optimizer below is created on it)
            accelerator.free_memory()
            engine.use_model(plan.model)
        elif plan.weights is not None:
            engine.unwrapped.load_state_dict(plan.weights)
        unwrapped = engine.unwrapped
        trainer_for_health = trainer if check_mask and resumed is None else None
        health_split = ("val" if "val" in engine.sources else engine.eval_split) if trainer_for_health is not None else None
        dense_start = None
        if trainer_for_health is not None and plan.model is None:  # the unmasked start point, for comparison
            dense_start = start_point_accuracy(trainer_for_health, unwrapped, health_split)
        if resumed is not None:
            # the checkpoint's mask is the one this level trained with (a mask search need not repeat exactly)
            saved = TicketMask.load(resumed.mask_path, unwrapped)
            if set(saved.masks) != set(plan.mask.masks):
                raise PracError(f"checkpoint mask {str(resumed.mask_path)!r} covers other weights than level {level}'s plan; "
                                f"delete {str(resumed.path)!r} to restart the level from its beginning")
            plan.mask = saved
            plan.info.update(resumed.process.get("plan_info", {}))
            unwrapped.load_state_dict(resumed.model)
        check_same_mask_everywhere(accelerator, plan.mask, level)
        enforcer = MaskEnforcer(unwrapped, plan.mask)
        enforcer.apply()
        if trainer_for_health is not None:
            self._record_health(level, plan, trainer_for_health, health_split, dense_start)
        optimizer = accelerator.prepare_optimizer(create_optimizer(unwrapped, trainer.cfg))
        try:
            return self._train(level, plan, positions, schedule, selection, resumed, trainer, evaluate, desc, enforcer, optimizer)
        finally:
            release_optimizer(accelerator, optimizer)

    def _record_health(self, level: int, plan: LevelPlan, trainer: Trainer, split: str, dense_start: Optional[float]) -> None:
        """The masked start point's health, before training (the weights are masked already)."""
        labels = self.engine.sources[split].split.labels
        health = MaskHealth(split, empty_layers(plan.mask), start_point_accuracy(trainer, self.engine.unwrapped, split),
                            dense_start, chance_ceiling(labels))
        plan.info["mask_health"] = health.figures(level)
        if health.warning(level):
            self.log(health.warning(level))

    def _train(self, level, plan, positions, schedule, selection, resumed, trainer, evaluate, desc, enforcer, optimizer):
        engine, checkpoints = self.engine, self.checkpoints
        accelerator, unwrapped = engine.accelerator, engine.unwrapped
        if plan.optimizer_state is not None:
            optimizer.load_state_dict(plan.optimizer_state)
        observer = selection.batch_observer(level) if selection is not None else None
        epoch_hook = selection.epoch_hook(level) if selection is not None else None
        progress, resumed_elapsed = None, 0.0
        if resumed is not None:
            optimizer.load_state_dict(resumed.optimizer)
            if accelerator.scaler is not None and resumed.scaler is not None:
                accelerator.scaler.load_state_dict(resumed.scaler)
            if selection is not None:
                selection.load_state_dict(resumed.process["selection"])
            set_rng_state(resumed.process["rng"])
            progress = TrainProgress.from_state_dict(resumed.process["progress"])
            resumed_elapsed = progress.elapsed  # read now: training moves it on
            self.log(f"Resuming level {level} at step {progress.step} from {resumed.path}")

        def save_checkpoint(progress: TrainProgress) -> None:
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            checkpoints.save(
                level, progress.step, state_to_cpu(unwrapped), optimizer.state_dict(), plan.mask.save, scaler,
                {"progress": progress.state_dict(), "rng": rng_state(), "plan_info": plan.info,
                 "selection": selection.state_dict() if selection is not None else {}},
            )

        remaining = plan.size.get("weights_remaining_pct", 100.0 * plan.mask.density)  # structured: against the dense model
        try:
            result = trainer.train(
                engine.model, optimizer, enforcer, positions, schedule, plan.start_step, level, plan.step_callbacks,
                observer, epoch_hook, desc=desc or f"level {level:2d} ({remaining:6.2f}% left)",
                resume=progress, checkpoint=save_checkpoint if checkpoints is not None else None,
                policy=checkpoints.policy if checkpoints is not None else None,
            )
        except DivergedError:
            if checkpoints is not None:
                checkpoints.clear()  # they may hold the diverging weights: the level restarts from its beginning
            raise
        check_finite(unwrapped, level)
        scores = {split: trainer.evaluate(engine.model, split) if split in engine.sources else (None, None) for split in evaluate}
        return LevelOutcome(result, scores.get("val", (None, None)), scores.get("test", (None, None)), remaining, resumed_elapsed)


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


def with_seed(trainer: Trainer, seed: int) -> Trainer:
    """The same trainer with another data-order seed (retraining a ticket with several seeds)."""
    return Trainer(trainer.accelerator, replace(trainer.cfg, seed=seed), trainer.sources)
