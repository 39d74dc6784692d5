"""Data selection without a criterion: the full training split, or a seeded random subset (PrAC's control)."""
