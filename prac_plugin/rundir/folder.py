"""The run directory: reading and writing the files of a run folder (their names and paths: `paths`).

Layout::

    recipe.yaml             resolved recipe (what makes the run; compared on re-run)
    .recipe_started.yaml    the same recipe, as the run started: a recipe.yaml edited after results exist is refused
    init.safetensors        weights at initialization
    rewind.safetensors      weights at the rewind point (+ rewind.json: its step)
    rewind_optimizer.pt     optimizer state at the rewind point (when the recipe rewinds it)
    level_NN/mask.safetensors, weights.safetensors, metrics.json   (metrics.json is written last)
    checkpoints/            mid-level checkpoints (layout inside: `prac_plugin.engine.checkpoint`)
    sanity/, stability/, full_data/   analyses of levels
    summary.json, summary.csv, summary.md, curve.png
    .prac.lock              held by the process working in the folder (see `prac_plugin.rundir.lock`)

and the files a strategy writes of its own, each named by the strategy (its declared ``run_files``: PrAC's sets,
a structured ticket's ``level_NN/structure.json``, ...), under the paths `level_file` and `path` give.

A level is complete when its ``metrics.json`` exists; a re-run continues after the last complete level. Weights, a
mask or a strategy's own level file without metrics are an incomplete level, which analyses refuse and a re-run
computes again. Weights read
back are checked finite: a run never saves NaN or infinities, so any there are damage.
Every JSON file the package writes carries ``format_version`` = `FORMAT_VERSION`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from .. import registry
from ..errors import PracError, shown
from . import paths
from .files import atomic_save_safetensors, atomic_save_torch, atomic_write_json, atomic_write_text, load_safetensors
from .paths import (  # noqa: F401  (the names, read from here by the rest of the package)
    ANALYSES, CHECKPOINTS, LOCK_NAME, MASK_FILE, METRICS_FILE, RECIPE_FILE, RECIPE_RECORD, REWIND_OPTIMIZER_FILE,
    WEIGHTS_FILE, level_name,
)

RESULT_AFFECTING_SECTIONS = ("model", "data", "train", "ticket", "data_selection")
FORMAT_VERSION = 1


def read_json(path: Path, what: str) -> Any:
    """A JSON file the package wrote; unreadable, non-UTF-8 or malformed content is one `PracError`."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise PracError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PracError(f"{what} {str(path)!r} cannot be read ({exc.__class__.__name__}): the file is damaged") from None


_NUMBER = (int, float)
# field -> (types, required, lower bound): what every metrics.json since format_version 1 holds
METRIC_FIELDS: dict[str, tuple[tuple, bool, Optional[float]]] = {
    "format_version": ((int,), True, 1),
    "level": ((int,), True, 0),
    "weights_remaining_pct": (_NUMBER, True, 0),
    "optimizer_steps": ((int,), True, 0),
    "examples_seen": ((int,), True, 0),
    "full_data_steps": ((int,), True, 0),
    "wall_time_s": (_NUMBER, True, 0),
    "test_acc": (_NUMBER + (type(None),), False, 0),
    "val_acc": (_NUMBER + (type(None),), False, 0),
    "selection_forward_passes": ((int,), False, 0),
    "layers": ((list,), False, None),
    "history": ((list,), False, None),
}


