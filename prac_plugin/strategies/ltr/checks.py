"""LTR's schedule checks, before a run writes anything: pure counting from tensor sizes.

Magnitude pruning removes ``count_to_prune(fraction, remaining)`` weights per level whatever the weights are, so
how many weights each planned level keeps is a function of the prunable tensors' sizes alone: the first level
that would prune nothing, leave nothing or empty a tensor is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from ...errors import PracError
from ...tickets.counts import SCOPES, count_to_prune


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
