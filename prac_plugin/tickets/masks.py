"""Ticket masks: which weights survive, magnitude pruning, and keeping pruned weights exactly zero.

A `TicketMask` maps parameter names (e.g. ``layer1.0.conv1.weight``) to boolean tensors. It lives outside
the model, so the model's state_dict stays clean and a ticket loads with timm's ``load_checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..errors import PracError
from ..rundir.files import atomic_save_safetensors, load_safetensors
from .counts import SCOPES, count_to_prune  # noqa: F401  (re-exported: the pruning rule's arithmetic, torch-free)

PRUNABLE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


TYPE_PATTERN = "type:"


def _matches(patterns: Iterable[str], param_name: str, module_type: str) -> bool:
    """A glob on the parameter or module name, or ``type:GLOB`` on the module's class name (``type:Conv*``)."""
    module_name = param_name.rsplit(".", 1)[0]
    return any(fnmatch(module_type, p[len(TYPE_PATTERN):]) if p.startswith(TYPE_PATTERN)
               else fnmatch(param_name, p) or fnmatch(module_name, p) for p in patterns)


def prunable_parameter_names(
    model: nn.Module, include: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[str]:
    """Names of the Conv/Linear ``.weight`` tensors to prune; biases and normalization layers never are.

    ``include`` and ``ignore`` are glob patterns matched against the parameter or its module name
    (``fc`` and ``fc.weight`` both exempt the classifier), or ``type:GLOB`` against the module's class name
    (``type:Conv*`` includes only convolutions). A pattern that matches nothing is an error, because a typo
    there would silently prune the classifier.
    """
    candidates, seen = {}, set()
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, PRUNABLE_MODULES) and isinstance(weight, nn.Parameter) and id(weight) not in seen:
            seen.add(id(weight))  # tied weights are pruned once
            candidates[f"{module_name}.weight" if module_name else "weight"] = type(module).__name__
    for label, patterns in (("include", include), ("ignore", ignore)):
        for pattern in patterns:
            if not any(_matches([pattern], name, kind) for name, kind in candidates.items()):
                shown = ", ".join(list(candidates)[:8]) + (", ..." if len(candidates) > 8 else "")
                raise PracError(f"ticket.{label} pattern {pattern!r} matches no prunable weight (prunable: {shown})")
    names = [n for n, kind in candidates.items() if (not include or _matches(include, n, kind)) and not _matches(ignore, n, kind)]
    if not names:
        raise PracError(f"model {type(model).__name__} has no prunable Conv/Linear weights after include/ignore")
    return names


