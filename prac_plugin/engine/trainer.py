"""The one training loop every strategy uses, on Accelerate.

Per step it sets the learning rate from the step number, runs forward/backward (mixed precision through
Accelerate), masks gradients of pruned weights, steps the optimizer and re-applies the mask. Losses and
accuracies accumulate as device tensors and are read once per epoch: no host sync per step.

On CUDA (``train.cuda_graphs``) the same step is captured in a CUDA graph and replayed (`captured`); elsewhere,
and whenever it cannot be captured, the eager loop below runs, unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType
from timm.optim import create_optimizer_v2
from tqdm.auto import tqdm

from .checkpoint import CheckpointPolicy
from ..compat.accelerate_private import unwrapped_optimizer
from ..compat.torch_private import is_compiled_module
from ..errors import PracError
from ..tickets.masks import MaskEnforcer
from ..config.recipes import TrainSection
from .captured import CapturedStep, GraphDecision, decide, require
from ..data.sources import BatchSource
from .schedule import LevelSchedule, lr_factor

BatchObserver = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
StepCallback = Callable[[torch.nn.Module, torch.optim.Optimizer], None]
EpochHook = Callable[[int, torch.nn.Module], bool]  # (epochs done, model) -> stop the level now?


@dataclass
class TrainResult:
    steps: int = 0
    examples: int = 0
    wall_time: float = 0.0
    train_loss: float = float("nan")
    train_acc: float = float("nan")
    history: list = field(default_factory=list)
    cuda_graphs: dict = field(default_factory=dict)  # GraphDecision.figures(): captured or not, and why


@dataclass
class TrainProgress:
    """Where a level's training stands: what a mid-level checkpoint must keep to continue it exactly.

    ``loss_sum``, ``correct`` and ``seen`` are this process's running sums of the unfinished epoch
    (None at an epoch boundary); ``finished`` marks a level that early-bird stopping ended.
    """

    step: int
    examples: int = 0
    history: list = field(default_factory=list)
    elapsed: float = 0.0
    finished: bool = False
    loss_sum: Optional[torch.Tensor] = None
    correct: Optional[torch.Tensor] = None
    seen: int = 0

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_state_dict(cls, state: dict) -> "TrainProgress":
        return cls(**state)


def create_optimizer(model: torch.nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    """timm's optimizer factory with the recipe's settings (SGD, SGD+Nesterov, Adam, AdamW)."""
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "filter_bias_and_bn": not cfg.decay_norm_and_bias}
    if cfg.optimizer == "sgd":
        name = "nesterov" if cfg.nesterov else "momentum"
        kwargs["momentum"] = cfg.momentum
    else:
        name = cfg.optimizer
    return create_optimizer_v2(model, opt=name, **kwargs)


def _direct_optimizer(accelerator: Accelerator, optimizer):
    """The optimizer to call per step: Accelerate's wrapper only when it does work for us.

    ``AcceleratedOptimizer`` handles fp16 gradient scaling, XLA, DeepSpeed and gradient accumulation;
    without those it only adds per-step cost (an importlib probe in ``step``, ``inspect.signature`` in
    ``zero_grad``: about 0.25 ms per step on a CPU, measured in benchmarks/engine_overhead.py).
    """
    plain = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    inner, scaler = unwrapped_optimizer(optimizer)
    if plain and inner is not None and scaler is None and accelerator.gradient_accumulation_steps == 1:
        return inner
    return optimizer


class DivergedError(PracError):
    """The training loss of a level became NaN or infinite: the level is not a ticket and is not saved."""

    def __init__(self, level: int, epoch: int, step: int, loss: float):
        super().__init__(f"level {level} diverged: the training loss of epoch {epoch} (step {step}) is {loss}; "
                         "nothing of this level is saved. Lower train.lr or set train.grad_clip, then run again")
        self.level, self.epoch, self.step, self.loss = level, epoch, step, loss


def _epoch_seed(seed: int, level: int, epoch: int) -> int:
    return (seed * 1_000_003 + level * 10_007 + epoch) % (2**63)


@dataclass
class _LevelRun:
    """One level's training as `Trainer._prepare` set it up: what the per-step loop calls, and where it stands."""

    model: torch.nn.Module
    unwrapped: torch.nn.Module
    optimizer: Any  # the one called per step (`_direct_optimizer`)
    backward: Callable[[torch.Tensor], None]
    base_lrs: list[float]
    enforcer: MaskEnforcer
    observer: Optional[BatchObserver]
    decision: GraphDecision
    positions: torch.Tensor
    schedule: LevelSchedule
    level: int
    callbacks: dict[int, StepCallback]
    epoch_end: Optional[EpochHook]
    progress: TrainProgress
    checkpoint: Optional[Callable[[TrainProgress], None]]  # None: no checkpoints this level
    policy: Optional[CheckpointPolicy]
    captured: Optional[CapturedStep] = None
    started: float = 0.0  # perf_counter at the level's start, less the time a resumed level had trained

    def snapshot(self, step: int, loss_sum=None, correct=None, seen: int = 0) -> TrainProgress:
        """The progress at ``step`` (inside an epoch: with its running sums), for a checkpoint."""
        progress = self.progress
        progress.step, progress.elapsed = step, time.perf_counter() - self.started
        progress.loss_sum, progress.correct, progress.seen = loss_sum, correct, seen
        return progress


