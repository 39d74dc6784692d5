"""The run folder's layout: its file names and pure functions from the folder's path to each file's path.

Nothing else lives here (no reading, no writing, no imports beyond `pathlib`), so every module that needs a name
(`folder` reads and writes the files, `lock` tidies a folder that never became a run) imports this one and none
imports another for it. The layout, described in `prac_plugin.rundir.folder`, follows open_lth's
``foundations/paths.py``. A strategy's own files (PrAC's sets, a structured ticket's structure) are named by the
strategy (``strategies/<method>/options.py``), under `level_dir` or the run's root.
"""

from __future__ import annotations

from pathlib import Path

RECIPE_FILE = "recipe.yaml"
RECIPE_RECORD = ".recipe_started.yaml"  # recipe.yaml is the user's to read, and to edit by mistake; this keeps what ran
LOCK_NAME = ".prac.lock"  # held by the process working in the folder: not content
MASK_FILE = "mask.safetensors"
WEIGHTS_FILE = "weights.safetensors"
METRICS_FILE = "metrics.json"
REWIND_OPTIMIZER_FILE = "rewind_optimizer.pt"
CHECKPOINTS = "checkpoints"
ANALYSES = ("sanity", "stability", "full_data")


def level_name(level: int) -> str:
    return f"level_{level:02d}"


def level_dir(root: str | Path, level: int) -> Path:
    return Path(root) / level_name(level)


def mask(root: str | Path, level: int) -> Path:
    return level_dir(root, level) / MASK_FILE


def weights(root: str | Path, level: int) -> Path:
    return level_dir(root, level) / WEIGHTS_FILE


def metrics(root: str | Path, level: int) -> Path:
    return level_dir(root, level) / METRICS_FILE



def state(root: str | Path, name: str) -> Path:
    """``init`` or ``rewind`` weights."""
    return Path(root) / f"{name}.safetensors"


def state_info(root: str | Path, name: str) -> Path:
    """Where the ``name`` weights lie in training (``rewind.json``: the rewind step)."""
    return Path(root) / f"{name}.json"


def rewind_optimizer(root: str | Path) -> Path:
    return Path(root) / REWIND_OPTIMIZER_FILE


def checkpoints(root: str | Path) -> Path:
    return Path(root) / CHECKPOINTS





def summary(root: str | Path, suffix: str) -> Path:
    """``summary.json``, ``summary.csv``, ``summary.md``."""
    return Path(root) / f"summary{suffix}"


def curve(root: str | Path) -> Path:
    return Path(root) / "curve.png"


def analysis(root: str | Path, name: str, level: int, suffix: str, variant: str = "") -> Path:
    """``sanity/level_LL.json``, ``stability/level_LL_rewind_bn.png``, ``full_data/level_LL.json``, ..."""
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis folder {name!r}")
    return Path(root) / name / f"{level_name(level)}{variant}{suffix}"
