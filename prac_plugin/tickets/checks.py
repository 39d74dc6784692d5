"""Checks any ticket strategy shares before a run writes anything: pure counting from tensor sizes.

Each method's own checks live with it (``strategies/ltr/checks.py``, ``strategies/cts/checks.py``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import PracError
from .masks import floor_count, prunable_parameter_names


def prunable_sizes(model, include: Sequence[str] = (), ignore: Sequence[str] = ()) -> dict[str, int]:
    """Number of weights of each prunable tensor of ``model``, in mask order: all the checks below need."""
    params = dict(model.named_parameters())
    return {name: params[name].numel() for name in prunable_parameter_names(model, include, ignore)}


def check_layer_floor(sizes: Mapping[str, int], floor: int, smallest_keep: int, where: str) -> None:
    """Refuse a ``ticket.min_per_layer`` whose reserved weights exceed what the sparsest level keeps."""
    reserved = floor_count(sizes.values(), floor)
    if reserved > smallest_keep:
        raise PracError(
            f"ticket.min_per_layer = {floor} reserves {reserved:,} weights over {len(sizes)} prunable tensors, more than the "
            f"{smallest_keep:,} {where} keeps; lower ticket.min_per_layer to at most {smallest_keep // max(1, len(sizes))}"
        )


