"""Full-data LTR vs PrAC-LTR vs a random subset of PrAC's sizes, LeNet-300-100 on Fashion-MNIST, CPU.

Schedule (default shortened from open_lth's 40 epochs to fit a 2-core CPU; --epochs changes it): 20 epochs,
batch 128, SGD lr 0.05 momentum 0.9, x0.1 at 1/2 and 3/4 of training, 20% global pruning with the classifier
ignored, rewinding to the end of epoch 3 (as the PrAC reference code does), 10 levels (89.3% sparsity).
Runs are ordinary run directories under --output, so an interrupted benchmark continues where it stopped.

    python benchmarks/prac_fashion_mnist.py --seeds 0 1 --output runs/bench_prac_fmnist
    python benchmarks/prac_fashion_mnist.py --seeds 0 --epochs 40 --output runs/bench_prac_fmnist_40ep
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from prac_plugin.config.recipes import apply_overrides, load_recipe_dict, parse_recipe
from prac_plugin.engine.run_loop import run_recipe

ROOT = Path(__file__).resolve().parent.parent
def schedule(epochs: int) -> list[str]:
    """SGD lr 0.05 momentum 0.9, x0.1 at 1/2 and 3/4 of training, rewinding to the end of epoch 3."""
    return [
        f"train.epochs={epochs}", "train.momentum=0.9", "train.lr=0.05", "train.schedule=step",
        f"train.milestones=[{epochs // 2},{3 * epochs // 4}]", "ticket.rewind=3ep", "run.tracker=none",
    ]


def run(name: str, seed: int, levels: int, output: Path, selection: list[str], epochs: int = 20) -> Path:
    raw = load_recipe_dict(ROOT / "recipes" / "fashion_mnist_lenet_ltr.yaml")
    raw = apply_overrides(raw, schedule(epochs) + [f"ticket.levels={levels}", f"train.seed={seed}"] + selection)
    folder = output / f"{name}_seed{seed}"
    run_recipe(parse_recipe(raw), str(folder), log=lambda *_: None)
    return folder


def levels_of(folder: Path) -> list[dict]:
    return json.loads((folder / "summary.json").read_text())["levels"]


def mean_std(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("runs/bench_prac_fmnist"))
    args = parser.parse_args()
    runs = {"full": [], "prac": [], "random": []}
    for seed in args.seeds:
        runs["full"].append(run("full", seed, args.levels, args.output, ["data_selection.strategy=full"], args.epochs))
        prac = run("prac", seed, args.levels, args.output, ["data_selection.strategy=prac"], args.epochs)
        runs["prac"].append(prac)
        runs["random"].append(run("random", seed, args.levels, args.output,
                                  ["data_selection.strategy=random", f"data_selection.sizes_from={prac}", f"data_selection.seed={seed}"], args.epochs))
    table = {name: [levels_of(f) for f in folders] for name, folders in runs.items()}
    lines = [
        f"Seeds {args.seeds}; test accuracy % as mean ± std over seeds; steps and wall time summed over levels 0..L, mean over seeds.",
        "",
        "| level | weights % | full LTR acc | PrAC acc | random acc | PrAC - full | full steps | PrAC steps | random steps | PrAC saved | full s | PrAC s | PrAC set |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in range(args.levels + 1):
        acc = {n: [runs_[level]["test_acc"] for runs_ in table[n]] for n in table}
        cum = {n: statistics.mean(sum(l["optimizer_steps"] for l in runs_[: level + 1]) for runs_ in table[n]) for n in table}
        wall = {n: statistics.mean(sum(l["wall_time_s"] for l in runs_[: level + 1]) for runs_ in table[n]) for n in table}
        gap = 100 * (statistics.mean(acc["prac"]) - statistics.mean(acc["full"]))
        set_size = statistics.mean(runs_[level]["prac_set_size"] for runs_ in table["prac"])
        lines.append(
            f"| {level} | {table['full'][0][level]['weights_remaining_pct']:.1f} | {mean_std(acc['full'])} | {mean_std(acc['prac'])} | "
            f"{mean_std(acc['random'])} | {gap:+.2f} | {cum['full']:.0f} | {cum['prac']:.0f} | {cum['random']:.0f} | "
            f"{100 * (1 - cum['prac'] / cum['full']):.1f}% | {wall['full']:.0f} | {wall['prac']:.0f} | {set_size:.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    (args.output / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
