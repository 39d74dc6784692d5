"""The two strategy interfaces: which weights form the ticket, and which examples train it.

One training loop (``prac_plugin.pipeline``) serves every strategy: per level it asks the ticket
strategy for the starting weights, mask and step, asks the data-selection strategy for the examples,
trains, and hands both strategies the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

if TYPE_CHECKING:
    from ..masks import TicketMask
    from ..pipeline import RunContext


@dataclass
class StrategyOptions:
    """Base of every strategy's recipe options; ``strategy`` is filled with the registered name."""

    strategy: str = field(default="", init=False)


@dataclass
class LevelPlan:
    """How a level starts: the mask, the step the schedule resumes at, and callbacks at given steps.

    ``model``, when set, replaces the current model from this level on (a structured ticket is a smaller
    architecture); the pipeline re-prepares it with Accelerate and builds the optimizer on it. ``info`` is
    recorded in the level's metrics and may replace the mask-based figures (``weights_remaining_pct``, ...).
    """

    mask: "TicketMask"
    start_step: int = 0
    optimizer_state: Optional[dict] = None
    step_callbacks: dict[int, Callable[[Any, Any], None]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    model: Optional[torch.nn.Module] = None


class TicketStrategy:
    """Decides which weights survive at each level and where their values come from."""

    kind = "ticket"
    name = ""
    Options = StrategyOptions

    def __init__(self, options: Any, run: "RunContext"):
        self.options, self.run = options, run

    @property
    def num_levels(self) -> int:
        """Number of levels after the dense level 0."""
        raise NotImplementedError

    def check(self, first_schedule: Any, model: torch.nn.Module) -> None:
        """Raise a `PracError` for options that cannot work with level 0's schedule or with ``model`` (freshly
        created, dense), before anything is written."""

    def plan_level(self, level: int, model: torch.nn.Module, schedule: Any) -> LevelPlan:
        """Set ``model``'s starting weights for ``level`` (trained on ``schedule``) and return its plan."""
        raise NotImplementedError

    def restore_model(self, level: int, model: torch.nn.Module) -> torch.nn.Module:
        """The model a resumed run continues from, ``level`` being its last completed level: by default
        ``model`` (freshly created) with that level's saved weights; a strategy that changes the architecture
        rebuilds it first."""
        model.load_state_dict(self.run.run_dir.level_weights(level))
        return model


class DataSelectionStrategy:
    """Decides which training examples (positions in the training split) each level trains on."""

    kind = "data_selection"
    name = ""
    Options = StrategyOptions

    def __init__(self, options: Any, run: "RunContext"):
        self.options, self.run = options, run

    @property
    def budget(self) -> str:
        """How a level's step budget scales with its share of the data: linear, quadratic or none."""
        return getattr(self.options, "budget", "linear")

    def positions_for_level(self, level: int) -> Optional[torch.Tensor]:
        """Sorted positions into the training split, or None for all of it."""
        return None

    def batch_observer(self, level: int) -> Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]]:
        """Called with (logits, targets, positions) after every training forward pass, or None."""
        return None

    def epoch_hook(self, level: int) -> Optional[Callable[[int, torch.nn.Module], bool]]:
        """Called after every epoch with (epochs done, model); returning True ends the level early."""
        return None

    def end_level(self, level: int, model: torch.nn.Module) -> dict:
        """Called after a level trained; returns metrics to record for the level."""
        return {}

    def state_dict(self) -> dict:
        """This process's state inside the running level (after `batch_observer`/`epoch_hook`), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict` after `batch_observer` and `epoch_hook` were called for the resumed level."""
