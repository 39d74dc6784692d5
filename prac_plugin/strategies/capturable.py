"""The mark a batch observer carries when a captured training step may replay it (engine/captured.py).

Kept apart from the captured step itself so that the modules defining observers (the PrAC forgetting tracker, which
the timm hook imports too) need neither Accelerate nor the step's machinery.
"""

from __future__ import annotations

from typing import Callable, Optional


def capturable(function: Callable) -> Callable:
    """Mark a batch observer as safe inside a captured step: device ops only (no host reads, no Python state
    that changes per call), writing tensors in place that its owner's ``state_dict``/``load_state_dict`` cover."""
    function.cuda_graph_safe = True
    return function


def is_capturable(function: Optional[Callable]) -> bool:
    return function is None or bool(getattr(function, "cuda_graph_safe", False))
