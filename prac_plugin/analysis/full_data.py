"""Tickets found on a subset, trained on the full data: how the PrAC paper measures a ticket.

A run with data selection (prac, random, index) trains every pruned level on a subset, so a level's accuracy
is that of a network trained on less data. What the run *found* is the level's mask with the rewind weights;
the PrAC paper (and its reference code's ``main_train.py``) measures that ticket by training it on the whole
training split with the full schedule, from the rewind point to the end. The cost of finding the mask of level
L is the training of levels 0..L-1 (the mask is pruned from level L-1's weights), or of level 0 alone for a
strategy whose levels are independent: `TicketTraits.finding_levels`, the rule `prac report` counts by too. That
full-data training is the same for every way of finding the mask.

Results go to ``RUN_DIR/full_data/level_LL.json``; a level already trained with the same seeds is not trained
again, so an interrupted command continues where it stopped.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import PracError
from ..rundir.files import atomic_write_json
from ..config.recipes import parse_recipe
from ..rundir.folder import FORMAT_VERSION, RunDirectory
from ..engine.retrain import Retrainer, require_analysis
from ..rundir.completed import completed_run, require_files

def result_path(run_path: str | Path, level: int) -> Path:
    return RunDirectory(Path(run_path)).analysis_path("full_data", level, ".json")


def read_result(run_path: str | Path, level: int) -> Optional[dict]:
    """The level's ticket trained on the full data, or None if it was not (or the file is damaged)."""
    try:
        return json.loads(result_path(run_path, level).read_text())
    except (OSError, ValueError):
        return None


def train_on_full_data(path: str | Path, levels: Optional[Sequence[int]] = None, seeds: int = 1) -> list[dict]:
    """Train the tickets of ``levels`` (default: every completed pruned level) on the full training split with
    ``seeds`` data-order seeds (the run's seed, then the next ones); one result per level."""
    if seeds < 1:
        raise PracError(f"--seeds {seeds} must be at least 1")
    run, completed = completed_run(path)
    recipe = run.recipe()
    traits = require_analysis(run, "retrain", "full-data training").traits
    chosen = [level for level in completed if level > 0] if not levels else list(levels)
    if not chosen:
        raise PracError(f"run {str(path)!r} has no pruned level yet (completed: level 0 only)")
    for level in chosen:
        if level == 0:
            raise PracError("level 0 is the dense network: it has no mask to train; choose levels of 1 or more")
        if level not in completed:
            raise PracError(f"level {level} of {str(path)!r} is not complete (completed levels: 0..{completed[-1]})")
    require_files(run, [run.relative(run.mask_path(level)) for level in chosen], "full-data training")
    seed_list = [parse_recipe(recipe).train.seed + i for i in range(seeds)]  # as Retrainer.seed
    metrics = [run.level_metrics(level) for level in range(max(chosen) + 1)]
    retrainer: Optional[Retrainer] = None  # built only when a level needs training
    results = []
    for level in chosen:
        previous = read_result(run.path, level)  # absent or damaged: train it (again)
        if previous is not None and previous.get("seeds") == seed_list:
            results.append(previous)
            continue
        retrainer = retrainer or Retrainer(run, start="rewind")
        mask = retrainer.load_mask(level)
        accuracy, seconds = [], []
        for seed in seed_list:
            started = time.perf_counter()
            retrainer.train(mask, retrainer.start_weights, seed, level, desc=f"level {level} on the full data, seed {seed}")
            seconds.append(time.perf_counter() - started)
            accuracy.append(retrainer.accuracy())
        finding = traits.finding_levels(level)  # the cost of a ticket, as `prac report` counts it
        result = {
            "format_version": FORMAT_VERSION, "run": str(run.path), "level": level,
            "split": retrainer.split,
            "weights_remaining_pct": 100.0 * mask.density,  # of the mask trained here, not the run's record
            "start_step": retrainer.start_step, "total_steps": retrainer.schedule.total_steps, "seeds": seed_list,
            "accuracy": accuracy, "mean": statistics.mean(accuracy),
            "std": statistics.stdev(accuracy) if len(accuracy) > 1 else None,
            "level_accuracy": metrics[level].get(f"{retrainer.split}_acc"),
            "finding_steps": sum(metrics[i]["optimizer_steps"] for i in finding),
            "training_steps": retrainer.schedule.total_steps - retrainer.start_step,
            "finding_wall_time_s": sum(metrics[i]["wall_time_s"] for i in finding),
            "training_wall_time_s": statistics.mean(seconds),  # per seed
        }
        atomic_write_json(result_path(run.path, level), result)
        results.append(result)
    return results


def full_data_markdown(results: list[dict]) -> str:
    """A table: each level's accuracy as the run trained it and trained on the full data."""
    split = results[0]["split"]
    seeds = results[0]["seeds"]
    lines = [
        f"# Tickets of {results[0]['run']} trained on the full training split",
        "",
        f"Each level's mask with the rewind weights (step {results[0]['start_step']}), trained to the end on the whole training "
        f"split with data-order seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; {split} accuracy. Finding "
        "steps: the optimizer steps of levels 0..L-1, which produced the mask.",
        "",
        f"| level | weights remaining % | {split} acc % as the run trained it | {split} acc % on the full data | finding steps |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        full = f"{100 * r['mean']:.2f}" + (f" ± {100 * r['std']:.2f}" if r["std"] is not None else "")
        level_acc = "-" if r["level_accuracy"] is None else f"{100 * r['level_accuracy']:.2f}"
        lines.append(f"| {r['level']} | {r['weights_remaining_pct']:.2f} | {level_acc} | {full} | {r['finding_steps']:,} |")
    return "\n".join(lines) + "\n"
