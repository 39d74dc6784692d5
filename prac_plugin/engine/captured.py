"""The training step as one function that a CUDA graph can capture whole (DESIGN.md section 8).

On one H200 the eager step is bound by the CPU that launches its ~430 kernels. PyTorch's "whole-network
capture" records the step once and replays it with one launch. What the step does is the eager loop's, in its
order: forward (autocast entered inside, its cast cache off), cross-entropy, the batch observer (the forgetting
tracker's per-example write), backward, the gradient mask, the optimizer step, the weight mask, the running
loss and accuracy sums. What a graph needs around it:

- static input buffers: each full batch is copied into them, then the graph replays;
- the learning rate in a one-element device tensor per parameter group, set from the schedule before each
  replay (a Python float would be frozen into the graph); SGD's fused kernel reads it on the device. The
  optimizer's ``param_groups`` hold that tensor (and ``fused``) only while the step is captured or called, so
  ``state_dict`` (checkpoints, the rewind point) stays what the eager loop writes;
- momentum buffers that exist before capture: created as zeros (with no dampening, momentum * 0 + g = g, the
  eager first step exactly);
- a warm-up of a few steps on a side stream, then every tensor it touched restored in place (weights, buffers
  with BatchNorm's ``num_batches_tracked``, optimizer state, the observer's state, the sums, the RNG), so
  capturing changes no result;
- the tail batch (45,000 = 351 x 128 + 72) runs the same function eagerly.

`decide` says whether a run can use a graph and, when not, why (one line for the log and the level metrics).
``mode="uncaptured"`` does all of the above except the capture and calls the function on the static buffers
instead of replaying: the CPU tests show that it gives bit-identical results to the eager loop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..compat.accelerate_private import autocast_forward_removed
from ..strategies.capturable import capturable, is_capturable  # noqa: F401  (capturable: re-exported for observers)
from ..compat.torch_private import batchnorm_types
from ..errors import PracError

CUDA_GRAPH_OPTIONS = ("auto", "on", "off")
WARMUP_STEPS = 3  # PyTorch's notes warm up a few eager iterations on a side stream before capturing
MODES = ("graph", "uncaptured", "eager")


@dataclass
class GraphDecision:
    """Whether a level's steps are captured, and why not when they are not (for the log and the metrics)."""

    requested: str
    captured: bool
    reason: str

    def figures(self) -> dict:
        return {"requested": self.requested, "captured": self.captured, "reason": self.reason}

    def line(self) -> str:
        return ("train.cuda_graphs: the training step is captured in a CUDA graph" if self.captured
                else f"train.cuda_graphs = {self.requested}: eager training steps ({self.reason})")


def decide(requested: str, *, device_type: str, mixed_precision: str, has_scaler: bool, grad_clip: Optional[float],
           num_processes: int, plain_distribution: bool, accumulation_steps: int, optimizer: Optional[torch.optim.Optimizer],
           observer: Optional[Callable], compile_backend: str = "no", model: Optional[torch.nn.Module] = None) -> GraphDecision:
    """The captured step or the eager loop for a level, from what the run is (a pure function: testable anywhere).

    ``auto`` captures whenever nothing below stands in the way; ``on`` makes any of them an error (`require`);
    ``off`` never captures. ``optimizer`` is the one the step calls (inside Accelerate's wrapper or not).
    """
    if requested not in CUDA_GRAPH_OPTIONS:
        raise PracError(f"train.cuda_graphs = {requested!r} is not one of {', '.join(CUDA_GRAPH_OPTIONS)}")
    if requested == "off":
        return GraphDecision(requested, False, "train.cuda_graphs is off")
    reasons = []
    if device_type != "cuda":
        reasons.append(f"the device is {device_type}: CUDA graphs need a CUDA GPU")
    if mixed_precision == "fp16" or has_scaler:
        reasons.append("fp16 trains with a gradient scaler, whose step reads the device on the host")
    if grad_clip:
        reasons.append("train.grad_clip clips through Accelerate, which is not captured")
    if num_processes > 1:
        reasons.append(f"{num_processes} processes: a captured step with DDP is not supported yet")
    if not plain_distribution:
        reasons.append("Accelerate's distributed mode (DeepSpeed, FSDP, XLA, ...) is not captured")
    if accumulation_steps > 1:
        reasons.append("gradient accumulation is not captured")
    if optimizer is not None:
        if type(optimizer) is not torch.optim.SGD:
            reasons.append(f"the optimizer is {type(optimizer).__name__}: the captured step supports SGD (fused, tensor lr) only so far")
        elif any(group.get("dampening", 0) != 0 for group in optimizer.param_groups):
            reasons.append("SGD dampening: the captured step's zero momentum buffers equal the eager first step only without it")
    if not is_capturable(observer):
        reasons.append("the data-selection strategy's batch observer is not marked capturable")
    if compile_backend.lower() == "cudagraphs":
        reasons.append("train.compile = cudagraphs already records graphs")
    if model is not None:
        for name, module in model.named_modules():
            if isinstance(module, batchnorm_types()) and module.track_running_stats and module.momentum is None:
                reasons.append(f"BatchNorm {name or 'model'} has momentum=None (a cumulative average read on the host)")
                break
    if reasons:
        return GraphDecision(requested, False, "; ".join(reasons))
    return GraphDecision(requested, True, "captured")


