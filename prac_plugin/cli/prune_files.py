"""``prac prune``: the next level's mask from saved weights, by the magnitude pruning ``prac run`` uses.

For ticket search outside ``prac run`` (timm's own ``train.py`` with the hook): train, prune the final weights
into the next mask, rewind, train again, all from the command line. The first level needs the model's name (to
know which tensors are Conv/Linear weights); later levels take the previous mask, which fixes the prunable set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import PracError
from ..errors import not_a_file
from ..tickets.masks import TicketMask


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a timm/torch checkpoint (``state_dict`` key, EMA not preferred)."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise PracError(f"weights file {str(path)!r} {problem}")
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip readers raise many types
        raise PracError(f"weights file {str(path)!r} could not be read: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PracError(f"weights file {str(path)!r} holds no tensors")
    return tensors


def first_mask(weights: dict[str, torch.Tensor], model_name: str, num_classes: Optional[int], in_chans: Optional[int],
               include: Sequence[str], ignore: Sequence[str]) -> TicketMask:
    """The dense mask of a timm model whose state the weights are (checked by loading them into it)."""
    from timm.models import create_model, is_model  # the package's import registered the classic LTH models

    if not is_model(model_name):
        raise PracError(f"--model {model_name!r} is not a timm model name")
    kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
    model = create_model(model_name, pretrained=False, **kwargs)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        detail = detail if len(detail) <= 240 else detail[:240] + " ..."
        raise PracError(f"the weights are not a state of {model_name!r}{' with ' + str(kwargs) if kwargs else ''} "
                        f"(set --num-classes/--in-chans as trained): {detail}") from None
    try:
        return TicketMask.dense(model, include, ignore)
    except PracError as exc:  # the recipe's names for the same options
        raise PracError(str(exc).replace("ticket.include", "--include").replace("ticket.ignore", "--ignore")) from None


def prune_file(weights_path: str, output: str, fraction: float, scope: str = "global", mask_path: Optional[str] = None,
               model_name: Optional[str] = None, num_classes: Optional[int] = None, in_chans: Optional[int] = None,
               include: Sequence[str] = (), ignore: Sequence[str] = ()) -> tuple[TicketMask, TicketMask]:
    """Write the mask that removes ``fraction`` of the remaining weights (smallest magnitude) to ``output``;
    returns (previous mask, new mask). Refuses to replace an existing file."""
    if not 0.0 < fraction < 1.0:
        raise PracError(f"--fraction {fraction} must be in (0, 1): the share of the remaining weights to remove")
    if Path(output).exists():
        raise PracError(f"--output {output!r} exists; choose a new file (masks are never overwritten)")
    if mask_path is None and model_name is None:
        raise PracError("name the previous level's mask (--mask) or, for the first level, the timm model (--model)")
    if mask_path is not None and (include or ignore):
        raise PracError("--include/--ignore choose the prunable weights of a first level; with --mask the mask already does")
    weights = load_weights(weights_path)
    if mask_path is not None:
        previous = TicketMask.load(mask_path)
    else:
        previous = first_mask(weights, model_name, num_classes, in_chans, include, ignore)
    try:
        pruned = previous.prune_weights(weights, fraction, scope)
    except PracError as exc:
        raise PracError(f"{weights_path!r} with mask {mask_path or model_name!r}: {exc}") from None
    pruned.save(output, {"density": f"{pruned.density:.6f}", "pruned_from": str(weights_path), "fraction": str(fraction),
                         "scope": scope, "previous_mask": str(mask_path or "dense")})
    return previous, pruned
