"""The campaign's cells (issue 25): which experiments, split into pieces that each fit one short GPU call.

An experiment at one seed (E1: full-data LTR to 89.3% sparsity, ...) is far more than one GPU call: at the
H200's measured 3.7-4.8 s per epoch (benchmarks/RESULTS.md), E1 alone is 11 levels x about 3 minutes. So a
cell is one *level* of one experiment at one seed (``E1-s0-L03``), or the full-data training of one level's
ticket (``E2-s0-R08``, `prac retrain`). A level cell resumes the run its previous level left (the ledger keeps
that state), so an experiment adds up over as many calls as it takes. Each cell's estimate, alone on the device
at the slowest measured epoch, is within `CELL_LIMIT_S`; `tests/test_campaign_ledger.py` checks it.

Costs are counted in epochs of ResNet-20 over the full training split; the scheduler turns them into seconds
with the epoch time measured in the same call (or given on the command line). Two factors are assumptions,
not measurements, and are named as such: a CTS search epoch at batch 512 costs as much as a training epoch,
and ResNet-56 costs 3x ResNet-20 per epoch (its 27 blocks against 9, on an engine bound by kernel launches);
E7's two compiles and dataset cache are assumed to take 150 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes" / "campaign"

CELL_LIMIT_S = 480.0  # at most 8 minutes of one H200 per cell, alone
SLOWEST_EPOCH_S = 4.8  # ResNet-20, 45,000 images, batch 128, bf16, one process: the slower of two measured calls
CELL_OVERHEAD_S = 25.0  # process start, data from the decoded cache, evaluation and saving of one cell
SEARCH_EPOCH_COST = 1.0  # assumed: a CTS search epoch (batch 512) against a training epoch (batch 128)
MODEL_COST = {"cifar_resnet20": 1.0, "cifar_resnet56": 3.0}  # resnet56: assumed from its depth, not measured
SEEDS = (0, 1, 2)
TIMM_EPOCHS = 4  # E7: epochs of each of its two rounds
# E7's cost in epoch units: two rounds on timm's DataLoader path (1.6x the device-resident epoch, measured) plus
# two cold inductor compiles and the datasets cache (assumed 150 s together)
TIMM_COST_EPOCHS = 2 * TIMM_EPOCHS * 1.6 + 150 / SLOWEST_EPOCH_S


@dataclass(frozen=True)
class Experiment:
    key: str  # E1 ... E7
    title: str
    recipe: str  # file in recipes/campaign/
    seeds: tuple[int, ...] = SEEDS
    retrain_levels: tuple[int, ...] = ()  # tickets trained on the full data (prac retrain)
    sizes_from: Optional[str] = None  # another experiment whose PrAC run gives this one's subset sizes (same seed)
    index_from: Optional[str] = None  # another experiment whose final PrAC set (index file) this one trains on (seed 0)
    overrides: dict = field(default_factory=dict)  # recipe sections merged over the file's
    runner: str = "prac"  # how its cells run: prac (prac run / prac retrain) or timm (benchmarks/campaign_timm.py)


def experiments() -> list[Experiment]:
    """E1-E7 of issue 25, in the campaign's order: every experiment at seed 0 before any at seed 1."""
    resnet56 = {"model": {"name": "cifar_resnet56"}}
    return [
        Experiment("E1", "full-data LTR to 89.3% sparsity (20% of conv weights per level)", "ltr.yaml"),
        Experiment("E2", "PrAC-LTR (reference preset) to 89.3%; tickets of levels 4, 8, 10 on the full data", "prac.yaml",
                   retrain_levels=(4, 8, 10)),
        Experiment("E3", "random subsets of E2's sizes, same budget; tickets of levels 4, 8, 10 on the full data", "random.yaml",
                   retrain_levels=(4, 8, 10), sizes_from="E2"),
        Experiment("E4", "CTS at 99.32% sparsity (20-epoch search at batch 512, batch-statistics BatchNorm)", "cts.yaml"),
        Experiment("E5", "LTR to 99.32% (51% per level, 7 levels)", "ltr_99.yaml"),
        Experiment("E6", "ResNet-56 tickets found on E2's final PrAC set (seed 0)", "prac.yaml", seeds=(0,), index_from="E2",
                   overrides={**resnet56, "data_selection": {"strategy": "index", "budget": "quadratic"}}),
        Experiment("E6F", "ResNet-56 full-data LTR, E6's baseline", "ltr.yaml", seeds=(0,), overrides=resnet56),
        Experiment("E7", "timm's train.py with the hook: one ticket round, bf16, channels_last, --torchcompile", "ltr.yaml",
                   seeds=(0,), runner="timm"),
    ]


