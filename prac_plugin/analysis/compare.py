"""One table and one figure comparing runs: accuracy against weights remaining and against training iterations.

Runs whose recipes are equal except for their seeds (``train.seed``, ``data_selection.seed``) and the PrAC run
a random baseline copies its sizes from (``data_selection.sizes_from``, one per seed) form a group, reported as
mean ± sample std over its runs and labelled by its strategies ("ltr", "ltr + prac", "cts").
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..rundir.files import atomic_write_json, atomic_write_text
from ..rundir.report import pyplot, run_summary, save_figure
from ..rundir.folder import FORMAT_VERSION, RESULT_AFFECTING_SECTIONS
from .. import registry
from ..strategies.base import TicketTraits
from .full_data import read_result as full_data_result
from ..rundir.completed import completed_run

SEED_KEYS = (("train", "seed"), ("data_selection", "seed"), ("data_selection", "sizes_from"))
CSV_COLUMNS = [
    "strategy", "level", "weights_remaining_pct", "runs", "test_acc_mean", "test_acc_std", "val_acc_mean", "val_acc_std",
    "cumulative_steps_mean", "cumulative_wall_time_s_mean", "full_data_acc_mean", "full_data_acc_std", "full_data_steps_mean",
    "full_data_wall_time_s_mean",
]

@dataclass
class Group:
    """Runs of one recipe up to seeds."""

    label: str
    key: dict
    paths: list[str] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)


def recipe_key(recipe: dict) -> dict:
    """The recipe's result-affecting sections without the seed keys: equal keys, same group."""
    key = {section: copy.deepcopy(recipe.get(section)) for section in RESULT_AFFECTING_SECTIONS}
    for section, name in SEED_KEYS:
        if isinstance(key.get(section), dict):
            key[section].pop(name, None)
    return key


def strategy_label(recipe: dict) -> str:
    """The ticket strategy, and the data selection unless it is the default one (which trains on everything)."""
    ticket = (recipe.get("ticket") or {}).get("strategy", "?")
    default = registry.default("data_selection")
    selection = (recipe.get("data_selection") or {}).get("strategy", default)
    return ticket if selection == default else f"{ticket} + {selection}"


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, name) if isinstance(v, dict) else {name: v})
    return out


def _disambiguate(groups: list[Group]) -> None:
    """Groups with the same strategies but different recipes get the recipe keys they differ in."""
    by_label = defaultdict(list)
    for group in groups:
        by_label[group.label].append(group)
    for same in by_label.values():
        if len(same) < 2:
            continue
        flats = [_flat(g.key) for g in same]
        names = list(dict.fromkeys(k for f in flats for k in f))  # recipe order: model.name before model.kwargs
        differing = [k for k in names if len({repr(f.get(k)) for f in flats}) > 1]
        for group, flat in zip(same, flats):
            group.label += " (" + ", ".join(f"{k}={flat.get(k)}" for k in differing[:2]) + ")"


def group_runs(paths: list[str]) -> list[Group]:
    """Read and group the runs, in the order their first run was given."""
    groups: dict[str, Group] = {}
    for path in paths:
        run, _ = completed_run(path)
        summary = run_summary(run)
        key = recipe_key(summary["recipe"])
        group = groups.setdefault(json.dumps(key, sort_keys=True), Group(strategy_label(summary["recipe"]), key))
        group.paths.append(str(path))
        group.summaries.append(summary)
    result = list(groups.values())
    _disambiguate(result)
    return result


def cost_levels(strategy: str, level: int) -> list[int]:
    """The levels whose training a level's ticket needs, as its strategy's traits count them (`TicketTraits.cost_levels`)."""
    traits = registry.spec("ticket", strategy).traits if strategy else TicketTraits()
    return traits.cost_levels(level)


def _mean_std(values: list) -> tuple[Optional[float], Optional[float]]:
    if not values or any(v is None for v in values):
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def group_rows(group: Group) -> list[dict]:
    """One row per level: means (and sample std) over the group's runs that completed the level. Where every run
    has the level's ticket trained on the full data (`prac retrain`), also that accuracy, over runs and seeds, and
    its cost: the steps that found the mask plus the full-data training."""
    strategy = (group.key.get("ticket") or {}).get("strategy", "")
    rows = []
    for level in range(max(len(s["levels"]) for s in group.summaries)):
        runs = [s["levels"] for s in group.summaries if len(s["levels"]) > level]
        full = [full_data_result(p, level) for p, s in zip(group.paths, group.summaries) if len(s["levels"]) > level]
        needed = cost_levels(strategy, level)
        row = {"strategy": group.label, "level": level, "runs": len(runs),
               "weights_remaining_pct": statistics.mean(r[level]["weights_remaining_pct"] for r in runs)}
        for key in ("test_acc", "val_acc"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r[level].get(key) for r in runs])
        row["cumulative_steps_mean"] = statistics.mean(sum(r[i]["optimizer_steps"] for i in needed) for r in runs)
        row["cumulative_wall_time_s_mean"] = statistics.mean(sum(r[i]["wall_time_s"] for i in needed) for r in runs)
        complete = level > 0 and all(f is not None for f in full)
        row["full_data_acc_mean"], row["full_data_acc_std"] = _mean_std([a for f in full for a in f["accuracy"]] if complete else [])
        row["full_data_steps_mean"] = statistics.mean(f["finding_steps"] + f["training_steps"] for f in full) if complete else None
        timed = complete and all("training_wall_time_s" in f for f in full)  # files of older versions have no times
        row["full_data_wall_time_s_mean"] = statistics.mean(
            f["finding_wall_time_s"] + f["training_wall_time_s"] for f in full) if timed else None
        rows.append(row)
    return rows


