"""The run directory: resolved recipe, rewind weights, one folder per level, summaries.

Layout::

    recipe.yaml             resolved recipe (what makes the run; compared on re-run)
    init.safetensors        weights at initialization
    rewind.safetensors      weights at the rewind point (+ rewind.json: its step)
    level_NN/mask.safetensors, weights.safetensors, metrics.json   (metrics.json is written last)
    summary.json, summary.csv, summary.md, curve.png
    .prac.lock              held by the process working in the folder (see runlock.py)

A level is complete when its ``metrics.json`` exists; a re-run continues after the last complete level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from .errors import PracError
from .io import atomic_save_safetensors, atomic_write_json, atomic_write_text, load_safetensors
from .runlock import LOCK_NAME  # the run's lock file is not content

RESULT_AFFECTING_SECTIONS = ("model", "data", "train", "ticket", "data_selection")
FORMAT_VERSION = 1


def _first_difference(a: Any, b: Any, prefix: str = "") -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
            if found:
                return found
        return None
    return None if a == b else f"{prefix}: {a!r} there, {b!r} here"


class RunDirectory:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._replace = False  # `open` found another recipe in a folder without results

    @classmethod
    def open(cls, path: str | Path, recipe_dict: dict) -> "RunDirectory":
        """Check that ``path`` is free or holds the same recipe; `create` writes it once the run is validated."""
        run = cls(Path(path))
        run._recipe = recipe_dict
        recipe_file = run.path / "recipe.yaml"
        if recipe_file.is_file():
            existing = yaml.safe_load(recipe_file.read_text()) or {}
            mine = {k: recipe_dict.get(k) for k in RESULT_AFFECTING_SECTIONS}
            theirs = {k: existing.get(k) for k in RESULT_AFFECTING_SECTIONS}
            difference = _first_difference(theirs, mine)
            if difference and not run.holds_results():
                run._replace = True  # nothing was computed with the old recipe (e.g. level 0 diverged): take the new one
            elif difference:
                raise PracError(
                    f"output directory {str(run.path)!r} holds a different run ({difference}); "
                    "choose another --output or remove that directory"
                )
        elif run.path.exists() and (not run.path.is_dir() or any(p.name != LOCK_NAME for p in run.path.iterdir())):
            raise PracError(f"output directory {str(run.path)!r} exists and is not a prac run directory; choose another --output")
        return run

    def holds_results(self) -> bool:
        """Whether anything was computed here: a completed level or a mid-level checkpoint."""
        checkpoints = self.path / "checkpoints"
        return bool(self.completed_levels()) or (checkpoints.is_dir() and any(checkpoints.iterdir()))

    def create(self) -> None:
        """Write the directory and its recipe (a no-op when reopening a run)."""
        recipe_file = self.path / "recipe.yaml"
        if not recipe_file.is_file() or self._replace:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(recipe_file, yaml.safe_dump(self._recipe, sort_keys=False))

    @classmethod
    def existing(cls, path: str | Path) -> "RunDirectory":
        """A directory that must already hold a run (for ``prac report``)."""
        run = cls(Path(path))
        if not (run.path / "recipe.yaml").is_file():
            raise PracError(f"{str(run.path)!r} is not a prac run directory (no recipe.yaml)")
        return run

    def recipe(self) -> dict:
        return yaml.safe_load((self.path / "recipe.yaml").read_text())

    def level_dir(self, level: int) -> Path:
        return self.path / f"level_{level:02d}"

    def completed_levels(self) -> list[int]:
        levels = []
        while (self.level_dir(len(levels)) / "metrics.json").is_file():
            levels.append(len(levels))
        return levels

    def level_metrics(self, level: int) -> dict:
        path = self.level_dir(level) / "metrics.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PracError(f"level metrics {str(path)!r} cannot be read ({exc.__class__.__name__})") from None

    def save_level(self, level: int, mask_save, weights: dict[str, torch.Tensor], metrics: dict) -> None:
        folder = self.level_dir(level)
        mask_save(folder / "mask.safetensors")
        atomic_save_safetensors(weights, folder / "weights.safetensors", {"format": "pt", "level": str(level)})
        atomic_write_json(folder / "metrics.json", metrics)  # last: marks the level complete

    def level_weights(self, level: int) -> dict[str, torch.Tensor]:
        return load_safetensors(self.level_dir(level) / "weights.safetensors", what=f"level {level} weights")

    def save_state(self, name: str, weights: dict[str, torch.Tensor], info: Optional[dict] = None) -> None:
        atomic_save_safetensors(weights, self.path / f"{name}.safetensors", {"format": "pt"})
        if info is not None:
            atomic_write_json(self.path / f"{name}.json", info)

    def load_state(self, name: str) -> tuple[dict[str, torch.Tensor], dict]:
        weights = load_safetensors(self.path / f"{name}.safetensors", what=f"{name} weights")
        info_path = self.path / f"{name}.json"
        return weights, json.loads(info_path.read_text()) if info_path.is_file() else {}
