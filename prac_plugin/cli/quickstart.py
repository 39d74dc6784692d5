"""``prac quickstart``: what the project is for, in about a minute on a CPU, offline.

Full-data lottery ticket rewinding and PrAC-LTR on scikit-learn's digits (embedded) with LeNet-300-100 and one
schedule, and the control PrAC must beat: random subsets of PrAC's sizes with the same budget (a saving random
subsets give too is no credit to PrAC). Then three of each subset run's tickets trained on the full data, the PrAC
paper's measure of a ticket found on a subset; one comparison (table and plot, `prac report`'s) and the
optimizer steps saved at each sparsity.

The command (`add_parser`, `run`) and its logic (`quickstart`) both live here; the engine is imported when the
quick start runs, not when the command line is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

from ..config.starter import quickstart_recipe

TICKET_LEVELS = (8, 15, 20)  # 16.8%, 3.5% and 1.2% of the prunable weights left


def add_parser(commands) -> None:
    parser = commands.add_parser("quickstart", help="PrAC-LTR next to full-data LTR on the embedded digits, with the steps PrAC "
                                 "saved (about a minute on a CPU)")
    parser.add_argument("--output", "-o", default="runs/quickstart", help="folder for both runs and the report (default: runs/quickstart)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quickstart(args.output)
    return 0


def _recipe(selection: dict, levels: int, epochs: int) -> dict:
    recipe = quickstart_recipe()
    recipe["ticket"]["levels"], recipe["train"]["epochs"] = levels, epochs
    recipe["data_selection"] = selection
    recipe["run"] = {"tracker": "none"}
    return recipe


def quickstart(output: str | Path = "runs/quickstart", levels: int = 20, epochs: int = 15,
               tickets: Sequence[int] = TICKET_LEVELS, log: Callable[[str], None] = print) -> list[dict]:
    """Run (or continue) the three searches into ``output``/{ltr,prac,random}, train the subset runs' tickets of
    ``tickets`` on the full data, write ``output``/report and return one row per ticket level: accuracy and steps
    of each."""
    from ..analysis.compare import write_comparison
    from ..analysis.full_data import train_on_full_data
    from ..config.recipes import parse_recipe
    from ..engine.run_loop import run_recipe
    from ..strategies.prac.options import quickstart_runs

    output = Path(output)
    quiet = lambda *_: None  # noqa: E731  (each run's own table: the comparison below says it all)
    (dense, full_data), (subsets, prac), (controls, control) = quickstart_runs(output)
    log(f"1/4 full-data lottery ticket rewinding: {levels + 1} levels on scikit-learn's digits")
    ltr = run_recipe(parse_recipe(_recipe(full_data, levels, epochs)), str(output / dense), log=quiet)
    log("2/4 PrAC-LTR: the same, each level trained and pruned on its PrAC set")
    run_recipe(parse_recipe(_recipe(prac, levels, epochs)), str(output / subsets), log=quiet)
    log("3/4 the control: random subsets of the PrAC sets' sizes, the same budget")
    run_recipe(parse_recipe(_recipe(control, levels, epochs)), str(output / controls), log=quiet)
    log(f"4/4 both subset runs' tickets of levels {', '.join(map(str, tickets))} trained on the full data")
    full = {r["level"]: r for r in train_on_full_data(output / subsets, list(tickets))}
    random_full = {r["level"]: r for r in train_on_full_data(output / controls, list(tickets))}
    write_comparison([str(output / name) for name in (dense, subsets, controls)], str(output / "report"))
    rows = []
    for level in tickets:
        ltr_steps = sum(m["optimizer_steps"] for m in ltr[: level + 1])
        prac_steps = full[level]["finding_steps"] + full[level]["training_steps"]
        rows.append({"level": level, "weights_remaining_pct": ltr[level]["weights_remaining_pct"],
                     "ltr_acc": ltr[level]["test_acc"], "ltr_steps": ltr_steps, "prac_acc": full[level]["mean"],
                     "prac_steps": prac_steps, "steps_saved_pct": 100 * (1 - prac_steps / ltr_steps),
                     "random_acc": random_full[level]["mean"],
                     "random_steps": random_full[level]["finding_steps"] + random_full[level]["training_steps"]})
    log("\n" + quickstart_table(rows))
    log(f"The three runs, every level (table and plot): {output / 'report'}/report.{{md,png}}")
    return rows


def quickstart_table(rows: list[dict]) -> str:
    lines = ["| weights remaining % | full-data LTR: test acc % | its optimizer steps | PrAC ticket on the full data: test acc % "
             "| its optimizer steps | steps saved | random-subset ticket on the full data: test acc % | its optimizer steps |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['weights_remaining_pct']:.2f} | {100 * r['ltr_acc']:.2f} | {r['ltr_steps']:,} | {100 * r['prac_acc']:.2f} | "
              f"{r['prac_steps']:,} | {r['steps_saved_pct']:.1f}% | {100 * r['random_acc']:.2f} | {r['random_steps']:,} |" for r in rows]
    return "\n".join(lines) + ("\n\nPrAC's steps: the levels that found the mask on PrAC sets, plus training the ticket on "
                               "the full data from the rewind point. The random subsets have the PrAC sets' sizes and "
                               "budget: a saving they give too is the subsets' size, not PrAC's choice of examples.\n")