def require(decision: GraphDecision) -> GraphDecision:
    """``on`` and a refusal: an error naming the reason, rather than a silently slower run."""
    if decision.requested == "on" and not decision.captured:
        raise PracError(f"train.cuda_graphs = on, but the training step cannot be captured here: {decision.reason}. "
                        "Use train.cuda_graphs: auto to train eagerly in that case")
    return decision


# -- state a step writes ---------------------------------------------------------------------------------
class StepState:
    """A copy of every tensor a training step writes; `restore` copies it back in place.

    In place, because a captured graph holds the tensors' addresses: the model's parameters and buffers
    (BatchNorm running statistics and ``num_batches_tracked``), the optimizer's per-parameter state, the
    observer owner's state (through its ``state_dict``/``load_state_dict``), any ``extra`` tensors (the running
    sums) and the CPU and CUDA random number generators.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, observer: Optional[Callable] = None,
                 extra: tuple[torch.Tensor, ...] = ()):
        self.model, self.optimizer, self.extra_tensors = model, optimizer, extra
        self.owner = getattr(observer, "__self__", None)
        with torch.no_grad():
            self.params = [(p, p.detach().clone()) for p in model.parameters()]
            self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
            self.optimizer_state = {id(p): {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in state.items()}
                                    for p, state in optimizer.state.items()}
            self.extra = [t.detach().clone() for t in extra]
        self.owner_state = self.owner.state_dict() if self.owner is not None and hasattr(self.owner, "state_dict") else None
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    @torch.no_grad()
    def restore(self) -> None:
        for live, saved in self.params + self.buffers:
            live.copy_(saved)
        for p, state in self.optimizer.state.items():
            saved = self.optimizer_state.get(id(p))
            for key, value in list(state.items()):
                if saved is None or key not in saved:
                    if not torch.is_tensor(value):
                        raise PracError(f"the warm-up added optimizer state {key!r} = {value!r} that cannot be restored")
                    value.zero_()  # state the warm-up created: what it was before, as a tensor (zero momentum)
                elif torch.is_tensor(value):
                    value.copy_(saved[key])
                else:
                    state[key] = saved[key]
        for live, saved in zip(self.extra_tensors, self.extra):
            live.copy_(saved)
        if self.owner_state is not None:
            self.owner.load_state_dict(self.owner_state)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def create_momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """Zero momentum buffers for SGD's parameters that have none yet, so they exist before capture."""
    for group in optimizer.param_groups:
        if group.get("momentum", 0) == 0:
            continue
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