class Trainer:
    """``step_mode="uncaptured"`` trains every level through the captured step's function without capturing it
    (tests and dry runs on a CPU: the same results as the eager loop); None decides per level (`graph_decision`)."""

    def __init__(self, accelerator: Accelerator, cfg: TrainSection, sources: dict[str, BatchSource],
                 step_mode: Optional[str] = None, log: Optional[Callable[[str], None]] = None):
        if step_mode not in (None, "uncaptured"):
            raise ValueError(f"unknown step_mode {step_mode!r}")
        self.accelerator, self.cfg, self.sources, self.step_mode = accelerator, cfg, sources, step_mode
        self.log = log
        self._last_graph_line: Optional[str] = None

    def graph_decision(self, model: torch.nn.Module, stepper, wrapped, observer) -> GraphDecision:
        """Whether this level's step is captured (`captured.decide` on what this run is)."""
        acc, cfg = self.accelerator, self.cfg
        inner, scaler = unwrapped_optimizer(wrapped)
        plain = acc.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
        compile_backend = "inductor" if cfg.compile is True else ("no" if cfg.compile is False else str(cfg.compile))
        return decide(cfg.cuda_graphs, device_type=acc.device.type, mixed_precision=str(acc.mixed_precision),
                      has_scaler=scaler is not None or getattr(acc, "scaler", None) is not None, grad_clip=cfg.grad_clip,
                      num_processes=acc.num_processes, plain_distribution=plain, accumulation_steps=acc.gradient_accumulation_steps,
                      optimizer=inner if inner is not None else stepper, observer=observer, compile_backend=compile_backend,
                      model=acc.unwrap_model(model, keep_torch_compile=False))

    def _note(self, decision: GraphDecision) -> None:
        """One log line when the decision differs from the previous level's."""
        line = decision.line()
        quiet = self.accelerator.device.type != "cuda" and decision.requested == "auto"  # eager is the CPU's default
        if line != self._last_graph_line and self.accelerator.is_local_main_process and not quiet:
            (self.log or tqdm.write)(line)
        self._last_graph_line = line

    def _set_lr(self, optimizer, base_lrs: list[float], step: int, schedule: LevelSchedule) -> None:
        cfg = self.cfg
        factor = lr_factor(step, schedule.total_steps, schedule.schedule_epoch_steps, cfg.schedule, cfg.milestones, cfg.gamma, cfg.warmup_steps)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor

    def train(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        enforcer: MaskEnforcer,
        positions: torch.Tensor,
        schedule: LevelSchedule,
        start_step: int = 0,
        level: int = 0,
        step_callbacks: Optional[dict[int, StepCallback]] = None,
        observer: Optional[BatchObserver] = None,
        epoch_end: Optional[EpochHook] = None,
        desc: str = "train",
        resume: Optional[TrainProgress] = None,
        checkpoint: Optional[Callable[[TrainProgress], None]] = None,
        policy: Optional[CheckpointPolicy] = None,
    ) -> TrainResult:
        """Train ``model`` on ``positions`` of the training split from ``start_step`` to the schedule's end.

        ``resume`` continues from a checkpointed `TrainProgress` (model and optimizer already restored);
        ``checkpoint`` is called with the progress whenever ``policy`` says a checkpoint is due.
        """
        checkpointing = checkpoint is not None and policy is not None and policy.enabled
        run = self._prepare(model, optimizer, enforcer, observer, positions, schedule, level, step_callbacks or {},
                            epoch_end, resume or TrainProgress(step=start_step), checkpoint if checkpointing else None, policy)
        model.train()
        step = run.progress.step
        if resume is None and step in run.callbacks:
            run.callbacks[step](run.unwrapped, run.optimizer)
        bar = tqdm(total=schedule.total_steps - start_step, initial=step - start_step, desc=desc,
                   disable=not self.accelerator.is_local_main_process, leave=True, dynamic_ncols=True)
        while step < schedule.total_steps and not run.progress.finished:
            step = self._epoch(run, step, bar)
        bar.close()
        return self._result(run, step - start_step)

    def _prepare(self, model, optimizer, enforcer, observer, positions, schedule, level, callbacks, epoch_end, progress,
                 checkpoint, policy) -> _LevelRun:
        """Decide once, before the level's first step, how its steps run: the optimizer to call, the backward pass,
        the base learning rates, and whether the step is captured (`CapturedStep`) or eager."""
        acc, cfg = self.accelerator, self.cfg
        stepper = _direct_optimizer(acc, optimizer)
        decision = require(self.graph_decision(model, stepper, optimizer, observer))
        self._note(decision)
        # without a grad scaler or accumulation, Accelerate's backward is loss.backward() plus a division by 1
        backward = (lambda loss: loss.backward()) if stepper is not optimizer else acc.backward
        base_lrs = [group.get("initial_lr", group["lr"]) for group in stepper.param_groups]
        for group, base in zip(stepper.param_groups, base_lrs):
            group["initial_lr"] = base  # kept in the optimizer state: a resumed level scales the same base
        run = _LevelRun(model, acc.unwrap_model(model, keep_torch_compile=False), stepper, backward, base_lrs, enforcer, observer,
                        decision, positions, schedule, level, callbacks, epoch_end, progress, checkpoint, policy)
        if decision.captured or self.step_mode == "uncaptured":
            if not decision.captured:
                run.decision = GraphDecision(decision.requested, False, f"the captured step's function, run without capture ({decision.reason})")

            def fell_back(reason: str) -> None:
                run.decision = GraphDecision(run.decision.requested, False, reason)
                self._note(run.decision)

            run.captured = CapturedStep(model, stepper, enforcer, observer, acc.device, cfg.batch_size, str(acc.mixed_precision),
                                        compiled=is_compiled_module(model), channels_last=cfg.channels_last,
                                        mode="graph" if decision.captured else "uncaptured",
                                        fallback=fell_back if decision.requested == "auto" else None)
        run.started = time.perf_counter() - progress.elapsed
        return run

    def _epoch(self, run: _LevelRun, step: int, bar) -> int:
        """One epoch (or the rest of a resumed one) from ``step``: the per-step loop, eager or replayed; the step
        reached. Everything a step touches is a local here, and losses and accuracies stay on the device."""
        acc, cfg, source, progress = self.accelerator, self.cfg, self.sources["train"], run.progress
        model, optimizer, enforcer, observer, backward, captured = run.model, run.optimizer, run.enforcer, run.observer, run.backward, run.captured
        base_lrs, schedule, callbacks, unwrapped, checkpoint, policy = run.base_lrs, run.schedule, run.callbacks, run.unwrapped, run.checkpoint, run.policy
        channels_last = cfg.channels_last
        epoch, offset = divmod(step, schedule.steps_per_epoch)
        generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, run.level, epoch))
        order = run.positions[torch.randperm(len(run.positions), generator=generator)]
        if progress.loss_sum is not None:  # resumed inside this epoch
            loss_sum, correct, seen = progress.loss_sum.to(acc.device), progress.correct.to(acc.device), progress.seen
        else:
            loss_sum = torch.zeros((), device=acc.device)
            correct = torch.zeros((), device=acc.device, dtype=torch.long)
            seen = 0
        if captured is not None:  # the graph accumulates into its own tensors
            loss_sum, correct = captured.begin_epoch(loss_sum, correct)
        for images, labels, index in source.batches(order, cfg.batch_size, True, generator, start_batch=offset):
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            self._set_lr(optimizer, base_lrs, step, schedule)
            if captured is not None:
                captured.step(images, labels, index)  # the same step, replayed (lr from the floats just set)
                step += 1
                seen += labels.numel()
            else:
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
                if observer is not None:
                    observer(logits.detach(), labels, index)
                optimizer.zero_grad(set_to_none=True)
                backward(loss)
                enforcer.mask_gradients()
                if cfg.grad_clip:
                    acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                enforcer.apply()
                step += 1
                seen += labels.numel()
                loss_sum.add_(loss.detach(), alpha=labels.numel())
                correct.add_((logits.detach().argmax(1) == labels).sum())
            bar.update(1)
            if step in callbacks:
                callbacks[step](unwrapped, optimizer)
            if step >= schedule.total_steps:
                break
            if checkpoint is not None and policy.due_inside_epoch(step, schedule.steps_per_epoch, schedule.total_steps):
                checkpoint(run.snapshot(step, loss_sum.clone(), correct.clone(), seen))
        self._end_epoch(run, epoch, step, loss_sum, correct, seen, bar)
        return step

    def _end_epoch(self, run: _LevelRun, epoch: int, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, bar) -> None:
        """The epoch's figures (read from the device once, summed over processes; a non-finite loss is divergence),
        the optional validation, the epoch hook (early stopping) and an epoch-end checkpoint."""
        acc, cfg, schedule, progress = self.accelerator, self.cfg, run.schedule, run.progress
        totals = acc.reduce(torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=acc.device)]), "sum")
        epoch_loss, epoch_acc = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
        if not math.isfinite(epoch_loss):
            raise DivergedError(run.level, epoch + 1, step, epoch_loss)
        progress.examples += int(totals[2].item())
        record = {"epoch": epoch + 1, "step": step, "train_loss": epoch_loss, "train_acc": epoch_acc}
        if cfg.eval_every_epochs and (epoch + 1) % cfg.eval_every_epochs == 0 and "val" in self.sources and step < schedule.total_steps:
            record["val_loss"], record["val_acc"] = self.evaluate(run.model, "val")
        progress.history.append(record)
        acc.log({f"level_{run.level:02d}/{k}": v for k, v in record.items() if k not in ("epoch", "step")}, step=step)
        bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_loss:.3f}", acc=f"{epoch_acc:.3f}")
        if run.epoch_end is not None and step < schedule.total_steps and run.epoch_end(epoch + 1, run.unwrapped):
            record["stopped_early"] = True
            progress.finished = True
        if run.checkpoint is not None and run.policy.due_at_epoch_end(epoch + 1, step):
            run.checkpoint(run.snapshot(step))
        progress.loss_sum = progress.correct = None

    def _result(self, run: _LevelRun, steps: int) -> TrainResult:
        """The level's result; the captured step's graph is released."""
        figures = run.decision.figures()
        if run.captured is not None:
            figures.update(replayed_steps=run.captured.replays, eager_steps=run.captured.eager_steps)  # the tail batches eager
            run.captured.close()  # (an exception leaves the graph to the garbage collector with the level's frames)
        progress = run.progress
        result = TrainResult(steps=steps, examples=progress.examples, history=progress.history, cuda_graphs=figures)
        result.wall_time = time.perf_counter() - run.started
        if result.history:
            result.train_loss, result.train_acc = result.history[-1]["train_loss"], result.history[-1]["train_acc"]
        return result

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of ``model`` on a split, in eval mode, summed over processes."""
        acc, source = self.accelerator, self.sources[split]
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=acc.device)
        correct = torch.zeros((), device=acc.device)
        count = torch.zeros((), device=acc.device)
        positions = torch.arange(len(source.split))
        for images, labels, _ in source.batches(positions, self.cfg.eval_batch_size, training=False):
            with acc.autocast():  # a prepared model autocasts already; a sharded run's plain model does not
                logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
            count += labels.numel()
        totals = acc.reduce(torch.stack([loss_sum, correct, count]), "sum")
        model.train(was_training)
        return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
