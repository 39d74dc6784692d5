"""Degenerate schedules found before a run writes anything: pure counting from tensor sizes.

Magnitude pruning removes ``count_to_prune(fraction, remaining)`` weights per level whatever the weights are, so
how many weights each planned level keeps is a function of the prunable tensors' sizes alone. A level that would
prune nothing, or leave nothing, would still train to the end and write a full level folder; these functions find
the first such level (or CTS density, or a batch size no process can use) so the recipe is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from .errors import PracError
from .masks import SCOPES, count_to_prune, floor_count, prunable_parameter_names


def prunable_sizes(model, include: Sequence[str] = (), ignore: Sequence[str] = ()) -> dict[str, int]:
    """Number of weights of each prunable tensor of ``model``, in mask order: all the checks below need."""
    params = dict(model.named_parameters())
    return {name: params[name].numel() for name in prunable_parameter_names(model, include, ignore)}


@dataclass(frozen=True)
class LevelCount:
    """One planned LTR level: weights pruned and remaining per pool (one pool for global scope, one per tensor
    for layer scope)."""

    level: int
    pruned: tuple[int, ...]
    remaining: tuple[int, ...]


def ltr_counts(sizes: Sequence[int], fraction: float, scope: str, levels: int) -> Iterator[LevelCount]:
    """The counts of levels 1..``levels`` of `TicketMask.prune_magnitude` on dense tensors of ``sizes``, with its
    rounding: global scope prunes ``count_to_prune`` of the pooled remaining weights, layer scope of each tensor's."""
    if scope not in SCOPES:
        raise PracError(f"prune scope {scope!r} is not one of {', '.join(SCOPES)}")
    remaining = (sum(sizes),) if scope == "global" else tuple(int(s) for s in sizes)
    for level in range(1, levels + 1):
        pruned = tuple(count_to_prune(fraction, r) for r in remaining)
        remaining = tuple(r - p for r, p in zip(remaining, pruned))
        yield LevelCount(level, pruned, remaining)


def _levels(n: int) -> str:
    return f"{n} level" + ("" if n == 1 else "s")


def check_ltr_schedule(sizes: Mapping[str, int], fraction: float, scope: str, levels: int) -> None:
    """Refuse the first planned level that prunes no weight, leaves none (global scope) or empties a tensor
    (layer scope), naming it and how many levels this model allows."""
    names = list(sizes)
    before = (sum(sizes.values()),) if scope == "global" else tuple(sizes.values())
    for count in ltr_counts(list(sizes.values()), fraction, scope, levels):
        level, most = count.level, f"at most {_levels(count.level - 1)} {'is' if count.level == 2 else 'are'} possible here"
        if sum(count.pruned) == 0:
            largest = max(before)
            head = f"ticket.fraction = {fraction!r} prunes no weight at level 1" if level == 1 else \
                f"ticket.levels = {levels}: level {level} would prune no weight"
            raise PracError(
                f"{head} ({fraction!r} x {largest:,} remaining weights rounds to 0); raise ticket.fraction to at least "
                f"1/{largest:,}" + (f" or set ticket.levels to {level - 1} or less" if level > 1 else "")
            )
        if scope == "global" and count.remaining[0] == 0:
            raise PracError(
                f"ticket.levels = {levels}: level {level} would leave no prunable weight (ticket.fraction = {fraction!r} "
                f"of the last {before[0]:,} rounds up to all of them); {most} with this model and fraction"
            )
        if scope == "layer":
            emptied = [n for n, r in zip(names, count.remaining) if r == 0]
            if emptied:
                r = before[names.index(emptied[0])]
                raise PracError(
                    f"ticket.levels = {levels}: level {level} would empty {emptied[0]} (ticket.scope = layer prunes "
                    f"ceil({fraction!r} x {r:,}) = all {r:,} of its remaining weights); {most} with this model and fraction"
                )
        before = count.remaining


def cts_keep_count(density: float, total: int) -> int:
    """Weights a CTS ticket of ``density`` keeps out of ``total`` prunable ones (the search's own rounding)."""
    return round(density * total)


def check_cts_densities(densities: Sequence[float], total: int) -> None:
    """Refuse a target density whose ticket would keep no weight or every weight of the ``total`` prunable ones."""
    for density in densities:
        keep = cts_keep_count(density, total)
        if keep == 0 or keep == total:
            what = "no weight" if keep == 0 else "every weight (a dense ticket)"
            raise PracError(
                f"ticket.densities entry {density!r} keeps round({density!r} x {total:,}) = {keep:,} of the model's "
                f"{total:,} prunable weights, i.e. {what}; allowed: densities keeping 1 to {total - 1:,} weights "
                f"(about {0.5 / total:.3g} to {1 - 0.5 / total:.9g})"
            )


def check_layer_floor(sizes: Mapping[str, int], floor: int, smallest_keep: int, where: str) -> None:
    """Refuse a ``ticket.min_per_layer`` whose reserved weights exceed what the sparsest level keeps."""
    reserved = floor_count(sizes.values(), floor)
    if reserved > smallest_keep:
        raise PracError(
            f"ticket.min_per_layer = {floor} reserves {reserved:,} weights over {len(sizes)} prunable tensors, more than the "
            f"{smallest_keep:,} {where} keeps; lower ticket.min_per_layer to at most {smallest_keep // max(1, len(sizes))}"
        )


def check_batch_size(batch_size: int, examples: int, num_processes: int = 1) -> None:
    """Refuse a training batch larger than the examples level 0 trains on, or one that leaves a process an empty
    share of a batch (a batch is split between processes; an empty share makes a NaN loss late in the epoch)."""
    if batch_size > examples:
        raise PracError(
            f"train.batch_size = {batch_size:,} is larger than the {examples:,} training examples level 0 trains on; "
            f"allowed: 1 to {examples:,}"
        )
    if num_processes > 1:
        if batch_size < num_processes:
            raise PracError(
                f"train.batch_size = {batch_size} is smaller than the {num_processes} processes, each of which needs "
                f"examples in every batch; allowed: {num_processes} to {examples:,}"
            )
        last = examples % batch_size
        if 0 < last < num_processes:
            raise PracError(
                f"train.batch_size = {batch_size:,} leaves a last batch of {last} of the {examples:,} training examples "
                f"for {num_processes} processes, so one would get none; choose a batch size whose last batch is full "
                f"or holds at least {num_processes}"
            )