def check_level_metrics(metrics: Any, path: Path, level: int) -> dict:
    """``metrics`` if it holds every field readers use, with the right types; else a `PracError` naming the field."""
    where = str(path)
    if not isinstance(metrics, dict):
        raise PracError(f"level metrics {where!r} hold {type(metrics).__name__}, not a JSON object: the file is damaged")
    if "format_version" not in metrics:
        raise PracError(f"{where!r} has no format_version: written by an older prac_plugin; re-run its recipe into a new directory")
    for name, (types, required, lowest) in METRIC_FIELDS.items():
        if name not in metrics:
            if required:
                raise PracError(f"level metrics {where!r} have no {name!r}: the file is damaged (summaries would count it as 0)")
            continue
        value = metrics[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise PracError(f"level metrics {where!r}: {name} = {value!r} should be {' or '.join(t.__name__ for t in types)}")
        if lowest is not None and isinstance(value, _NUMBER) and not value >= lowest:
            raise PracError(f"level metrics {where!r}: {name} = {value!r} should be at least {lowest}")
    if metrics["format_version"] > FORMAT_VERSION:
        raise PracError(f"level metrics {where!r} have format_version {metrics['format_version']}, newer than this "
                        f"prac_plugin reads ({FORMAT_VERSION}); upgrade prac_plugin")
    if metrics["level"] != level:
        raise PracError(f"level metrics {where!r} say level {metrics['level']}, not {level}: files were moved between levels")
    return metrics




def first_difference(a: Any, b: Any, prefix: str = "") -> Optional[tuple[str, Any, Any]]:
    """The first key (dotted) whose values differ between two nested mappings, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
            if found:
                return found
        return None
    return None if a == b else (prefix, a, b)


def added_keys(current: Optional[dict]) -> dict[tuple[str, str], Any]:
    """Keys added to the recipe after run folders were made with the behaviour they now name, with that value: a
    stored recipe without one ran with it, so an old folder resumes when the value is the same and is "a different
    run" when not (an old CTS run searched with frozen running statistics: resuming it under the new default would
    mix methods). Each strategy declares them beside its options (``absent_means``), for ``current``'s strategies."""
    added = {}
    for kind in registry.KINDS:
        section = (current or {}).get(kind)
        name = section.get("strategy") if isinstance(section, dict) else None
        try:
            options = registry.spec(kind, name).Options if isinstance(name, str) else None
        except PracError:  # a strategy not installed here: no keys of its to fill
            options = None
        for option in dataclasses.fields(options) if dataclasses.is_dataclass(options) else ():
            if "absent_means" in option.metadata:
                added[(kind, option.name)] = option.metadata["absent_means"]
    return added


# How a step is executed, not what it computes (the captured step gives the eager step's numbers): not compared.
EXECUTION_KEYS = {("train", "cuda_graphs")}


def _result_sections(recipe: dict, current: Optional[dict] = None) -> dict:
    """The result-affecting sections of ``recipe``, without execution keys; with ``current`` (the recipe it is
    compared with), keys added since ``recipe`` was written read as the behaviour before they existed."""
    sections = {k: dict(recipe[k]) if isinstance(recipe.get(k), dict) else recipe.get(k) for k in RESULT_AFFECTING_SECTIONS}
    for section, key in EXECUTION_KEYS:
        if isinstance(sections.get(section), dict):
            sections[section].pop(key, None)
    for (section, key), before in added_keys(current).items():
        now = (current or {}).get(section)
        if isinstance(now, dict) and key in now and isinstance(sections.get(section), dict):
            sections[section].setdefault(key, before)
    return sections


def _check_finite(tensors: dict[str, torch.Tensor], what: str, path: Path) -> dict[str, torch.Tensor]:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise PracError(f"{what} {str(path)!r}: {name} holds NaN or infinite values, which a run never saves: the file is "
                            "damaged; restore it, or run the recipe into a new folder")
    return tensors


