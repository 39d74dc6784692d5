"""PrAC's declarations, readable without torch: recipe options (with early-bird stopping, shared with the random
control), help, the reference preset, starter recipe, summary columns, and where a run keeps its sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ...errors import PracError
from ..declarations import BUDGET_HELP, Column, Starter, StrategyOptions, StrategySpec, option

# The settings of the PrAC reference code (VITA-Group/PrAC-LTH), whose runs produced the paper's savings (83.9%
# fewer iterations on ResNet-20): early-bird in every round, the epochs shrinking with the set (quadratic budget),
# convolutions pruned only, rewinding to the weights after epoch 3. ``data_selection.preset: reference`` fills
# the keys a recipe leaves unset; the paper's own statement (linear budget, no early-bird) is the default.
REFERENCE_PRESET = {
    "data_selection": {"early_bird": True, "early_bird_eps": 0.08, "early_bird_window": 5, "budget": "quadratic"},
    "ticket": {"include": ["type:Conv*"], "rewind": "3ep"},
}

# where a run keeps its sets (index files, *.prac.safetensors as index_files.format names them)
ROUNDS_FOLDER = "prac"
FINAL_SET = "prac_set.prac.safetensors"


def round_path(run_path: str | Path, level: int) -> Path:
    """The PrAC set selected after ``level`` in the run at ``run_path`` (a random control reads its sizes)."""
    return Path(run_path) / ROUNDS_FOLDER / f"round_{level:02d}.prac.safetensors"


def dense_predictions_path(run_path: str | Path) -> Path:
    """The dense round's predictions on the whole training split, which later rounds' CEP compares with."""
    return Path(run_path) / ROUNDS_FOLDER / "dense_predictions.safetensors"


@dataclass
class EarlyBirdOptions(StrategyOptions):
    """Early-bird stopping, shared by PrAC and the random-subset control so both get the same rule."""

    early_bird: bool = option(False, absent_means=False,
                              help="stop a level when its would-be mask stops changing (the reference code's early-bird)")
    early_bird_eps: float = option(0.08, absent_means=0.08, help="early-bird: share of the remaining weights whose keep/prune "
                                   "decision changed, below which masks count as unchanged")
    early_bird_window: int = option(5, absent_means=5, help="early-bird: epochs in a row below the distance")

    def __post_init__(self):
        if not 0 < self.early_bird_eps < 1 or self.early_bird_window < 1:
            raise PracError("data_selection.early_bird_eps must be in (0, 1) and early_bird_window at least 1")


@dataclass
class PracOptions(EarlyBirdOptions):
    forgetting_threshold: int = option(0, help="E_F: an example forgotten more than this many times (or never learned) is critical")
    criteria: Literal["both", "cet", "cep"] = option("both", help="both (CET u CEP, the paper's PrAC set), cet or cep")
    budget: Literal["linear", "quadratic", "none"] = option("linear", help=BUDGET_HELP)
    select_rounds: int = option(1, help="prac select: pruned rounds after the dense one")
    preset: Optional[Literal["reference"]] = option(
        None, absent_means=None, help="reference: the reference code's settings for unset keys (early-bird 0.08 over 5 epochs, "
        "quadratic budget, conv weights only, rewind 3ep); null: the paper's")

    def __post_init__(self):
        super().__post_init__()
        if self.forgetting_threshold < 0:
            raise PracError(f"data_selection.forgetting_threshold = {self.forgetting_threshold} must be 0 or more")
        if self.select_rounds < 0:
            raise PracError(f"data_selection.select_rounds = {self.select_rounds} must be 0 or more")


PRAC = StrategySpec(
    "data_selection", "prac", PracOptions, "prac_plugin.strategies.prac.strategy:PracSelection",
    description="PrAC sets: each level trains on the examples the last one forgot (CET) or pruning changed (CEP)",
    presets={"reference": REFERENCE_PRESET},
    starter=Starter({"forgetting_threshold": 0, "criteria": "both", "budget": "linear"},
                    title="PrAC-LTR: every level trained and pruned on its PrAC set of critical examples"),
    summary_columns=(Column("cet_count", "CET", "{}"), Column("cep_count", "CEP", "{}")),
    run_files={
        f"{ROUNDS_FOLDER}/round_NN.prac.safetensors": "the set selected after round NN, an index file",
        f"{ROUNDS_FOLDER}/dense_predictions.safetensors": "the dense round's predictions, for CEP",
        FINAL_SET: "the last round's set: the run's result as an index file",
    },
    final_index=FINAL_SET,
)


def quickstart_runs(output: str | Path) -> tuple[tuple[str, dict], ...]:
    """What ``prac quickstart`` compares, as (run folder, data_selection section): full-data lottery ticket
    rewinding, PrAC-LTR, and the control PrAC must beat (random subsets of the PrAC sets' sizes, the same budget)."""
    return (
        ("ltr", {"strategy": "full"}),
        ("prac", {"strategy": PRAC.name}),
        ("random", {"strategy": "random", "sizes_from": str(Path(output) / "prac"), "budget": "linear"}),
    )
