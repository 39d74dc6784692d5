"""Accelerate internals the engine relies on (checked against accelerate 1.15.0).

- ``AcceleratorState._shared_state`` / ``AcceleratorState._reset_state``: Accelerate keeps one process-wide
  state and refuses a second mixed precision in it; a single process that runs several recipes (a notebook,
  the quick start, the benchmarks) starts it afresh between runs.
- ``Accelerator._optimizers``: every prepared optimizer is kept (with its momentum buffers) until
  ``free_memory``, which would drop the model too; a finished level forgets its own.
- ``AcceleratedOptimizer.optimizer`` / ``.scaler``: the wrapped optimizer, stepped directly when the wrapper
  has no work to do (see `prac_plugin.engine.trainer`).
- ``model._original_forward``: the module's forward before ``prepare_model`` wrapped it in autocast (see
  `autocast_forward_removed`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from accelerate import Accelerator
from accelerate.state import AcceleratorState

CHECKED_VERSION = "1.15.0"


def shared_state() -> dict:
    """The process-wide Accelerate state (empty before the first ``Accelerator``)."""
    return AcceleratorState._shared_state


def reset_shared_state(partial: bool = False) -> None:
    """Forget the process-wide state, keeping the launched processes' partial state (its device too) unless
    ``partial``: a test that moves from ``Accelerator(cpu=True)`` to the GPU in one process needs that."""
    AcceleratorState._reset_state(reset_partial_state=partial)


def prepared_optimizers(accelerator: Accelerator) -> list:
    return accelerator._optimizers


def release_optimizer(accelerator: Accelerator, optimizer: Any) -> None:
    """Drop one prepared optimizer from Accelerate's list, leaving models and other optimizers alone."""
    accelerator._optimizers = [kept for kept in accelerator._optimizers if kept is not optimizer]


def unwrapped_optimizer(optimizer: Any) -> tuple[Any, Any]:
    """(the optimizer inside Accelerate's wrapper or None, the wrapper's grad scaler or None)."""
    return getattr(optimizer, "optimizer", None), getattr(optimizer, "scaler", None)


@contextlib.contextmanager
def autocast_forward_removed(model: Any):
    """``model`` with the forward Accelerate replaced under mixed precision put back, for the duration.

    Accelerate's ``prepare_model`` keeps the module's own forward in ``model._original_forward`` and sets
    ``model.forward`` (an instance attribute) to it wrapped in ``torch.autocast`` (cast cache on) and
    ``convert_outputs_to_fp32``. The captured step enters its own autocast with the cache off instead; calling
    the module (not the bare forward) keeps its hooks.
    """
    wrapped = model.__dict__.get("forward")
    original = getattr(model, "_original_forward", None)
    if wrapped is None or original is None:
        yield model
        return
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped
