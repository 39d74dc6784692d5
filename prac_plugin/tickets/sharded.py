"""Masks on sharded parameters (FSDP2's ``fully_shard``: each parameter a DTensor split by rows across processes).

Two rules, each exact:
- **Each mask lives with its parameter's sharding.** `ShardedMaskEnforcer` keeps, per parameter, only the rows of
  the mask that this process's shard holds, and multiplies the local shard of the weight and of its gradient:
  no full tensor is gathered during training.
- **Pruning sees the whole model.** `prune_sharded` gives exactly the mask `TicketMask.prune_weights` gives on the
  unsharded weights, on every process: the keep-th largest magnitude is found over all shards (a radix select on
  the float bits, one all-reduce per bit), and ties at that magnitude go to the lower pooled index, as in
  `keep_largest`, by ordering every shard's ties by (tensor, shard).

Supported layouts: FSDP2's default, a one-dimensional mesh over the process group with ``Shard(0)``; a parameter that is not a DTensor
(a module left unsharded) counts as held whole by the first process. Anything else (HSDP's replicated mesh
dimension, tensor parallelism) is refused in one line.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Shard

from ..errors import PracError
from .masks import SCOPES, TicketMask, count_to_prune

_SIGN_CLEARED_BITS = 31  # a non-negative float32 orders as its bit pattern read as an int32


def _check_layout(name: str, param: torch.Tensor) -> None:
    if isinstance(param, DTensor) and (param.device_mesh.ndim != 1 or tuple(param.placements) != (Shard(0),)):
        raise PracError(f"parameter {name!r} is sharded as {tuple(param.placements)} over a {param.device_mesh.ndim}-d mesh; "
                        f"ticket masks support FSDP2's default sharding only (a 1-d mesh, Shard(0))")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _shard_rows(param: torch.Tensor, group) -> tuple[int, int]:
    """(first row, number of rows) of this process's shard of ``param`` (a plain tensor: all of it on rank 0)."""
    if not isinstance(param, DTensor):
        return 0, param.shape[0] if dist.get_rank(group) == 0 else 0
    if param.device_mesh.size() != dist.get_world_size(group):
        raise PracError(f"a parameter is sharded over {param.device_mesh.size()} processes, the process group has "
                        f"{dist.get_world_size(group)}; ticket masks need the mesh to span the group")
    rows = torch.tensor([_local(param).shape[0]], dtype=torch.int64)
    every = [torch.zeros_like(rows) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, rows, group=group)
    coordinate = param.device_mesh.get_local_rank()
    return int(sum(int(r) for r in every[:coordinate])), int(every[coordinate])


def mask_shard(mask: torch.Tensor, param: torch.Tensor, group=None) -> torch.Tensor:
    """The rows of a full ``mask`` that this process's shard of ``param`` holds."""
    first, count = _shard_rows(param, group)
    return mask[first:first + count]


class ShardedMaskEnforcer:
    """`MaskEnforcer` for sharded parameters: the same two fused multiplications, on local shards only."""

    def __init__(self, model: nn.Module, mask: TicketMask, group=None):
        mask.check_model(model)
        params = dict(model.named_parameters())
        self.params = [params[n] for n in mask.masks]
        for name, param in zip(mask.masks, self.params):
            _check_layout(name, param)
        self.factors = []
        for full, param in zip(mask.masks.values(), self.params):
            local = _local(param)
            shard = mask_shard(full, param, group) if isinstance(param, DTensor) else full
            self.factors.append(shard.to(device=local.device, dtype=local.dtype))

    @torch.no_grad()
    def apply(self) -> None:
        torch._foreach_mul_([_local(p) for p in self.params], self.factors)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        pairs = [(_local(p.grad), f) for p, f in zip(self.params, self.factors) if p.grad is not None]
        if pairs:
            grads, factors = zip(*pairs)
            torch._foreach_mul_(list(grads), list(factors))


def _count(scores: Sequence[torch.Tensor], predicate, group) -> int:
    local = torch.tensor([sum(int(predicate(s).sum()) for s in scores)], dtype=torch.int64)
    dist.all_reduce(local, group=group)
    return int(local)


def _keep_largest_sharded(scores: Sequence[torch.Tensor], keep: int, group) -> list[torch.Tensor]:
    """Flags keeping the ``keep`` largest of the scores pooled over tensors and processes, ties to the lower
    pooled index (tensor by tensor, and within a tensor shard by shard): `keep_largest` on the unsharded pool.
    ``scores``: this process's non-negative float32 scores of each tensor, in pooled order."""
    bits = [s.contiguous().view(torch.int32) for s in scores]
    flags = [torch.zeros(s.numel(), dtype=torch.bool) for s in scores]
    if keep <= 0:
        return flags
    threshold = 0  # the largest bit pattern t with at least ``keep`` scores >= t: the keep-th largest score
    for bit in reversed(range(_SIGN_CLEARED_BITS)):
        candidate = threshold | (1 << bit)
        if _count(bits, lambda b: b >= candidate, group) >= keep:
            threshold = candidate
    ties_wanted = keep - _count(bits, lambda b: b > threshold, group)
    ties = torch.tensor([int((b == threshold).sum()) for b in bits], dtype=torch.int64)
    every = [torch.zeros_like(ties) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, ties, group=group)
    rank = dist.get_rank(group)
    for t, b in enumerate(bits):
        flags[t] = b > threshold
        for r in range(len(every)):  # pooled order: tensor t's ties on shard 0, then shard 1, ...
            taken = min(ties_wanted, int(every[r][t]))
            if r == rank and taken:
                tied = (b == threshold).nonzero().squeeze(1)
                flags[t][tied[:taken]] = True
            ties_wanted -= taken
    return flags


def _finite_everywhere(scores: Sequence[torch.Tensor], group) -> bool:
    bad = torch.tensor([sum(int((~torch.isfinite(s)).sum()) for s in scores)], dtype=torch.int64)
    dist.all_reduce(bad, group=group)
    return int(bad) == 0


def _gather_rows(local_flags: torch.Tensor, full_shape: torch.Size, group) -> torch.Tensor:
    """The full boolean tensor from every process's rows (in process order), on every process."""
    world = dist.get_world_size(group)
    rows = torch.tensor([local_flags.shape[0]], dtype=torch.int64)
    counts = [torch.zeros_like(rows) for _ in range(world)]
    dist.all_gather(counts, rows, group=group)
    width = max(int(c) for c in counts)
    row_shape = tuple(full_shape[1:])
    padded = torch.zeros((width, *row_shape), dtype=torch.uint8)
    padded[: int(rows)] = local_flags.view(-1, *row_shape).to(torch.uint8)
    pieces = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded, group=group)
    return torch.cat([p[: int(c)] for p, c in zip(pieces, counts)]).view(full_shape).bool()


def prune_sharded(mask: TicketMask, model: nn.Module, fraction: float, scope: str = "global", min_per_layer: int = 0,
                  group: Optional[dist.ProcessGroup] = None) -> TicketMask:
    """`TicketMask.prune_magnitude` over a model whose parameters are sharded: the same new mask, on every process.

    Every process holds the full current ``mask`` (a mask is one bit per weight); it reads only the weights of
    its own shards, and the processes agree on the threshold and the ties by all-reduce and all-gather."""
    if scope not in SCOPES:
        raise PracError(f"prune scope {scope!r} is not one of {', '.join(SCOPES)}")
    mask.check_model(model)
    params: Mapping[str, torch.Tensor] = dict(model.named_parameters())
    local_masks, scores = {}, {}
    for name, full in mask.masks.items():
        param = params[name]
        _check_layout(name, param)
        first, count = _shard_rows(param, group)
        rows = full[first:first + count]
        weight = _local(param).detach() if count else torch.zeros((0, *full.shape[1:]))
        local_masks[name] = rows
        scores[name] = weight.abs().float().cpu().reshape(rows.shape).flatten()[rows.flatten()]
    if not _finite_everywhere(list(scores.values()), group):
        raise PracError("a weight holds NaN or infinite values (a diverged run): its magnitudes cannot rank weights")
    kept = _select(mask, list(scores), list(scores.values()), fraction, scope, min_per_layer, group)
    new = {}
    for name, full in mask.masks.items():
        rows = local_masks[name]
        flat = torch.zeros(rows.numel(), dtype=torch.bool)
        flat[rows.flatten().nonzero().squeeze(1)] = kept[name]
        new[name] = _gather_rows(flat.view(rows.shape), full.shape, group)
    return TicketMask(new)


def _select(mask: TicketMask, names: list[str], scores: list[torch.Tensor], fraction: float, scope: str,
            floor: int, group) -> dict[str, torch.Tensor]:
    """Which local scores survive: the rules of `prune_weights`, with the sharded top-k."""
    remaining = {n: int(mask.masks[n].sum()) for n in names}
    if scope == "layer":
        return {n: _keep_largest_sharded([s], max(remaining[n] - count_to_prune(fraction, remaining[n]),
                                                  min(floor, remaining[n])), group)[0] for n, s in zip(names, scores)}
    pooled = sum(remaining.values())
    keep = pooled - count_to_prune(fraction, pooled)
    if floor <= 0:
        return dict(zip(names, _keep_largest_sharded(scores, keep, group)))
    reserved = [_keep_largest_sharded([s], min(floor, remaining[n]), group)[0] for n, s in zip(names, scores)]
    taken = sum(min(floor, remaining[n]) for n in names)
    if taken > keep:
        raise PracError(f"ticket.min_per_layer = {floor} keeps {taken:,} weights, more than the {keep:,} this level keeps; lower it")
    # the rest of the budget: the largest of the scores not reserved (a reserved score is taken out of the pool)
    # (-1.0 reads as a negative int32, below every threshold the select can reach: a reserved score is out of it)
    others = [torch.where(r, torch.full_like(s, -1.0), s) for r, s in zip(reserved, scores)]
    rest = _keep_largest_sharded(others, keep - taken, group)
    return {n: r | x for n, r, x in zip(names, reserved, rest)}
