"""Scale-out figures (issue: Accelerate): training throughput of one level with 1 and 2 processes, the cost
of per-epoch checkpoints, and the device-resident data path against the DataLoader path.

Each configuration is a real ``prac run`` (level 0 only) in a subprocess, through ``accelerate launch`` for two
processes; throughput is training examples per second of training time (``train_time_s`` in the level's
metrics: the training loop only, no data loading or evaluation). Runs alternate between configurations and
the median of ``--repeats`` is reported, with ratios against the single-process, no-checkpoint baseline.

    python benchmarks/scale_out.py                      # CPU: LeNet-300-100 on Fashion-MNIST
    python benchmarks/scale_out.py --gpu                # GPU: cifar_resnet20 on CIFAR-10, bf16, data paths
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_level(recipe: str, overrides: list[str], processes: int, out: Path, port: int, threads: int | None) -> dict:
    settings = [item for override in ["ticket.levels=0", "run.tracker=none", *overrides] for item in ("--set", override)]
    prac = ["-m", "prac_plugin", "run", recipe, "--output", str(out), *settings]
    if processes == 1:
        command = [sys.executable, *prac]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
                   "--num_processes", str(processes), "--main_process_port", str(port), *prac]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # accelerate launch sets 1 per process itself
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads((out / "level_00" / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true", help="cifar_resnet20 / CIFAR-10 / bf16 data-path comparison")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.gpu:
        recipe = "recipes/cifar10_resnet20_ltr.yaml"
        base = [f"train.epochs={args.epochs}", "train.mixed_precision=bf16", "train.milestones=[]", "run.checkpoint_every=none"]
        configs = {
            "1 GPU, device-resident uint8 + batched augmentation": (1, base + ["data.in_memory=true"], None),
            "1 GPU, DataLoader + timm transforms (8 workers)": (1, base + ["data.in_memory=false", "data.num_workers=8"], None),
            "1 GPU, device-resident, per-epoch checkpoints": (1, [*base[:-1], "data.in_memory=true", "run.checkpoint_every=1ep"], None),
        }
    else:
        recipe = "recipes/fashion_mnist_lenet_ltr.yaml"
        base = [f"train.epochs={args.epochs}"]
        configs = {
            "1 process (torch's default threads), no checkpoints": (1, base + ["run.checkpoint_every=none"], None),
            "1 process, checkpoint every epoch": (1, base + ["run.checkpoint_every=1ep"], None),
            "1 process, 1 thread, no checkpoints": (1, base + ["run.checkpoint_every=none"], 1),
            "2 processes x 1 thread (gloo), no checkpoints": (2, base + ["run.checkpoint_every=none"], None),
        }
    rates: dict[str, list[float]] = {name: [] for name in configs}
    epoch_times: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, (processes, overrides, threads)) in enumerate(configs.items()):
                metrics = run_level(recipe, overrides, processes, Path(tmp) / f"r{repeat}-{i}", 29600 + repeat * 10 + i, threads)
                rates[name].append(metrics["examples_seen"] / metrics["train_time_s"])
                epoch_times[name].append(metrics["train_time_s"] / args.epochs)
                print(f"  {name}: {rates[name][-1]:,.0f} examples/s", flush=True)
    baseline = statistics.median(next(iter(rates.values())))
    print(f"\n{recipe}, level 0, {args.epochs} epochs, median of {args.repeats}\n")
    print("| configuration | training examples/s | seconds per epoch | ratio to the first row |")
    print("|---|---:|---:|---:|")
    for name in configs:
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:,.0f} | {statistics.median(epoch_times[name]):.2f} | {rate / baseline:.2f} |")


if __name__ == "__main__":
    main()
