"""How many weights magnitude pruning removes: pure arithmetic, no torch (recipe validation uses it)."""

from __future__ import annotations

import math

from ..errors import PracError

SCOPES = ("global", "layer")


def count_to_prune(fraction: float, remaining: int) -> int:
    """Number of weights to remove: ceil(fraction * remaining), as open_lth does, robust to float noise."""
    if not 0.0 < fraction < 1.0:
        raise PracError(f"prune fraction {fraction!r} is outside (0, 1)")
    return min(remaining, math.ceil(round(fraction * remaining, 6)))