# -- the step ----------------------------------------------------------------------------------------------
class CapturedStep:
    """One level's training step, captured on first use (``graph``), run on static buffers (``uncaptured``) or
    plainly (``eager``, the fallback when capture fails under ``auto``).

    ``step(images, labels, index)`` trains on one batch, the optimizer's ``param_groups`` lr already set for it
    (floats, by the trainer); the running sums are ``loss_sum`` and ``correct``, reset by `begin_epoch`.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, enforcer, observer: Optional[Callable],
                 device: torch.device, batch_size: int, mixed_precision: str = "no", compiled: bool = False,
                 channels_last: bool = False, mode: str = "graph", fallback: Optional[Callable[[str], None]] = None):
        if mode not in MODES:
            raise ValueError(f"unknown step mode {mode!r}")
        self.model, self.optimizer, self.enforcer, self.observer = model, optimizer, enforcer, observer
        self.device, self.batch_size, self.mode, self.channels_last = torch.device(device), batch_size, mode, channels_last
        self.fallback = fallback  # called with the reason when capture fails and the step goes eager
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        self.compiled = compiled
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        param_device = next((p.device for g in optimizer.param_groups for p in g["params"]), self.device)
        self.lr = [torch.zeros((), dtype=torch.float32, device=param_device) for _ in optimizer.param_groups]
        self.static: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self.graph = None
        self.captures = 0
        self.replays = 0
        self.eager_steps = 0

    # the step function: what is captured ----------------------------------------------------------------
    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None or self.compiled:
            return self.model(images)  # fp32, or a compiled model whose autocast dynamo traced into its graph
        # Accelerate's autocast wrapper keeps its cast cache on; the step enters its own with the cache off
        with autocast_forward_removed(self.model), torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=False):
            logits = self.model(images)
        return logits.float()  # as Accelerate's convert_outputs_to_fp32

    def _step(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        logits = self._forward(images)
        loss = F.cross_entropy(logits, labels)
        if self.observer is not None:
            self.observer(logits.detach(), labels, index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.enforcer.mask_gradients()
        self.optimizer.step()
        self.enforcer.apply()
        self.loss_sum.add_(loss.detach(), alpha=labels.numel())
        self.correct.add_((logits.detach().argmax(1) == labels).sum())

    @contextlib.contextmanager
    def _tensor_lr(self):
        """The optimizer as the graph runs it: lr from the device tensors, SGD's fused kernel on CUDA."""
        saved = [(group["lr"], group.get("fused"), group.get("foreach")) for group in self.optimizer.param_groups]
        for group, lr in zip(self.optimizer.param_groups, self.lr):
            group["lr"] = lr
            if self.device.type == "cuda":
                group["fused"], group["foreach"] = True, False  # foreach with a tensor lr reads it on the host
        try:
            yield
        finally:
            for group, (lr, fused, foreach) in zip(self.optimizer.param_groups, saved):
                group["lr"], group["fused"], group["foreach"] = lr, fused, foreach

    # around it ------------------------------------------------------------------------------------------
    def begin_epoch(self, loss_sum: Optional[torch.Tensor] = None, correct: Optional[torch.Tensor] = None):
        """Reset the running sums in place (to a resumed checkpoint's when given); returns them."""
        with torch.no_grad():
            self.loss_sum.copy_(loss_sum) if loss_sum is not None else self.loss_sum.zero_()
            self.correct.copy_(correct) if correct is not None else self.correct.zero_()
        return self.loss_sum, self.correct

    def _set_lr_tensors(self) -> None:
        with torch.no_grad():
            for tensor, group in zip(self.lr, self.optimizer.param_groups):
                tensor.fill_(group["lr"])  # a kernel argument, no host-device sync

    def prepare(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        """Static buffers, momentum buffers, warm-up on a side stream, state restored, then (``graph``) capture."""
        layout = torch.channels_last if self.channels_last and images.ndim == 4 else torch.contiguous_format
        self.static = (torch.empty_like(images, memory_format=layout), torch.empty_like(labels), torch.empty_like(index))
        for buffer, value in zip(self.static, (images, labels, index)):
            buffer.copy_(value)
        create_momentum_buffers(self.optimizer)
        state = StepState(self.model, self.optimizer, self.observer, (self.loss_sum, self.correct))
        cuda = self.device.type == "cuda"
        try:
            with self._tensor_lr():
                if cuda:
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        for _ in range(WARMUP_STEPS):
                            self._step(*self.static)
                    torch.cuda.current_stream().wait_stream(side)
                else:
                    for _ in range(WARMUP_STEPS):
                        self._step(*self.static)
                state.restore()
                if self.mode == "graph":
                    self.graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(self.graph):
                        self._step(*self.static)
                    self.captures += 1
        except Exception as exc:
            if self.mode != "graph" or self.fallback is None:
                raise
            self.graph = None
            state.restore()  # a failed capture ran nothing, but the warm-up may have run part of a step
            self.mode = "eager"
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.fallback(f"capture failed ({type(exc).__name__}: {first_line})")

    def step(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        if self.mode == "eager" or images.shape[0] != self.batch_size:
            self.eager_steps += 1
            self._step(images, labels, index)  # the tail batch, or the fallback: the same function, eagerly
            return
        if self.static is None:
            self.prepare(images, labels, index)
            if self.mode == "eager":
                return self.step(images, labels, index)
        self._set_lr_tensors()
        for buffer, value in zip(self.static, (images, labels, index)):
            buffer.copy_(value)
        if self.graph is not None:
            self.graph.replay()
        else:
            with self._tensor_lr():
                self._step(*self.static)
        self.replays += 1

    def invalidate(self) -> None:
        """Forget the graph (a mask, optimizer or tensor replaced other than in place): the next full batch
        warms up and captures anew. Values copied into the captured tensors in place need nothing."""
        self.graph, self.static = None, None

    def close(self) -> None:
        """Release the graph and its memory pool (the gradients point into it)."""
        if self.graph is not None:
            for p in self.model.parameters():
                p.grad = None
        self.graph, self.static = None, None
