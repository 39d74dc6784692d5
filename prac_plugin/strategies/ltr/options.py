"""Lottery ticket rewinding's declarations, readable without torch: its recipe options, help and starter recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import PracError
from ...tickets.counts import count_to_prune
from ...tickets.rewind import RewindPoint
from ..declarations import TICKET_HELP, Starter, StrategyOptions, StrategySpec, TicketTraits, option


@dataclass
class LTROptions(StrategyOptions):
    levels: int = option(8, help=TICKET_HELP["levels"])
    fraction: float = option(0.2, help=TICKET_HELP["fraction"])
    scope: Literal["global", "layer"] = option("global", help=TICKET_HELP["scope"])
    include: list[str] = option(default_factory=list, help=TICKET_HELP["include"])
    ignore: list[str] = option(default_factory=list, help=TICKET_HELP["ignore"])
    rewind: str = option("0it", help=TICKET_HELP["rewind"])
    rewind_optimizer: bool = option(False, help=TICKET_HELP["rewind_optimizer"])
    min_per_layer: int = option(0, help=TICKET_HELP["min_per_layer"], absent_means=0)

    def __post_init__(self):
        if self.levels < 0:
            raise PracError(f"ticket.levels = {self.levels} must be 0 or more")
        if self.min_per_layer < 0:
            raise PracError(f"ticket.min_per_layer = {self.min_per_layer} must be 0 or more")
        count_to_prune(self.fraction, 1)  # raises for a fraction outside (0, 1)
        RewindPoint.parse(self.rewind)


LTR = StrategySpec(
    "ticket", "ltr", LTROptions, "prac_plugin.strategies.ltr.strategy:LotteryTicketRewinding",
    traits=TicketTraits(magnitude_masks=True),
    description="lottery ticket rewinding: iterative magnitude pruning, the survivors rewound to the rewind point each level",
    starter=Starter(
        {"levels": 20, "fraction": 0.2, "scope": "global", "ignore": ["fc"], "rewind": "1ep"},
        title="lottery ticket rewinding (IMP with weight rewinding) on the whole training split",
    ),
)
