"""CTS's checks before a run writes anything: a target density must keep some weights and not all of them."""

from __future__ import annotations

from typing import Sequence

from ...errors import PracError


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
