"""Summaries of a run: the per-level table (printed, Markdown, CSV, JSON) and the accuracy plot.

The table's columns are the engine's (`COLUMNS`) plus those the run's strategies declare (``summary_columns``,
shown when the levels record them), and the lines under it the strategies' ``summary_note``s.
"""

from __future__ import annotations

import csv
import io
from typing import Optional

from .files import atomic_path, atomic_write_json, atomic_write_text
from .. import registry
from ..errors import PracError
from .folder import FORMAT_VERSION, RunDirectory, read_json

COLUMNS = [
    ("level", "level", "{}"),
    ("weights_remaining_pct", "weights remaining %", "{:.2f}"),
    ("val_acc", "val acc", "{:.4f}"),
    ("test_acc", "test acc", "{:.4f}"),
    ("train_examples", "train examples", "{}"),
    ("optimizer_steps", "optimizer steps", "{}"),
    ("full_data_steps", "full-data steps", "{}"),
    ("wall_time_s", "wall time s", "{:.1f}"),
]
SUMMARY_ORDER = ("data_selection", "ticket")  # whose columns and notes come first


def _declarations(recipe: dict) -> list:
    """The declarations of the run's strategies (data selection first); a strategy not installed here adds nothing."""
    found = []
    for kind in SUMMARY_ORDER:
        section = recipe.get(kind)
        name = section.get("strategy") if isinstance(section, dict) else None
        try:
            found += [registry.spec(kind, name)] if isinstance(name, str) else []
        except PracError:
            continue
    return found


def strategy_columns(recipe: dict) -> list[tuple[str, str, str]]:
    """The columns the run's strategies add to its summary, whether or not its levels recorded them yet."""
    return [tuple(column) for spec in _declarations(recipe) for column in getattr(spec, "summary_columns", ())]


def level_row(metrics: dict, columns: Optional[list[tuple[str, str, str]]] = None) -> dict:
    return {key: metrics.get(key) for key, _, _ in COLUMNS + (columns or [])}


def savings(totals: dict) -> float | None:
    """Fraction of full-data optimizer steps saved, or None when unknown."""
    full = totals.get("full_data_steps")
    return 1.0 - totals["optimizer_steps"] / full if full else None


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def markdown_table(rows: list[dict], extra_columns: Optional[list[tuple[str, str, str]]] = None) -> str:
    columns = COLUMNS + (extra_columns or [])
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key), pattern) for key, _, pattern in columns) + " |")
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures are written to files, no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Write ``fig`` as a PNG atomically and free it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    pyplot().close(fig)


