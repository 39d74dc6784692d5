"""Dense vs structured ticket: MACs, parameters, accuracy and CPU latency/throughput, cifar_resnet20 on Fashion-MNIST.

The structured strategy prunes channels level by level (rewinding the kept channels to the rewind point and
retraining); every level is exported with `prac export`'s code, which times the dense model and the ticket
alternately in one process at batch 1 and 64 (median of many repeats): on a shared CPU the load changes
during a run, and alternating keeps the ratio fair. Training is kept short so that the whole benchmark runs
in about 15 minutes on a 2-core CPU: a subset of the training split and few epochs (see the arguments).

    python benchmarks/structured_latency.py --output runs/bench_structured
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from prac_plugin.engine.run_loop import run_recipe
from prac_plugin.config.recipes import parse_recipe
from prac_plugin.strategies.structured import export_ticket


def recipe(args: argparse.Namespace) -> dict:
    return {
        "model": {"name": "cifar_resnet20"},
        "data": {
            "path": "builtin:fashion_mnist", "data_dir": "/usr/share/datasets/fashion-mnist",
            "train_split": f"train[:{args.train_examples}]", "val_fraction": 0.0,
        },
        "train": {
            "epochs": args.epochs, "batch_size": 128, "eval_batch_size": 1000, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
            "weight_decay": 1e-4, "schedule": "cosine", "seed": args.seed,
        },
        "ticket": {
            "strategy": "structured", "levels": args.levels, "fraction": args.fraction, "scope": args.scope, "rewind": "1ep",
            "round_to": args.round_to,
        },
        "data_selection": {"strategy": "full"},
        "run": {"tracker": "none"},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, default=Path("runs/bench_structured"))
    parser.add_argument("--train-examples", type=int, default=24000, help="first N of the 60,000 training images")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--scope", default="layer", choices=["global", "layer"])
    parser.add_argument("--repeats", type=int, default=50, help="timed repeats per model and batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round-to", type=int, default=None, help="ticket.round_to: keep channel counts multiples of this")
    args = parser.parse_args()
    started = time.perf_counter()
    run_dir = args.output / "run"
    run_recipe(parse_recipe(recipe(args)), str(run_dir), log=lambda *_: None)
    levels = json.loads((run_dir / "summary.json").read_text())["levels"]
    latency = {level: export_ticket(run_dir, level, args.output / f"ticket_level_{level:02d}", (1, 64), args.repeats)[1]["latency"]
               for level in range(1, args.levels + 1)}
    dense = levels[0]
    keys = ("level", "test_acc", "macs", "params", "macs_remaining_pct", "params_remaining_pct", "wall_time_s")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads(),
              "levels": [{**{k: m[k] for k in keys}, "latency": latency.get(m["level"])} for m in levels],
              "total_wall_s": time.perf_counter() - started}
    (args.output / "result.json").write_text(json.dumps(result, indent=2) + "\n")

    print(f"cifar_resnet20 on Fashion-MNIST (first {args.train_examples} training images, {args.epochs} epochs), "
          f"{args.levels} levels of {args.fraction:.0%} of the channels ({args.scope}); CPU, {torch.get_num_threads()} threads")
    print("| level | test acc % | vs dense (points) | MACs | fewer MACs | params | fewer params | batch 1 ms (dense) | speed-up b1 "
          "| BN folded: batch 1 ms (dense) | speed-up b1 | batch 64 ms (dense) | speed-up b64 | BN folded: speed-up b64 "
          "| images/s b64 (dense) | train wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in levels:
        row = f"| {m['level']} | {100 * m['test_acc']:.2f} | {100 * (m['test_acc'] - dense['test_acc']):+.2f} | {m['macs']:,} | " \
              f"{dense['macs'] / m['macs']:.2f}x | {m['params']:,} | {dense['params'] / m['params']:.2f}x |"
        if m["level"] in latency:
            b1, b64 = latency[m["level"]]["batches"]["1"], latency[m["level"]]["batches"]["64"]
            f1, f64 = latency[m["level"]]["folded"]["batches"]["1"], latency[m["level"]]["folded"]["batches"]["64"]
            row += f" {b1['ticket_ms']:.2f} ({b1['dense_ms']:.2f}) | {b1['speedup']:.2f}x | {f1['ticket_ms']:.2f} ({f1['dense_ms']:.2f}) | " \
                   f"{f1['speedup']:.2f}x | {b64['ticket_ms']:.2f} ({b64['dense_ms']:.2f}) | {b64['speedup']:.2f}x | {f64['speedup']:.2f}x | " \
                   f"{b64['ticket_images_per_s']:.0f} ({b64['dense_images_per_s']:.0f}) |"
        else:
            row += " - | - | - | - | - | - | - | - |"
        print(row + f" {m['wall_time_s']:.0f} |")
    print(f"(interleaved dense/ticket timing in one process, median of {args.repeats} repeats; total {result['total_wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
