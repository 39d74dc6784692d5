"""CTS vs LTR at extreme sparsity, LeNet-300-100 on Fashion-MNIST, CPU, one seed.

Both use the same schedule (20 epochs, batch 128, SGD lr 0.05 momentum 0.9, x0.1 at epochs 10 and 15),
the same prunable set (classifier ignored) and the same rewind point (1ep, 5% of training, as CTS's
epoch 9 of 160 is 5.6%). LTR prunes 20% per level for 24 levels; CTS searches one ticket for each of the
densities LTR reaches at levels 19, 22 and 24 (98.56%, 99.26%, 99.53% sparsity), 20 search epochs at
batch 512. Compute to get a ticket: LTR needs every level up to it; CTS needs the dense level 0, the
search and the ticket's own training.

    python benchmarks/cts_vs_ltr_fashion_mnist.py --output runs/bench_cts_fmnist
    python benchmarks/cts_vs_ltr_fashion_mnist.py --rewind 3ep --output runs/bench_cts_fmnist_3ep   # 15% of training
    # search for 1/8 of the training epochs, as the paper's 20 search epochs against ResNet-20's 160 (LTR is reused)
    python benchmarks/cts_vs_ltr_fashion_mnist.py --rewind 3ep --search-epochs 2.5 --output runs/bench_cts_fmnist_3ep
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prac_plugin.engine.run_loop import run_recipe
from prac_plugin.config.recipes import apply_overrides, load_recipe_dict, parse_recipe

ROOT = Path(__file__).resolve().parent.parent
SCHEDULE = ["train.epochs=20", "train.momentum=0.9", "train.lr=0.05", "train.schedule=step", "train.milestones=[10,15]", "run.tracker=none"]
LEVELS = (19, 22, 24)


def run(folder: Path, recipe: Path, overrides: list[str], ticket: dict) -> list[dict]:
    raw = apply_overrides(load_recipe_dict(recipe), overrides)
    raw["ticket"] = ticket
    run_recipe(parse_recipe(raw), str(folder), log=lambda *_: None)
    return json.loads((folder / "summary.json").read_text())["levels"]


def compare(recipe: Path, overrides: list[str], ignore: list[str], output: Path, seed: int, rewind: str, search_epochs: float) -> None:
    """Run (or reuse) LTR to the deepest of LEVELS and CTS at LTR's densities there; print the table."""
    overrides = overrides + [f"train.seed={seed}"]
    ltr = run(output / f"ltr_seed{seed}", recipe, overrides,
              {"strategy": "ltr", "levels": max(LEVELS), "fraction": 0.2, "ignore": ignore, "rewind": rewind})
    densities = [ltr[level]["remaining_weights"] / ltr[level]["prunable_weights"] for level in LEVELS]
    cts_folder = f"cts_seed{seed}" + ("" if search_epochs == 20 else f"_search{search_epochs:g}ep")
    cts = run(output / cts_folder, recipe, overrides,
              {"strategy": "cts", "densities": densities, "ignore": ignore, "rewind": rewind, "search_epochs": search_epochs, "search_batch_size": 512})
    print(f"dense (level 0): test acc {100 * ltr[0]['test_acc']:.2f}%")
    print("| sparsity % | LTR acc % | CTS acc % | LTR steps | CTS train steps | CTS search steps (batch 512) | LTR wall s | CTS wall s | CTS / LTR wall |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, level in enumerate(LEVELS):
        l_steps = sum(m["optimizer_steps"] for m in ltr[: level + 1])
        l_wall = sum(m["wall_time_s"] for m in ltr[: level + 1])
        ticket = cts[i + 1]
        c_steps = cts[0]["optimizer_steps"] + ticket["optimizer_steps"]
        c_wall = cts[0]["wall_time_s"] + ticket["wall_time_s"]  # the ticket's level includes its search
        print(f"| {ltr[level]['sparsity_pct']:.2f} | {100 * ltr[level]['test_acc']:.2f} | {100 * ticket['test_acc']:.2f} | {l_steps} | {c_steps} | "
              f"{ticket['cts_search_steps']} | {l_wall:.0f} | {c_wall:.0f} | {c_wall / l_wall:.3f} |")


def arguments(output: str, rewind: str) -> argparse.ArgumentParser:
    """The options both CTS-vs-LTR benchmarks take."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, default=Path(output))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rewind", default=rewind, help="rewind point of both methods (CTS searches there)")
    parser.add_argument("--search-epochs", type=float, default=20.0, help="CTS search length in epochs at batch 512")
    return parser


def main() -> None:
    args = arguments("runs/bench_cts_fmnist", "1ep").parse_args()
    compare(ROOT / "recipes" / "fashion_mnist_lenet_ltr.yaml", SCHEDULE, ["fc"], args.output, args.seed, args.rewind, args.search_epochs)


if __name__ == "__main__":
    main()
