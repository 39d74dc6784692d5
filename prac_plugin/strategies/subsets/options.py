"""The declarations of the data selections without a criterion of their own (the full split, a seeded random
subset, an index file's rows), readable without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ...errors import PracError
from ..declarations import BUDGET_HELP, Starter, StrategyOptions, StrategySpec, option
from ..prac.options import REFERENCE_PRESET, EarlyBirdOptions

_FULL_FIRST_LEVEL = "level 0 trains on the whole split"

FULL = StrategySpec(
    "data_selection", "full", StrategyOptions, "prac_plugin.strategies.subsets.strategy:FullData",
    description="every level trains on the whole training split",
    starter=Starter({}),
)


@dataclass
class RandomOptions(EarlyBirdOptions):
    fraction: float = option(0.5, help="share of the training split drawn per level")
    sizes_from: Optional[str] = option(None, help="a PrAC run folder: level L draws as many examples as that run's level L trained on")
    seed: int = option(0, help="seed of the draws")
    resample_each_level: bool = option(True, help="draw anew at every level")
    full_first_level: bool = option(True, help=_FULL_FIRST_LEVEL)
    budget: Literal["linear", "quadratic", "none"] = option("linear", help=BUDGET_HELP)
    preset: Optional[Literal["reference"]] = option(  # the same settings as PrAC's preset, for a fair control
        None, absent_means=None, help="reference: PrAC's reference-code settings, for a control spending what PrAC spends (see prac)")

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.fraction <= 1.0:
            raise PracError(f"data_selection.fraction = {self.fraction} must be in (0, 1]")
        if not 0 <= self.seed < 2**32:  # seed * 1_000_003 + level seeds a torch generator
            raise PracError(f"data_selection.seed = {self.seed} must be in 0..2**32-1")


RANDOM = StrategySpec(
    "data_selection", "random", RandomOptions, "prac_plugin.strategies.subsets.strategy:RandomSubset",
    description="a seeded random subset of the training split per level (of a PrAC run's sizes with sizes_from): the control",
    presets={"reference": REFERENCE_PRESET},
)


@dataclass
class IndexOptions(StrategyOptions):
    path: str = option("", help="a *.prac.safetensors index file (local or hf://), checked against the dataset")
    full_first_level: bool = option(False, help=_FULL_FIRST_LEVEL)
    budget: Literal["linear", "quadratic", "none"] = option("linear", help=BUDGET_HELP)

    def __post_init__(self):
        if not self.path:
            raise PracError("data_selection.path is required for strategy 'index' (a *.prac.safetensors file or hf:// path)")


INDEX = StrategySpec(
    "data_selection", "index", IndexOptions, "prac_plugin.strategies.subsets.strategy:IndexSelection",
    description="every level trains on the rows of an index file (from prac select, another architecture's run, or scores)",
)