@dataclass(frozen=True)
class Cell:
    id: str  # E1-s0-L03, E2-s0-R08
    experiment: str
    seed: int
    kind: str  # level | retrain | timm
    level: int
    depends: tuple[str, ...]  # cells whose ledger entries must exist first
    epochs: float  # cost in ResNet-20 full-data epochs
    order: tuple  # priority: seed, experiment, level, kind

    @property
    def chain(self) -> str:
        """The run this cell continues: one per experiment and seed."""
        return f"{self.experiment}-s{self.seed}"


def load_recipe(experiment: Experiment, scale: Optional[dict] = None) -> dict:
    """The experiment's recipe: its file, its overrides, then the scale's (the dry run's tiny sizes)."""
    raw = yaml.safe_load((RECIPES / experiment.recipe).read_text())
    scale = scale or {}
    for overrides in (experiment.overrides, scale.get("all", {}), scale.get(experiment.key, {})):
        for section, values in overrides.items():
            if values is None:
                raw.pop(section, None)
            elif section in ("ticket", "data_selection") and "strategy" in values:
                raw[section] = dict(values) if values.get("strategy") != raw[section].get("strategy") else {**raw[section], **values}
            else:
                raw.setdefault(section, {}).update(values)
    return raw


def level_count(recipe: dict) -> int:
    ticket = recipe["ticket"]
    return len(ticket["densities"]) if ticket["strategy"] == "cts" else int(ticket["levels"])


def rewind_epochs(recipe: dict) -> float:
    """The rewind point in epochs (``2ep``, ``2ep50it`` count their epochs; step-only points count as 0)."""
    text = str(recipe["ticket"].get("rewind", "0it"))
    return float(text.split("ep")[0]) if "ep" in text else 0.0


def cells(scale: Optional[dict] = None) -> list[Cell]:
    """Every cell of the campaign, in priority order."""
    out: list[Cell] = []
    specs = experiments()
    for rank, experiment in enumerate(specs):
        recipe = load_recipe(experiment, scale)
        epochs = float(recipe["train"]["epochs"])
        factor = MODEL_COST.get(recipe["model"]["name"], 1.0)
        after_rewind = epochs - rewind_epochs(recipe)
        levels = level_count(recipe)
        for seed in experiment.seeds:
            chain = f"{experiment.key}-s{seed}"
            if experiment.runner == "timm":
                out.append(Cell(f"{chain}-T00", experiment.key, seed, "timm", 0, (), TIMM_COST_EPOCHS, (seed, rank, 0, 0)))
                continue
            for level in range(levels + 1):
                depends = [f"{chain}-L{level - 1:02d}"] if level else []
                if experiment.sizes_from:
                    depends.append(f"{experiment.sizes_from}-s{seed}-L{level:02d}")
                if experiment.index_from and level == 0:
                    source = load_recipe(next(e for e in specs if e.key == experiment.index_from), scale)
                    depends.append(f"{experiment.index_from}-s0-L{level_count(source):02d}")
                cost = epochs if level == 0 else after_rewind
                if level and recipe["ticket"]["strategy"] == "cts":
                    cost += SEARCH_EPOCH_COST * float(recipe["ticket"].get("search_epochs", 20.0))
                out.append(Cell(f"{chain}-L{level:02d}", experiment.key, seed, "level", level, tuple(depends), factor * cost,
                                (seed, rank, level, 0)))
            for level in (scale or {}).get("retrain", {}).get(experiment.key, experiment.retrain_levels):
                if level <= levels:
                    out.append(Cell(f"{chain}-R{level:02d}", experiment.key, seed, "retrain", level, (f"{chain}-L{level:02d}",),
                                    factor * after_rewind, (seed, rank, level, 1)))
    return sorted(out, key=lambda c: c.order)


def experiment(key: str) -> Experiment:
    return next(e for e in experiments() if e.key == key)


# The dry run: the same cells on scikit-learn's digits (or a slice of the CIFAR-10 copy), 1 epoch per level, 2 levels
DRY_SCALE = {
    "all": {"data": {"path": "builtin:digits", "data_files": None, "augment": {"random_crop_padding": 1, "hflip": False},
                     "val_fraction": 0.1, "split_seed": 0},
            "train": {"epochs": 1, "batch_size": 64, "mixed_precision": "no", "lr": 0.05},
            "run": {"tracker": "none", "checkpoint_every": "none"}},
    "E1": {"ticket": {"levels": 2, "rewind": "2it"}},
    "E2": {"ticket": {"levels": 2, "rewind": "2it"}},
    "E3": {"ticket": {"levels": 2, "rewind": "2it"}},
    "E4": {"ticket": {"densities": [0.1], "rewind": "2it", "search_epochs": 1.0, "search_batch_size": 256}},
    "E5": {"ticket": {"levels": 2, "rewind": "2it"}},
    "E6": {"ticket": {"levels": 1, "rewind": "2it"}},
    "E6F": {"ticket": {"levels": 1, "rewind": "2it"}},
    "retrain": {"E2": (2,), "E3": (2,)},  # the levels whose tickets train on the full data
}