def _acc(row: dict, key: str) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def comparison_markdown(groups: list[Group], rows: list[dict]) -> str:
    lines = [
        "# Comparison of runs", "",
        ("Accuracy in %, mean ± sample std over the runs of a group (runs whose recipes differ only in their seeds); "
         "optimizer steps and wall time summed over the levels a ticket needs (all levels up to it; level 0 and itself where the "
         "strategy's levels are independent, as CTS's are), "
         "mean over runs."),
        "",
        "| strategy | level | weights remaining % | runs | test acc % | val acc % | cumulative optimizer steps | cumulative wall time s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['strategy']} | {r['level']} | {r['weights_remaining_pct']:.2f} | {r['runs']} | {_acc(r, 'test_acc')} | "
              f"{_acc(r, 'val_acc')} | {r['cumulative_steps_mean']:.0f} | {r['cumulative_wall_time_s_mean']:.1f} |" for r in rows]
    full = [r for r in rows if r["full_data_acc_mean"] is not None]
    if full:
        lines += [
            "", "Tickets trained on the full data (`prac retrain`: the level's mask and the rewind weights trained on the whole "
            "training split to the end; mean ± std over runs and seeds; steps and wall time: the levels that found the mask plus "
            "that training):", "",
            "| strategy | level | weights remaining % | ticket on the full data: acc % | optimizer steps | wall time s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [f"| {r['strategy']} | {r['level']} | {r['weights_remaining_pct']:.2f} | {_acc(r, 'full_data_acc')} | "
                  f"{r['full_data_steps_mean']:.0f} | "
                  + ("-" if r["full_data_wall_time_s_mean"] is None else f"{r['full_data_wall_time_s_mean']:.1f}") + " |" for r in full]
    lines += ["", "Runs:", ""] + [f"- {g.label}: {', '.join(g.paths)}" for g in groups]
    return "\n".join(lines) + "\n"


def plot_comparison(groups: list[Group], rows: list[dict], path: Path) -> None:
    """Test accuracy against weights remaining (log axis) and against cumulative optimizer steps, one line per group."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4))
    for group in groups:
        mine = [r for r in rows if r["strategy"] == group.label and r["test_acc_mean"] is not None]
        y = [100 * r["test_acc_mean"] for r in mine]
        err = [100 * (r["test_acc_std"] or 0.0) for r in mine]
        full = [r for r in mine if r["full_data_acc_mean"] is not None]
        label = f"{group.label}, as trained on its subsets" if full else group.label  # not the ticket's accuracy then
        for ax, x in ((left, [r["weights_remaining_pct"] for r in mine]), (right, [r["cumulative_steps_mean"] for r in mine])):
            color = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)[0].get_color()
        if full:  # the same tickets trained on the full data: dashed, at the cost of finding plus that training
            y = [100 * r["full_data_acc_mean"] for r in full]
            err = [100 * (r["full_data_acc_std"] or 0.0) for r in full]
            for ax, x in ((left, [r["weights_remaining_pct"] for r in full]), (right, [r["full_data_steps_mean"] for r in full])):
                ax.errorbar(x, y, yerr=err, marker="s", linestyle="--", capsize=3, color=color,
                            label=f"{group.label}, ticket on the full data")
    left.set_xscale("log")
    left.invert_xaxis()
    left.set_xlabel("weights remaining (%)")
    right.set_xlabel("cumulative optimizer steps")
    for ax in (left, right):
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize="small", loc="best")
    save_figure(fig, path)


def default_output(paths: list[str]) -> Path:
    """``report/`` in the runs' common parent folder."""
    return Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths])) / "report"


def write_comparison(paths: list[str], output: Optional[str] = None) -> tuple[list[dict], str]:
    """Write report.{md,csv,json,png} comparing the runs into ``output``; return the rows and the Markdown."""
    groups = group_runs(paths)
    rows = [row for group in groups for row in group_rows(group)]
    folder = Path(output) if output else default_output(paths)
    text = comparison_markdown(groups, rows)
    atomic_write_text(folder / "report.md", text)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "report.csv", buffer.getvalue())
    atomic_write_json(folder / "report.json", {"format_version": FORMAT_VERSION, "groups": [{"label": g.label, "runs": g.paths} for g in groups], "rows": rows})
    plot_comparison(groups, rows, folder / "report.png")
    return rows, text + f"\nWritten to {folder}/report.{{md,csv,json,png}}\n"
