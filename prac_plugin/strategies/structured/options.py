"""Structured tickets' declarations, readable without torch: recipe options, help, traits, starter recipe, the
summary's size columns and floor line, and the structure file each level folder holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ...errors import PracError
from ...tickets.rewind import RewindPoint
from ..declarations import TICKET_HELP, Column, Starter, StrategyOptions, StrategySpec, TicketTraits, option

STRUCTURE_FILE = "structure.json"  # in every level folder: the compact architecture (pruning history) of its ticket


@dataclass
class StructuredOptions(StrategyOptions):  # no rewind_optimizer: a fresh optimizer every level, the pruned shapes change
    levels: int = option(4, help=TICKET_HELP["levels"])
    fraction: float = option(0.2, help="share of the remaining channels removed per level")
    scope: Literal["global", "layer"] = option("global", help=TICKET_HELP["scope"])
    include: list[str] = option(default_factory=list, help=TICKET_HELP["include"])
    ignore: list[str] = option(default_factory=list, help=TICKET_HELP["ignore"])
    rewind: str = option("0it", help=TICKET_HELP["rewind"])
    min_keep: float = option(0.1, help="no layer falls below this share of its dense channels (and never below one)")
    attention: Literal["heads", "head_dims"] = option("heads", help="ViT attention: heads (remove whole heads) or head_dims (shrink every head)")
    importance_p: Literal[1, 2] = option(2, help="norm of the group magnitude (1 or 2)")
    normalizer: Literal["mean", "max", "sum", "none"] = option(
        "mean", help="normalization of group scores before global ranking: mean, max, sum or none")
    round_to: Optional[int] = option(None, help="keep channel counts multiples of this (null: any)")

    def __post_init__(self):
        if self.levels < 0:
            raise PracError(f"ticket.levels = {self.levels} must be 0 or more")
        if not 0.0 < self.fraction < 1.0:
            raise PracError(f"ticket.fraction = {self.fraction!r} is outside (0, 1): the share of the remaining channels each level removes")
        if not 0.0 < self.min_keep <= 1.0:
            raise PracError(f"ticket.min_keep = {self.min_keep!r} is outside (0, 1]: the share of a layer's dense channels always kept")
        if self.round_to is not None and self.round_to < 1:
            raise PracError(f"ticket.round_to = {self.round_to} must be 1 or more")
        RewindPoint.parse(self.rewind)


def floor_note(metrics: dict) -> str:
    """The summary's line naming the layers that ticket.min_keep stopped from shrinking further."""
    if "structured_at_floor" not in metrics:
        return ""
    names = ", ".join(metrics["structured_at_floor"]) or "none"
    return f"\nLayers at the ticket.min_keep floor ({100 * metrics['structured_min_keep']:.0f}% of their dense channels): {names}\n"


STRUCTURED = StrategySpec(
    "ticket", "structured", StructuredOptions, "prac_plugin.strategies.structured.strategy:StructuredTicket",
    traits=TicketTraits(changes_architecture=True, analyses=frozenset(),
                        not_applicable="its tickets are smaller architectures, not masks on the dense model"),
    description="structured tickets: whole channels removed by group magnitude, each level a smaller timm model",
    starter=Starter(
        {"levels": 4, "fraction": 0.2, "scope": "global", "min_keep": 0.1, "rewind": "1ep"},
        title="structured tickets: whole channels removed, each level a smaller timm model",
        replace={"model": {"name": "cifar_resnet20"}}, update={"train": {"epochs": 8}},
    ),
    # smaller models: their parameters and MACs against the dense model's
    summary_columns=(Column("params_remaining_pct", "params %", "{:.2f}"), Column("macs_remaining_pct", "MACs %", "{:.2f}")),
    summary_note=floor_note,
    run_files={f"level_NN/{STRUCTURE_FILE}": "the level's compact architecture: the dense model and its pruning history"},
)
