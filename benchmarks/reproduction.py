"""Reproduction report, LeNet-300-100 on Fashion-MNIST (CPU): full-data LTR, PrAC-LTR, a random subset of
PrAC's sizes and Concrete Ticket Search, compared in one `prac report`; sanity checks of the LTR tickets at
~89% and ~97% sparsity (levels 10 and 16 at 20% per level); the stability barrier with and without rewinding;
every PrAC and random-subset ticket (mask + rewind weights) trained on the full data, as the PrAC paper measures them.

    # everything (20 epochs, 16 levels, seeds 0 and 1): 41 minutes measured with one torch thread on a 2-core CPU
    OMP_NUM_THREADS=1 python benchmarks/reproduction.py --output runs/repro
    # shortened: 8 epochs per level, about 18 minutes (estimate, see below)
    python benchmarks/reproduction.py --epochs 8 --output runs/repro_8ep
    # smoke test (under a minute): proves the pipeline, the numbers mean nothing
    python benchmarks/reproduction.py --epochs 1 --levels 2 --seeds 0 --sanity-seeds 1 --points 3 --cts-search-epochs 1 --output /tmp/repro_smoke

The 8-epoch estimate scales the measured full run by its ~700 epochs against ~1,600 (all runs, the sanity
retrainings, the stability copies and the CTS searches).

Schedule as benchmarks/prac_fashion_mnist.py (SGD lr 0.05 momentum 0.9, x0.1 at 1/2 and 3/4 of training,
batch 128, 20% global pruning, classifier ignored), rewinding at 15% of training (the end of epoch 3 at 20 epochs,
the PrAC reference code's rewind epoch). CTS searches one ticket per density LTR reaches at the sanity levels.
Every run is an ordinary run directory under --output, so an interrupted benchmark continues where it stopped.
Writes --output/REPORT.md (plus report/, and the first LTR run's sanity/ and stability/ folders).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prac_fashion_mnist import schedule  # noqa: I001  (benchmarks/ is on sys.path when run as a script)

from prac_plugin.analysis.compare import write_comparison
from prac_plugin.analysis.full_data import full_data_markdown, train_on_full_data
from prac_plugin.analysis.sanity import run_sanity, sanity_markdown
from prac_plugin.analysis.stability import run_stability, stability_text
from prac_plugin.engine.run_loop import run_recipe
from prac_plugin.config.recipes import apply_overrides, load_recipe_dict, parse_recipe
from prac_plugin.rundir.folder import RunDirectory

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "fashion_mnist_lenet_ltr.yaml"
STEPS_PER_EPOCH = 430  # 55,002 training images (5,000 held out for validation) at batch 128


def train(folder: Path, overrides: list[str], ticket: dict | None = None) -> Path:
    """Run (or continue) the Fashion-MNIST recipe with ``overrides`` (and a whole ticket section) into ``folder``."""
    raw = apply_overrides(load_recipe_dict(RECIPE), overrides)
    if ticket is not None:
        raw["ticket"] = ticket
    started = time.perf_counter()
    run_recipe(parse_recipe(raw), str(folder), log=lambda *_: None)
    print(f"[{time.strftime('%H:%M:%S')}] {folder.name}: {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def density(folder: Path, level: int) -> float:
    metrics = RunDirectory(folder).level_metrics(level)
    return metrics["remaining_weights"] / metrics["prunable_weights"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rewind", help="rewind point (default: 15%% of training, 3ep at 20 epochs)")
    parser.add_argument("--sanity-levels", type=int, nargs="+", default=[10, 16], help="levels past --levels are dropped")
    parser.add_argument("--sanity-seeds", type=int, default=2)
    parser.add_argument("--points", type=int, default=11, help="points along the stability interpolation")
    parser.add_argument("--cts-search-epochs", type=float, default=20)
    parser.add_argument("--output", type=Path, default=Path("runs/repro"))
    args = parser.parse_args()
    rewind = args.rewind or f"{round(0.15 * args.epochs * STEPS_PER_EPOCH)}it"
    base = schedule(args.epochs) + [f"ticket.rewind={rewind}", f"ticket.levels={args.levels}"]
    if args.epochs < 2:
        base.append("train.milestones=[]")  # no room for a decay
    levels = [level for level in args.sanity_levels if level <= args.levels] or [args.levels]

    runs, ltr = [], []
    for seed in args.seeds:
        overrides = base + [f"train.seed={seed}"]
        ltr.append(train(args.output / f"ltr_seed{seed}", overrides + ["data_selection.strategy=full"]))
        prac = train(args.output / f"prac_seed{seed}", overrides + ["data_selection.strategy=prac"])
        random = train(args.output / f"random_seed{seed}", overrides + [
            "data_selection.strategy=random", f"data_selection.sizes_from={prac}", f"data_selection.seed={seed}"])
        cts = train(args.output / f"cts_seed{seed}", overrides, {
            "strategy": "cts", "densities": [density(ltr[0], level) for level in levels], "ignore": ["fc"], "rewind": rewind,
            "search_epochs": args.cts_search_epochs, "search_batch_size": 512})
        runs += [ltr[-1], prac, random, cts]

    _, comparison = write_comparison([str(r) for r in runs], str(args.output / "report"))
    sections = [comparison]
    # the paper's measure of a ticket found on a subset: its mask and rewind weights trained on the full data
    for folder in runs:
        if folder.name.startswith(("prac_", "random_")):
            started = time.perf_counter()
            sections.append(full_data_markdown(train_on_full_data(folder)))
            print(f"[{time.strftime('%H:%M:%S')}] {folder.name} on the full data: {time.perf_counter() - started:.0f} s", flush=True)
    for level in levels:
        started = time.perf_counter()
        sections.append(sanity_markdown(run_sanity(ltr[0], level, args.sanity_seeds)))
        print(f"[{time.strftime('%H:%M:%S')}] sanity level {level}: {time.perf_counter() - started:.0f} s", flush=True)
        for start in ("rewind", "init"):
            sections.append(stability_text(run_stability(ltr[0], level, args.points, start=start)))
    text = "\n".join(sections)
    (args.output / "REPORT.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
