"""The two strategy interfaces: which weights form the ticket, and which examples train it.

Strategies plan; the engine runs. The engine (`prac_plugin.engine.level`) owns every level's life: it trains
level 0 (the dense network) itself, keeping the initialization and the rewind point, and for every later level
asks the ticket strategy for a `LevelPlan` (the mask, and the weights and step the level starts from) and the
data-selection strategy for the examples; then it trains, evaluates, saves and releases the level.

Strategies get narrow inputs (`TicketContext`, `SelectionContext`), not the whole run, and declare what
they are (`TicketTraits`, and the rest of `declarations.py`, readable without torch): the analyses, the report
and the CLI read those declarations instead of matching strategy names, so a third-party strategy gets the
behaviour it declares.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import torch

from .declarations import ANALYSES, Declared, StrategyOptions, TicketTraits  # noqa: F401  (the light half, importable from here too)

if TYPE_CHECKING:
    from ..data.sources import BatchSource, Split
    from ..tickets.masks import TicketMask
    from ..rundir.folder import RunDirectory


@dataclass
class LevelPlan:
    """How a pruned level starts: its mask, the weights and step it trains from, and what to record.

    ``weights`` (a state dict) are loaded into the model by the engine; ``model``, when set, replaces the current
    model from this level on (a structured ticket is a smaller architecture) and already holds its start weights.
    ``size`` replaces the mask-based size figures of the level's metrics (keys in `SIZE_KEYS`: the structured
    ticket's size against the dense model); ``info`` adds strategy figures, which may not replace the engine's.
    """

    mask: "TicketMask"
    start_step: int = 0
    weights: Optional[dict[str, torch.Tensor]] = None
    optimizer_state: Optional[dict] = None
    step_callbacks: dict[int, Callable[[Any, Any], None]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    size: dict = field(default_factory=dict)
    model: Optional[torch.nn.Module] = None


SIZE_KEYS = frozenset({
    "weights_remaining_pct", "sparsity_pct", "prunable_weights", "remaining_weights", "layers",
    "macs", "dense_macs", "macs_remaining_pct", "params", "dense_params", "params_remaining_pct",
})


@dataclass
class StartPoint:
    """Where a pruned level's weights start: the rewind point (or initialization), loaded by the engine."""

    name: str  # "rewind" or "init"
    weights: dict[str, torch.Tensor]
    step: int
    optimizer_state: Optional[dict] = None


@dataclass
class TicketContext:
    """What a ticket strategy may use: the run folder (to read earlier levels and write its own level files),
    the model's description, and for searches un-augmented training batches and cross-process averaging."""

    run_dir: "RunDirectory"
    is_main_process: bool
    model_spec: dict  # {"name", "kwargs", "input_size"}: enough to build the dense model again
    train_size: int
    seed: int
    train_batches: Callable[[torch.Tensor, int], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor
    autocast: Callable[[], AbstractContextManager] = nullcontext


class TicketStrategy(Declared):
    """Decides which weights survive at each pruned level and where their values come from.

    Its declarations (name, options, traits, ...: `Declared`) come from ``spec`` when the class has one."""

    kind = "ticket"

    def __init__(self, options: Any, context: TicketContext):
        self.options, self.context = options, context

    # declarations from the options ------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        """Number of pruned levels after the dense level 0."""
        raise NotImplementedError

    def prunable_patterns(self) -> tuple[list[str], list[str]]:
        """(include, ignore) globs choosing the prunable weights (default: every Conv and Linear weight)."""
        return [], []

    def rewind_point(self) -> str:
        """The rewind point level 0 keeps ("0it": initialization)."""
        return "0it"

    def step_fraction(self) -> float:
        """The share of the remaining weights one magnitude-pruning step removes (early-bird compares such masks)."""
        return 0.2

    def start_point(self) -> str:
        """Where pruned levels start training: ``rewind`` or ``init``."""
        return "rewind"

    def rewinds_optimizer(self) -> bool:
        """Whether pruned levels start from the optimizer state saved at the rewind point."""
        return False

    # planning ---------------------------------------------------------------------------------------------
    def check(self, model: torch.nn.Module, first_schedule: Any) -> None:
        """Raise a `PracError` for options that cannot work with this model or level 0's schedule, before
        anything is written (the rewind point itself is checked by the engine)."""

    def plan_dense(self, model: torch.nn.Module, plan: LevelPlan) -> None:
        """Add this strategy's figures (and files) to the engine's plan of level 0; ``model`` is the dense model."""

    def plan(self, level: int, previous: "PreviousLevel", start: StartPoint, resumed_mask: Optional["TicketMask"] = None) -> LevelPlan:
        """The plan of pruned ``level``: from the previous level's result and the start point.

        ``resumed_mask`` is the mask a checkpoint of this level trained with: a strategy whose mask is costly to
        find (a search) returns it instead of finding it again.
        """
        raise NotImplementedError

    def restore_model(self, level: int, model: torch.nn.Module) -> torch.nn.Module:
        """The model a resumed run continues from, ``level`` being its last completed level: by default
        ``model`` (freshly created) with that level's saved weights; a strategy that changes the architecture
        rebuilds it first."""
        model.load_state_dict(self.context.run_dir.level_weights(level))
        return model


class RewindOptionsDeclared:
    """For a ticket strategy whose options carry ``include``, ``ignore`` and ``rewind`` (the built-ins'): its
    prunable weights and rewind point are read from them."""

    options: Any

    def prunable_patterns(self) -> tuple[list[str], list[str]]:
        return list(self.options.include), list(self.options.ignore)

    def rewind_point(self) -> str:
        return self.options.rewind


@dataclass
class PreviousLevel:
    """The result of the level before the one being planned: its trained model (unwrapped) and its mask."""

    level: int
    model: torch.nn.Module
    mask: "TicketMask"


@dataclass
class SelectionContext:
    """What a data-selection strategy may use: the training split (rows, labels), batches of it for
    un-augmented predictions, the run folder for its files, and the provenance written into index files."""

    run_dir: "RunDirectory"
    is_main_process: bool
    device: torch.device
    train: "Split"
    train_source: "BatchSource"
    eval_batch_size: int
    dataset_signature: dict
    class_names: Optional[list]
    provenance: dict  # model name, val_fraction, split_seed: written into index files
    pruning: tuple[float, list[str], list[str]]  # (fraction, include, ignore) of one magnitude-pruning step
    wait_for_everyone: Callable[[], None] = lambda: None

    @property
    def train_size(self) -> int:
        return len(self.train)


class DataSelectionStrategy(Declared):
    """Decides which training examples (positions in the training split) each level trains on.

    Its declarations (name, options, presets, ...: `Declared`) come from ``spec`` when the class has one."""

    kind = "data_selection"

    def __init__(self, options: Any, context: SelectionContext):
        self.options, self.context = options, context

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
