"""Checks that a run directory holds what an analysis reads, before anything is loaded or trained.

Incomplete runs and directories from an older format fail here with one `PracError` naming the missing piece.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from ..errors import PracError
from .folder import RunDirectory


def completed_run(path: str | Path) -> tuple[RunDirectory, list[int]]:
    """The run at ``path`` and its completed levels; every level's metrics must carry a format version."""
    run = RunDirectory.existing(path)
    levels = run.completed_levels()
    if not levels:
        raise PracError(f"run directory {str(path)!r} has no completed level (no {run.relative(run.metrics_path(0))})")
    for level in levels:
        run.level_metrics(level)  # every field readers use, checked (an older format is named as such)
    incomplete = run.incomplete_level()
    if incomplete is not None:
        raise PracError(f"level {incomplete} of {str(path)!r} is incomplete: {run.relative(run.level_dir(incomplete))} holds "
                        f"results but no {run.relative(run.metrics_path(incomplete))} (deleted, or the run stopped while saving "
                        "the level); restore the file, or run the recipe again to complete the level")
    return run, levels


def require_files(run: RunDirectory, names: Iterable[str], why: str) -> None:
    """Raise naming the first of ``names`` (relative to the run) that is missing."""
    for name in names:
        if not (run.path / name).is_file():
            raise PracError(f"run directory {str(run.path)!r} has no {name} ({why} needs it)")


def chosen_level(path: str | Path, level: Optional[int]) -> tuple[RunDirectory, int]:
    """The run and the requested completed level (default: the last one)."""
    run, levels = completed_run(path)
    if level is None:
        return run, levels[-1]
    if level not in levels:
        raise PracError(f"level {level} of {str(path)!r} is not complete (completed levels: 0..{levels[-1]})")
    return run, level