def keep_largest(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean vector keeping the ``keep`` largest scores; ties go to the lower index (deterministic)."""
    flags = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if keep > 0:
        order = torch.sort(scores, descending=True, stable=True).indices
        flags[order[:keep]] = True
    return flags


def keep_largest_per_tensor_floor(scores: Sequence[torch.Tensor], keep: int, floor: int = 0) -> list[torch.Tensor]:
    """Keep the ``keep`` largest of the pooled ``scores``, at least ``min(floor, n)`` of each tensor's ``n``.

    The floor is taken first (each tensor's largest scores), then the rest of the budget goes to the largest of
    the other scores, ties to the lower pooled index; ``floor = 0`` is exactly `keep_largest` on the pool.
    """
    sizes = [s.numel() for s in scores]
    pool = torch.cat([s.flatten() for s in scores]) if scores else torch.zeros(0)
    if floor <= 0:
        return list(torch.split(keep_largest(pool, keep), sizes))
    reserved = torch.cat([keep_largest(s.flatten(), min(floor, s.numel())) for s in scores])
    taken = int(reserved.sum())
    if taken > keep:
        raise PracError(f"ticket.min_per_layer = {floor} keeps {taken:,} weights, more than the {keep:,} this level keeps; lower it")
    others = (~reserved).nonzero().squeeze(1)
    flags = reserved.clone()
    flags[others[keep_largest(pool[others], keep - taken)]] = True
    return list(torch.split(flags, sizes))


def floor_count(sizes: Iterable[int], floor: int) -> int:
    """Weights a per-tensor floor reserves over tensors of ``sizes`` (every level keeps at least these)."""
    return sum(min(floor, int(n)) for n in sizes) if floor > 0 else 0


@dataclass
class LayerDensity:
    name: str
    total: int
    remaining: int

    @property
    def density(self) -> float:
        return self.remaining / self.total


class TicketMask:
    """Boolean keep-masks for a model's prunable weights (True = weight survives)."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = {name: m.detach().to("cpu", torch.bool) for name, m in masks.items()}

    # construction -----------------------------------------------------------------------------
    @classmethod
    def dense(cls, model: nn.Module, include: Sequence[str] = (), ignore: Sequence[str] = ()) -> "TicketMask":
        params = dict(model.named_parameters())
        names = prunable_parameter_names(model, include, ignore)
        return cls({n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in names})

    def prune_magnitude(self, model: nn.Module, fraction: float, scope: str = "global", min_per_layer: int = 0) -> "TicketMask":
        """A new mask removing ``fraction`` of the *remaining* weights with the smallest magnitude, each tensor
        keeping at least ``min_per_layer`` of them (or all it has, if fewer)."""
        self.check_model(model)
        return self.prune_weights(dict(model.named_parameters()), fraction, scope, min_per_layer)

    def prune_weights(self, weights: Mapping[str, torch.Tensor], fraction: float, scope: str = "global",
                      min_per_layer: int = 0) -> "TicketMask":
        """`prune_magnitude` on a name -> tensor mapping (a saved state dict): pruning as a pure function of
        the weights and this mask."""
        if scope not in SCOPES:
            raise PracError(f"prune scope {scope!r} is not one of {', '.join(SCOPES)}")
        for name, mask in self.masks.items():
            if name not in weights:
                raise PracError(f"mask entry {name!r} has no weight of that name")
            if tuple(weights[name].shape) != tuple(mask.shape):
                raise PracError(f"mask entry {name!r} has shape {tuple(mask.shape)}, the weight has {tuple(weights[name].shape)}")
            if not bool(torch.isfinite(weights[name].detach()).all()):
                raise PracError(f"weight {name!r} holds NaN or infinite values (a diverged run): its magnitudes cannot rank weights")
        scores = {n: weights[n].detach().abs().float().cpu().flatten()[m.flatten()] for n, m in self.masks.items()}
        if scope == "global":
            pooled = sum(s.numel() for s in scores.values())
            kept = dict(zip(scores, keep_largest_per_tensor_floor(list(scores.values()), pooled - count_to_prune(fraction, pooled), min_per_layer)))
        else:
            kept = {n: keep_largest(s, max(s.numel() - count_to_prune(fraction, s.numel()), min(min_per_layer, s.numel())))
                    for n, s in scores.items()}
        new = {}
        for name, mask in self.masks.items():
            flat = torch.zeros(mask.numel(), dtype=torch.bool)
            flat[mask.flatten().nonzero().squeeze(1)] = kept[name]
            new[name] = flat.view_as(mask)
        return TicketMask(new)

    # queries ----------------------------------------------------------------------------------
    @property
    def num_total(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    @property
    def num_remaining(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def density(self) -> float:
        return self.num_remaining / self.num_total

    def layers(self) -> list[LayerDensity]:
        return [LayerDensity(n, m.numel(), int(m.sum())) for n, m in self.masks.items()]

    def check_model(self, model: nn.Module) -> None:
        """Raise if this mask's names or shapes do not fit ``model``."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            if name not in params:
                raise PracError(f"mask entry {name!r} is not a parameter of {type(model).__name__}")
            if tuple(params[name].shape) != tuple(mask.shape):
                raise PracError(
                    f"mask entry {name!r} has shape {tuple(mask.shape)}, the model's weight has {tuple(params[name].shape)}"
                )

    def equal(self, other: "TicketMask") -> bool:
        return self.masks.keys() == other.masks.keys() and all(torch.equal(self.masks[n], other.masks[n]) for n in self.masks)

    # io ---------------------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        atomic_save_safetensors(self.masks, path, metadata)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: nn.Module | None = None,
        *,
        include: Sequence[str] | None = None,
        ignore: Sequence[str] | None = None,
    ) -> "TicketMask":
        """Read a mask file, refusing anything that is not exactly a mask of ``model``'s prunable weights.

        Always refused: entries that are not boolean (a weights file passed as a mask is named as such), that are
        not prunable Conv/Linear ``.weight`` tensors of ``model`` (biases, norm layers, unknown names), or whose
        shape differs. With ``include``/``ignore`` (the run's ``ticket`` globs; not None) the entries must be that
        prunable set exactly, so a mask missing a layer or holding the ignored classifier is refused too. Every
        problem is one `PracError` naming the file and the entry.
        """
        return cls.from_entries(path, read_mask_file(path), model, include=include, ignore=ignore)

    @classmethod
    def from_entries(
        cls,
        path: str | Path,
        tensors: Mapping[str, torch.Tensor],
        model: nn.Module | None = None,
        *,
        include: Sequence[str] | None = None,
        ignore: Sequence[str] | None = None,
    ) -> "TicketMask":
        """The mask of entries already read from ``path`` (a checkpoint's, read once), refused as `load` refuses."""
        check_mask_entries(path, tensors, model, include, ignore)
        return cls({n: t.view(torch.uint8) != 0 for n, t in tensors.items()})  # a crafted byte 5 reads as True, not 5


# not tensors a mask has: names a model's state dict gives to biases and normalization statistics
_WEIGHTS_FILE_SUFFIXES = (".bias", ".running_mean", ".running_var", ".num_batches_tracked")


def read_mask_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or garbage file is a `PracError` naming it."""
    try:
        return load_safetensors(path, what="mask file")
    except PracError:
        raise
    except Exception as exc:  # the reader's other complaints about a crafted header (e.g. a dtype torch lacks)
        raise PracError(f"mask file {str(path)!r} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _weights_file_hint(tensors: Mapping[str, torch.Tensor]) -> str:
    """Why the file looks like saved weights rather than a mask, or '' when it does not."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            return f"; it looks like a weights file (entry {name!r} holds {str(tensor.dtype).replace('torch.', '')} values), not a mask"
    for name in tensors:
        if name.endswith(_WEIGHTS_FILE_SUFFIXES):
            return f"; it looks like a weights file (it has entry {name!r}), not a mask"
    return ""


def check_mask_entries(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    model: nn.Module | None,
    include: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
) -> None:
    """Raise one `PracError` naming the file and the first bad entry of a mask read from ``path`` (see `TicketMask.load`)."""
    where = f"mask file {str(path)!r}"
    if not tensors:
        raise PracError(f"{where} holds no entries; a mask holds one boolean tensor per prunable weight")
    for name, tensor in tensors.items():
        if tensor.dtype != torch.bool:
            kind = str(tensor.dtype).replace("torch.", "")
            raise PracError(f"{where}: entry {name!r} is {kind}; a mask must be boolean (True = weight kept){_weights_file_hint(tensors)}")
    if model is None:
        if include is not None or ignore is not None:
            raise TypeError("TicketMask.load: include/ignore need the model")  # a caller's bug, not a user's
        for name in tensors:
            if not (name == "weight" or name.endswith(".weight")):
                raise PracError(f"{where}: entry {name!r} is not a Conv/Linear weight; a mask holds only prunable .weight tensors"
                                f"{_weights_file_hint(tensors)}")
        return
    model_name = type(model).__name__
    params = dict(model.named_parameters())
    prunable = set(prunable_parameter_names(model))
    for name, tensor in tensors.items():
        if name not in params:
            raise PracError(f"{where}: entry {name!r} is not a parameter of {model_name}")
        if name not in prunable:
            raise PracError(f"{where}: entry {name!r} is not a prunable weight of {model_name} (only the .weight of Conv and "
                            f"Linear layers are; biases and normalization layers never){_weights_file_hint(tensors)}")
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise PracError(f"{where}: mask entry {name!r} has shape {tuple(tensor.shape)}, the model's weight has {tuple(params[name].shape)}")
    if include is None and ignore is None:
        return
    expected = prunable_parameter_names(model, include or (), ignore or ())
    expected_set = set(expected)
    missing = next((n for n in expected if n not in tensors), None)
    extra = next((n for n in tensors if n not in expected_set), None)
    if missing is not None or extra is not None:
        problems = ([f"entry {missing!r} is missing"] if missing is not None else []) + (
            [f"entry {extra!r} is not prunable under these globs"] if extra is not None else [])
        raise PracError(f"{where} does not hold exactly the prunable weights of {model_name} for ticket.include "
                        f"{list(include or [])} and ticket.ignore {list(ignore or [])}: {'; '.join(problems)}")


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training, with fused ops on the training hot path.

    ``mask_gradients`` zeroes gradients of pruned weights before the optimizer step (so momentum and
    Adam moments never grow there); ``apply`` multiplies weights by the mask after the step, which also
    cancels any decoupled weight decay or numerical drift.
    """

    def __init__(self, model: nn.Module, mask: TicketMask):
        mask.check_model(model)
        params = dict(model.named_parameters())
        self.params = [params[n] for n in mask.masks]
        self.factors = [m.to(device=p.device, dtype=p.dtype) for m, p in zip(mask.masks.values(), self.params)]

    @torch.no_grad()
    def apply(self) -> None:
        torch._foreach_mul_(self.params, self.factors)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        pairs = [(p.grad, f) for p, f in zip(self.params, self.factors) if p.grad is not None]
        if pairs:
            grads, factors = zip(*pairs)
            torch._foreach_mul_(list(grads), list(factors))

    def hook_gradients(self) -> list[torch.utils.hooks.RemovableHandle]:
        """Mask each pruned weight's gradient as autograd produces it, before gradient clipping, DDP's
        all-reduce and the optimizer see it: for loops where one helper runs backward, clipping and step
        (timm's ``NativeScaler``), so ``mask_gradients`` has no place to run. Returns the hook handles."""
        return [p.register_hook(lambda grad, factor=f: grad * factor) for p, f in zip(self.params, self.factors)]