class RunDirectory:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._replace = False  # `open` found another recipe in a folder without results

    @classmethod
    def open(cls, path: str | Path, recipe_dict: dict) -> "RunDirectory":
        """Check that ``path`` is free or holds the same recipe; `create` writes it once the run is validated."""
        run = cls(Path(path))
        run._recipe = recipe_dict
        recipe_file = run.path / RECIPE_FILE
        if recipe_file.is_file():
            existing = run._read_recipe()
            results = run.holds_results()
            if results:
                run._check_record(existing)  # results computed with another recipe than the file now says
            difference = first_difference(_result_sections(existing, recipe_dict), _result_sections(recipe_dict))
            if difference and not results:
                run._replace = True  # nothing was computed with the old recipe (e.g. level 0 diverged): take the new one
            elif difference:
                key, theirs, mine = difference
                raise PracError(
                    f"output directory {str(run.path)!r} holds a different run ({key}: {shown(theirs)} there, {shown(mine)} here); "
                    "choose another --output or remove that directory"
                )
        elif run.path.exists() and (not run.path.is_dir() or any(p.name != LOCK_NAME for p in run.path.iterdir())):
            raise PracError(f"output directory {str(run.path)!r} exists and is not a prac run directory; choose another --output")
        return run

    def holds_results(self) -> bool:
        """Whether anything was computed here: a completed level or a mid-level checkpoint."""
        checkpoints = self.checkpoints_dir
        return bool(self.completed_levels()) or (checkpoints.is_dir() and any(checkpoints.iterdir()))

    def create(self) -> None:
        """Write the directory and its recipe, and the record of it while nothing is computed (a no-op when
        reopening a run that has results)."""
        recipe_file = self.path / RECIPE_FILE
        text = yaml.safe_dump(self._recipe, sort_keys=False)
        if not recipe_file.is_file() or self._replace:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(recipe_file, text)
        record = self.path / RECIPE_RECORD
        if not self.holds_results() and not (record.is_file() and record.read_bytes() == text.encode("utf-8")):
            atomic_write_text(record, text)  # second: a folder is never a record without its recipe.yaml

    @classmethod
    def existing(cls, path: str | Path) -> "RunDirectory":
        """A directory that must already hold a run (for ``prac report``)."""
        run = cls(Path(path))
        if not (run.path / RECIPE_FILE).is_file():
            raise PracError(f"{str(run.path)!r} is not a prac run directory (no {RECIPE_FILE})")
        return run

    def recipe(self) -> dict:
        """The run's recipe.yaml, refused if it no longer says what the run was made with."""
        recipe = self._read_recipe()
        self._check_record(recipe)
        return recipe

    def _read_recipe(self, name: str = RECIPE_FILE) -> dict:
        from ..config.recipes import load_recipe_dict  # here: recipes imports checkpoint, which imports this module

        path = self.path / name
        try:
            recipe = load_recipe_dict(path, what="the run folder's recipe")
        except PracError as exc:
            raise PracError(f"{exc}: the file is damaged; {self._restore_advice()}") from None
        if not isinstance(recipe, dict):
            raise PracError(f"the run folder's recipe {str(path)!r} holds a {type(recipe).__name__}, not a mapping of sections: "
                            f"the file is damaged; {self._restore_advice()}")
        return recipe

    def _restore_advice(self) -> str:
        kept = f" (the run's own copy is {str(self.path / RECIPE_RECORD)!r})" if (self.path / RECIPE_RECORD).is_file() else ""
        return f"restore it{kept}, or run into a new folder"

    def _check_record(self, recipe: dict) -> None:
        """Refuse a recipe.yaml whose result-affecting values differ from those the run started with (folders
        written before the record existed have none to check against)."""
        record_path = self.path / RECIPE_RECORD
        if not record_path.is_file():
            return
        difference = first_difference(_result_sections(self._read_recipe(RECIPE_RECORD), recipe), _result_sections(recipe))
        if difference:
            key, started, now = difference
            raise PracError(
                f"{str(self.path / RECIPE_FILE)!r} was changed after the run started ({key}: {shown(started)} when it started, "
                f"{shown(now)} in the file): the results there were made with {shown(started)}; {self._restore_advice()}")

    # paths (`paths`) ------------------------------------------------------------------------------------
    def level_dir(self, level: int) -> Path:
        return paths.level_dir(self.path, level)

    def mask_path(self, level: int) -> Path:
        return paths.mask(self.path, level)

    def weights_path(self, level: int) -> Path:
        return paths.weights(self.path, level)

    def metrics_path(self, level: int) -> Path:
        return paths.metrics(self.path, level)

    def level_file(self, level: int, name: str) -> Path:
        """A file a strategy keeps in a level's folder (a structured ticket's ``structure.json``)."""
        return self.level_dir(level) / name

    def state_path(self, name: str) -> Path:
        """``init`` or ``rewind`` weights."""
        return paths.state(self.path, name)

    @property
    def rewind_optimizer_path(self) -> Path:
        return paths.rewind_optimizer(self.path)

    @property
    def checkpoints_dir(self) -> Path:
        return paths.checkpoints(self.path)

    def summary_path(self, suffix: str) -> Path:
        """``summary.json``, ``summary.csv``, ``summary.md``."""
        return paths.summary(self.path, suffix)

    @property
    def curve_path(self) -> Path:
        return paths.curve(self.path)

    def analysis_path(self, analysis: str, level: int, suffix: str, variant: str = "") -> Path:
        """``sanity/level_LL.json``, ``stability/level_LL_rewind_bn.png``, ``full_data/level_LL.json``, ..."""
        return paths.analysis(self.path, analysis, level, suffix, variant)

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.path))

    # contents -------------------------------------------------------------------------------------------
    def completed_levels(self) -> list[int]:
        """Levels 0..N whose metrics exist. A later level with results after a missing one means the folder lost
        files (a deleted level): an error naming it, never a silently shorter run."""
        levels = []
        while self.metrics_path(len(levels)).is_file():
            levels.append(len(levels))
        gap = len(levels)
        later = [p for p in self.path.glob("level_*") if p.name > level_name(gap) and (p / METRICS_FILE).is_file()]
        if later:
            raise PracError(
                f"run directory {str(self.path)!r} has {self.relative(min(later) / METRICS_FILE)} but no readable "
                f"{self.relative(self.metrics_path(gap))}: level {gap} was deleted or damaged; restore it or run the recipe into a new folder"
            )
        return levels

    def chosen_level(self, level: Optional[int], where: str) -> int:
        """``level`` if it is complete, the last completed level for None; a `PracError` naming ``where`` otherwise."""
        completed = self.completed_levels()
        if not completed:
            raise PracError(f"run directory {where!r} has no completed level yet")
        level = completed[-1] if level is None else level
        if level not in completed:
            raise PracError(f"--level {level} is not a completed level of {where!r} (completed: 0..{completed[-1]})")
        return level

    def incomplete_level(self) -> Optional[int]:
        """The level after the completed ones if its folder holds a result file (its mask, weights, or a file of the
        strategy's own) but no metrics.json (the run stopped while saving it, or the file was deleted); None when
        there is none. Hidden files (an atomic write's temporary file) are no result."""
        level = len(self.completed_levels())
        folder = self.level_dir(level)
        if folder.is_dir() and any(p.is_file() and not p.name.startswith(".") and p.name != METRICS_FILE for p in folder.iterdir()):
            return level
        return None

    def level_metrics(self, level: int) -> dict:
        """A completed level's metrics, checked field by field: a damaged file is one error naming file and field."""
        return check_level_metrics(read_json(self.metrics_path(level), "level metrics"), self.metrics_path(level), level)

    def save_level(self, level: int, mask_save, weights: dict[str, torch.Tensor], metrics: dict) -> None:
        mask_save(self.mask_path(level))
        atomic_save_safetensors(weights, self.weights_path(level), {"format": "pt", "level": str(level)})
        atomic_write_json(self.metrics_path(level), metrics)  # last: marks the level complete

    def level_weights(self, level: int) -> dict[str, torch.Tensor]:
        path = self.weights_path(level)
        return _check_finite(load_safetensors(path, what=f"level {level} weights"), f"level {level} weights", path)

    def save_state(self, name: str, weights: dict[str, torch.Tensor], info: Optional[dict] = None) -> None:
        atomic_save_safetensors(weights, self.state_path(name), {"format": "pt"})
        if info is not None:
            atomic_write_json(paths.state_info(self.path, name), info)

    def load_state(self, name: str) -> tuple[dict[str, torch.Tensor], dict]:
        weights = _check_finite(load_safetensors(self.state_path(name), what=f"{name} weights"), f"{name} weights", self.state_path(name))
        info_path = paths.state_info(self.path, name)
        info = read_json(info_path, f"{name} point") if info_path.is_file() else {}
        if not isinstance(info, dict) or (info and not all(isinstance(info.get(k), int) and not isinstance(info.get(k), bool)
                                                            for k in ("step", "total_steps"))):
            raise PracError(f"{str(info_path)!r} should hold the integer fields step and total_steps: the file is damaged")
        return weights, info

    def save_rewind_optimizer(self, state: dict) -> None:
        atomic_save_torch(state, self.rewind_optimizer_path)

    def load_rewind_optimizer(self) -> dict:
        try:
            return torch.load(self.rewind_optimizer_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise PracError(f"run directory {str(self.path)!r} has no {REWIND_OPTIMIZER_FILE} (the recipe rewinds the optimizer)") from None
        except Exception as exc:  # a truncated or foreign file: torch's own error types vary
            raise PracError(f"{str(self.rewind_optimizer_path)!r} cannot be read ({exc.__class__.__name__})") from None