def plot_curve(rows: list[dict], path, title: str) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    x = [r["weights_remaining_pct"] for r in rows]
    for key, label in (("test_acc", "test"), ("val_acc", "validation")):
        y = [r.get(key) for r in rows]
        if any(v is not None for v in y):
            ax.plot(x, [float("nan") if v is None else 100 * v for v in y], marker="o", label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def layer_table(layers: list[dict]) -> str:
    """Per-layer density of one level's mask, as Markdown."""
    lines = ["| layer | weights | remaining | density % |", "|---|---:|---:|---:|"]
    lines += [f"| {l['name']} | {l['total']} | {l['remaining']} | {100 * l['density']:.2f} |" for l in layers]
    return "\n".join(lines) + "\n"


def notes(recipe: dict, metrics: list[dict]) -> str:
    """The lines the run's strategies add under its summary, from the last level's metrics."""
    if not metrics:
        return ""
    return "".join(note(metrics[-1]) for spec in _declarations(recipe) if (note := getattr(spec, "summary_note", None)))


def totals_line(totals: dict) -> str:
    line = f"Total: {totals['optimizer_steps']} optimizer steps ({totals['full_data_steps']} with full data"
    if totals.get("savings") is not None:
        line += f", {100 * totals['savings']:.1f}% saved"
    line += f"), {totals['examples_seen']} examples, {totals['wall_time_s']:.1f} s"
    if totals.get("selection_forward_passes"):
        line += f"; selection: {totals['selection_forward_passes']} extra forward passes"
    return line


def run_summary(run: RunDirectory) -> dict:
    """What summary.json holds: the recipe, every completed level's metrics and the totals over levels."""
    metrics = [run.level_metrics(level) for level in run.completed_levels()]
    totals = {
        "optimizer_steps": sum(m["optimizer_steps"] for m in metrics),  # required fields: checked by level_metrics
        "full_data_steps": sum(m["full_data_steps"] for m in metrics),
        "selection_forward_passes": sum(m.get("selection_forward_passes", 0) for m in metrics),  # data selection only
        "examples_seen": sum(m["examples_seen"] for m in metrics),
        "wall_time_s": sum(m["wall_time_s"] for m in metrics),
    }
    totals["savings"] = savings(totals)
    return {"format_version": FORMAT_VERSION, "recipe": run.recipe(), "levels": metrics, "totals": totals}


def _extra_columns(recipe: dict, metrics: list[dict]) -> list[tuple[str, str, str]]:
    """The run's strategies' columns, each strategy's shown when some level recorded one of them."""
    shown = []
    for spec in _declarations(recipe):
        columns = [tuple(column) for column in getattr(spec, "summary_columns", ())]
        if any(m.get(key) is not None for m in metrics for key, _, _ in columns):
            shown += columns
    return shown


def summary_table(summary: dict) -> str:
    """The printed form of a `run_summary`: the per-level table, the totals and the strategies' notes."""
    metrics, recipe = summary["levels"], summary["recipe"]
    table = markdown_table([level_row(m, strategy_columns(recipe)) for m in metrics], _extra_columns(recipe, metrics))
    return table + "\n" + totals_line(summary["totals"]) + "\n" + notes(recipe, metrics)


def _check_not_shorter(run: RunDirectory, levels: int) -> None:
    """A summary is never replaced by one with fewer levels: the folder lost a level the old summary had."""
    path = run.summary_path(".json")
    if not path.is_file():
        return
    try:
        before = len(read_json(path, "summary")["levels"])
    except (PracError, KeyError, TypeError):
        return  # a damaged summary holds nothing to keep: it is rebuilt
    if before > levels:
        raise PracError(f"{str(path)!r} lists {before} levels, the run folder now has {levels} complete: "
                        f"{run.relative(run.metrics_path(levels))} was deleted; restore it (or run the recipe again to "
                        "recompute the level). The summary was left as it was")


def write_summary(run: RunDirectory, refuse_shorter: bool = False) -> tuple[list[dict], str]:
    """Rebuild summary.{json,csv,md} and curve.png from the level metrics; return rows and the table. With
    ``refuse_shorter`` (`prac report`; a finished `prac run` has every level) a summary with more levels stays."""
    summary = run_summary(run)
    metrics, recipe, totals = summary["levels"], summary["recipe"], summary["totals"]
    if refuse_shorter:
        _check_not_shorter(run, len(metrics))
    rows = [level_row(m, strategy_columns(recipe)) for m in metrics]
    extra = _extra_columns(recipe, metrics)
    table = markdown_table(rows, extra)
    atomic_write_json(run.summary_path(".json"), summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[key for key, _, _ in COLUMNS + extra], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run.summary_path(".csv"), buffer.getvalue())
    model_name = recipe.get("model", {}).get("name", "?")
    atomic_write_text(
        run.summary_path(".md"),
        f"# {model_name} on {recipe.get('data', {}).get('path', '?')}\n\n{table}\n"
        f"{totals_line(totals)}\n"
        + (f"\n## Per-layer density at level {metrics[-1]['level']}\n\n{layer_table(metrics[-1]['layers'])}" if metrics and metrics[-1].get("layers") else "")
        + notes(recipe, metrics),
    )
    if rows:
        plot_curve(rows, run.curve_path, f"{model_name}: {recipe.get('ticket', {}).get('strategy', '')}")
    return rows, summary_table(summary)
