"""Which CTS setting closes the gap to LTR at 99.3% sparsity? LeNet-300-100 / Fashion-MNIST, CPU.

Builds on a finished `cts_vs_ltr_fashion_mnist.py` run (``--source``): every variant reuses that run's dense
level 0 and rewind point (copied, not retrained) and changes one CTS option; each searches and trains the
ticket at the density LTR reached at ``--level`` (22: 99.26% sparsity) ``--seeds`` times (search and
training seeds differ by level). LTR's accuracy and cumulative wall time to that level come from the same
source, so the wall-time ratio compares runs of one session.

    OMP_NUM_THREADS=1 python benchmarks/cts_ablation_fashion_mnist.py --source runs/bench_cts_fmnist_3ep \\
        --output runs/cts_ablation [--variants baseline short_search ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import yaml

from prac_plugin.engine.run_loop import run_recipe
from prac_plugin.config.recipes import parse_recipe
from prac_plugin.rundir.folder import RunDirectory

VARIANTS = {  # name -> (what changes, CTS options)
    "baseline": ("paper's defaults: reverse KL, T = 2/3, GradBalance 1.1x, 20 search epochs, at the rewind point", {}),
    "short_search": ("2.5 search epochs (1/8 of training, as 20 of 160 in the paper)", {"search_epochs": 2.5}),
    "long_search": ("60 search epochs", {"search_epochs": 60}),
    "reference_code": ("the authors' code's gate sigmoid(logit + noise / T)", {"concrete_form": "reference_code"}),
    "forward_kl": ("objective KL(dense ‖ sparse)", {"objective": "forward_kl"}),
    "cross_entropy": ("objective cross-entropy with the labels", {"objective": "cross_entropy"}),
    "anneal": ("temperature annealed 2/3 -> 0.1", {"final_temperature": 0.1}),
    "exact_budget": ("GradBalance target 1.0x instead of 1.1x", {"target_factor": 1.0}),
    "at_init": ("search at initialization (ticket still trained from init)", {"search_at": "init"}),
}
DENSE_FILES = ("init.safetensors", "rewind.safetensors", "rewind.json", "level_00")


def run_variant(source: Path, folder: Path, density: float, seeds: int, options: dict) -> list[dict]:
    raw = yaml.safe_load((source / "cts_seed0" / "recipe.yaml").read_text())
    raw["ticket"].update({"densities": [density] * seeds, **options})
    recipe = parse_recipe(raw)
    if not folder.exists():  # the dense level 0 and rewind point are the source run's, copied once
        RunDirectory.open(folder, recipe.to_dict()).create()
        for name in DENSE_FILES:
            (shutil.copytree if (source / "cts_seed0" / name).is_dir() else shutil.copy2)(source / "cts_seed0" / name, folder / name)
    run_recipe(recipe, str(folder), log=lambda *_: None)
    return json.loads((folder / "summary.json").read_text())["levels"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=Path("runs/bench_cts_fmnist_3ep"), help="a cts_vs_ltr_fashion_mnist.py output")
    parser.add_argument("--output", type=Path, default=Path("runs/cts_ablation"))
    parser.add_argument("--level", type=int, default=22, help="LTR level whose density every variant searches")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    ltr = json.loads((args.source / "ltr_seed0" / "summary.json").read_text())["levels"]
    target = ltr[args.level]
    density = target["remaining_weights"] / target["prunable_weights"]
    ltr_wall = sum(m["wall_time_s"] for m in ltr[: args.level + 1])
    print(f"LTR level {args.level}: {target['sparsity_pct']:.2f}% sparsity, {100 * target['test_acc']:.2f}% test acc, {ltr_wall:.0f} s to get there")
    print("| variant | change | acc % per seed | mean ± sd % | vs LTR pt | search steps | CTS / LTR wall |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.variants:
        change, options = VARIANTS[name]
        levels = run_variant(args.source, args.output / name, density, args.seeds, options)
        tickets = levels[1:]
        accs = [100 * t["test_acc"] for t in tickets]
        mean = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        wall = levels[0]["wall_time_s"] + statistics.mean(t["wall_time_s"] for t in tickets)  # dense + one search and training
        print(f"| {name} | {change} | {' / '.join(f'{a:.2f}' for a in accs)} | {mean:.2f} ± {sd:.2f} | "
              f"{mean - 100 * target['test_acc']:+.2f} | {tickets[0]['cts_search_steps']} | {wall / ltr_wall:.3f} |", flush=True)


if __name__ == "__main__":
    main()
