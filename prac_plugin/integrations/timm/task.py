"""A timm training task (``timm.task``) that reports to the prac_plugin hook, whatever task it wraps.

timm's current ``train.py`` runs the forward pass and the loss inside a task (``result = task(input, target)``)
and calls ``task.update_ema(step=num_updates)`` after every optimizer update, EMA or not. Wrapping the task
the script builds gives the hook both places without touching the loop:

- ``forward``: the ids are split off the target before the wrapped task sees it, and its ``output`` (the
  logits; the student's, for distillation) is recorded against each example's hard label;
- ``update_ema``: the hook counts the update (rewind point, epoch ends) before the wrapped task updates its EMA.

Everything else (EMA, compile, DDP, checkpoints, evaluation) is the wrapped task's own, so the wrapper follows
timm's task API rather than its loop: the loop may change without this file changing.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from timm.task import TrainingTask
from torch import nn

from ...errors import PracError


class PracTask(TrainingTask):
    """``task`` with the hook's per-batch recording and per-update counting; delegates everything else."""

    def __init__(self, task: nn.Module, hook: Any):
        super().__init__(device=getattr(task, "device", None), dtype=getattr(task, "dtype", None), verbose=False)
        self.task = task
        object.__setattr__(self, "hook", hook)  # not a submodule: no parameters, no state_dict entries

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        target, labels, rows = self.hook.split_ids(target)
        result = self.task(input, target)
        if labels is not None:
            if not isinstance(result, dict) or "output" not in result:
                raise PracError(f"{type(self.task).__name__} returns no 'output' (logits), so --prac-select cannot record predictions")
            self.hook.record(result["output"], labels, rows)
        return result

    def update_ema(self, step: Optional[int] = None) -> None:
        self.hook.step(step)
        self.task.update_ema(step=step)

    # -- the wrapped task's own ---------------------------------------------------------------------
    def prepare_distributed(self, device_ids: Optional[list] = None, **ddp_kwargs) -> "PracTask":
        self.task.prepare_distributed(device_ids=device_ids, **ddp_kwargs)
        return self

    def compile(self, backend: str = "inductor", mode: Optional[str] = None, **compile_kwargs):
        return self.task.compile(backend=backend, mode=mode, **compile_kwargs)

    def get_trainable_module(self, ema: bool = False) -> Optional[nn.Module]:
        return self.task.get_trainable_module(ema=ema)

    def setup_ema(self, decay: float = 0.9999, use_warmup: bool = False, device: Optional[torch.device] = None, **kwargs) -> nn.Module:
        return self.task.setup_ema(decay=decay, use_warmup=use_warmup, device=device, **kwargs)

    def has_ema(self) -> bool:
        return self.task.has_ema()

    def compile_ema(self, backend: str = "inductor", mode: Optional[str] = None, **compile_kwargs):
        return self.task.compile_ema(backend=backend, mode=mode, **compile_kwargs)

    def get_clip_parameters(self, exclude_head: bool = False):
        return self.task.get_clip_parameters(exclude_head=exclude_head)

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        return self.task.get_eval_model(module=module, ema=ema)

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        return self.task.get_task_state(module=module, ema=ema)

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Optional[nn.Module] = None,
                        ema: bool = False) -> None:
        return self.task.load_task_state(state, strict=strict, module=module, ema=ema)

    def get_checkpoint_state(self, ema: bool = False, **kwargs) -> Dict[str, Any]:
        return self.task.get_checkpoint_state(ema=ema, **kwargs)

    def load_checkpoint_state(self, state_dict: Dict[str, Any], task_state: Optional[Dict[str, Any]] = None,
                              ema: bool = False, strict: bool = True) -> None:
        return self.task.load_checkpoint_state(state_dict, task_state, ema=ema, strict=strict)

    def no_sync(self):
        return self.task.no_sync()

    def create_evaluator(self, **kwargs):
        return self.task.create_evaluator(**kwargs)

    def __getattr__(self, name: str):
        """Attributes of the wrapped task (``teacher``, ``criterion``, ...) read through the wrapper."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "task" not in modules:
                raise
            return getattr(modules["task"], name)
