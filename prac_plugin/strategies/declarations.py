"""What a strategy declares about itself, readable without torch: its options (with help beside each field), traits,
one-line description, starter recipe, presets, summary columns and the files it writes in a run folder.

A built-in strategy's folder has a light ``options.py`` holding its options dataclass and a `StrategySpec`; the
entry point names that spec, and the strategy class (``strategy.py``, which imports torch) is imported only when a
run needs it. ``prac recipe``, recipe validation, ``prac report`` and the analyses read the declarations alone, so
nothing outside ``strategies/`` needs to know a strategy by name. A strategy class carries the same attributes
(`Declared`): a plugin whose entry point names its class directly declares them on the class.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional

ANALYSES = {
    "sanity": "sanity checks",
    "stability": "linear mode connectivity",
    "retrain": "training tickets on the full data",
}


@dataclass
class StrategyOptions:
    """Base of every strategy's recipe options; ``strategy`` is filled with the registered name."""

    strategy: str = field(default="", init=False)


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, help: str,
           absent_means: Any = dataclasses.MISSING) -> Any:
    """A recipe option with its line of help (``prac recipe`` prints it). ``absent_means``: for a key added after
    run folders were made, the value those runs had (a stored recipe without the key resumes when it matches)."""
    metadata = {"help": help}
    if absent_means is not dataclasses.MISSING:
        metadata["absent_means"] = absent_means
    return field(default=default, default_factory=default_factory, metadata=metadata)


# help of the keys the built-in ticket strategies share, each strategy taking the lines that fit its options
TICKET_HELP = {
    "levels": "pruning levels after the dense level 0",
    "fraction": "share of the remaining prunable weights removed per level",
    "scope": "global: one pool over all prunable tensors; layer: the fraction from each tensor",
    "include": "glob patterns: prune only these parameters or modules, or type:GLOB on module classes (type:Conv*); empty: every Conv/Linear weight",
    "ignore": "glob patterns of parameters or modules never pruned (e.g. fc, the classifier), or type:GLOB",
    "rewind": "rewind point: 0it (initialization), 500it, 2ep, 1ep50it",
    "rewind_optimizer": "also rewind the optimizer state (open_lth starts each level with a fresh optimizer)",
    "min_per_layer": "global pruning keeps at least this many weights of every prunable tensor (0: no floor)",
}
BUDGET_HELP = "steps of a level trained on a subset: linear (paper: |P|/|D| of the steps), quadratic (reference code), none"


@dataclass(frozen=True)
class TicketTraits:
    """What a ticket strategy is, declared once and read by the engine, the analyses and the CLI.

    ``levels_option``: the recipe key holding the number of pruned levels (None: the levels follow from other
    options, e.g. one per CTS density). ``independent_levels``: a level's ticket needs only level 0 and its own
    training, not the levels between (the cost of a ticket: `finding_levels`, `cost_levels`). ``magnitude_masks``: masks are pruned by
    magnitude from the previous level's weights (so inverted scores are a sanity check). ``changes_architecture``:
    each level is a smaller model, not a mask on the dense one. ``analyses``: which of `ANALYSES` apply, and
    ``not_applicable``: why the others do not (said in one line when a user asks for one).
    """

    levels_option: Optional[str] = "levels"
    independent_levels: bool = False
    magnitude_masks: bool = False
    changes_architecture: bool = False
    analyses: frozenset = frozenset(ANALYSES)
    not_applicable: str = ""

    # the cost of a ticket: one rule for `prac report` (a level's ticket as the run trained it) and `prac retrain`
    # (its mask trained again on the full data) ------------------------------------------------------------------
    def finding_levels(self, level: int) -> list[int]:
        """The levels whose training found the mask of ``level``: every level before it (the mask is pruned from
        level L-1's weights), or level 0 alone when levels are independent (searched or drawn at the rewind point)."""
        if level == 0:
            return []
        return [0] if self.independent_levels else list(range(level))

    def cost_levels(self, level: int) -> list[int]:
        """The levels whose training a level's ticket costs as the run trained it: those that found its mask
        (`finding_levels`), then its own."""
        return self.finding_levels(level) + [level]


class Column(NamedTuple):
    """A column a strategy adds to a run's summary table: the level metric, its title and its format."""

    key: str
    title: str
    pattern: str


@dataclass(frozen=True)
class Starter:
    """A strategy's part of the starter recipes (``prac recipe --example NAME``, the quick start's recipe).

    ``section``: this strategy's keys in its section; ``title``: the first line of its own starter recipe (empty:
    none, the section only serves the defaults' recipe); ``replace``: other sections it replaces whole;
    ``update``: keys it sets in other sections.
    """

    section: Mapping = field(default_factory=dict)
    title: str = ""
    replace: Mapping = field(default_factory=dict)
    update: Mapping = field(default_factory=dict)


# the declarations a strategy class and its spec share (a class takes them from ``spec`` when it has one)
DECLARED = ("name", "Options", "traits", "description", "presets", "starter", "summary_columns", "summary_note",
            "run_files", "final_index")


@dataclass
class StrategySpec:
    """A strategy declared without importing it: an entry point (or `register`) names this object, and
    ``strategy`` ("module:Class") is imported by `load` when a run needs the strategy itself.

    ``description``: one line for ``prac recipe``. ``presets``: preset name -> {section: {key: value}} filled into
    the keys a recipe leaves unset (``data_selection.preset``). ``summary_columns``: `Column`s the run's summary
    shows when its levels record them; ``summary_note``: a function of the last level's metrics returning a line
    for the summary (or ""). ``run_files``: the files and folders it writes in a run folder (path -> what it is).
    ``final_index``: for a data selection that writes an index file of its selection, its path in the run folder
    (``prac select`` runs such a strategy, its options having ``select_rounds``).
    """

    kind: str
    name: str
    Options: type
    strategy: str
    traits: TicketTraits = TicketTraits()
    description: str = ""
    presets: Mapping = field(default_factory=dict)
    starter: Optional[Starter] = None
    summary_columns: tuple = ()
    summary_note: Optional[Callable[[dict], str]] = None
    run_files: Mapping = field(default_factory=dict)
    final_index: Optional[str] = None
    _cls: Optional[type] = field(default=None, init=False, repr=False, compare=False)

    def load(self) -> type:
        """The strategy class, imported on first use; it must declare ``spec`` = this object."""
        if self._cls is None:
            module, _, attribute = self.strategy.partition(":")
            cls = getattr(importlib.import_module(module), attribute)
            if getattr(cls, "spec", None) is not self:
                raise TypeError(f"{self.strategy} does not declare spec = the {self.kind} strategy spec {self.name!r} naming it")
            self._cls = cls
        return self._cls


class Declared:
    """The declarations every strategy class answers (defaults here); a class with ``spec = SOME_SPEC`` takes
    them from its spec, so that the light spec and the class never disagree."""

    spec: Optional[StrategySpec] = None
    kind = ""
    name = ""
    Options: type = StrategyOptions
    traits = TicketTraits()
    description = ""
    presets: Mapping = {}
    starter: Optional[Starter] = None
    summary_columns: tuple = ()
    summary_note: Optional[Callable[[dict], str]] = None
    run_files: Mapping = {}
    final_index: Optional[str] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        if spec.kind != cls.kind:
            raise TypeError(f"{cls.__qualname__} is a {cls.kind} strategy; its spec {spec.name!r} declares kind {spec.kind!r}")
        for attribute in DECLARED:
            value = getattr(spec, attribute)
            setattr(cls, attribute, staticmethod(value) if attribute == "summary_note" and value is not None else value)
