"""torch-pruning internals the structured tickets rely on (checked against torch-pruning 1.6.1).

- ``DependencyGraph.check_pruning_group``: the pruner drops a group whose selection covers all of its channels
  *before* yielding it in interactive mode. Layer floors trim protected channels from a group after it is
  yielded, so the check is deferred to after the trimming: the instance attribute shadows the class method
  while the pruner runs, and `passes_group_check` calls the class's own check.
- ``BasePruner.out_channel_groups`` / ``in_channel_groups``: channel groups per layer (attention heads), read
  to score heads as units.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

CHECKED_VERSION = "1.6.1"


@contextmanager
def group_check_deferred(graph: Any) -> Iterator[None]:
    """While inside, the pruner yields every group; call `passes_group_check` on each before pruning it."""
    graph.check_pruning_group = lambda group: True
    try:
        yield
    finally:
        del graph.check_pruning_group  # back to the class's method


def passes_group_check(graph: Any, group: Any) -> bool:
    return type(graph).check_pruning_group(graph, group)


def channel_groups(pruner: Any, out_channels: bool) -> dict:
    """Layer -> number of channel groups (heads) the pruner keeps together."""
    return pruner.out_channel_groups if out_channels else pruner.in_channel_groups
