"""A whole `prac run` under FSDP2 against the same run under DDP, on the same two processes: what sharding each
level's model costs end to end (sharding the copy, gathering at the rewind point, checkpoints and level ends,
FSDP2's per-step all-gathers and reduce-scatters, masks on local shards).

    python benchmarks/fsdp_run.py [--model cifar_resnet20] [--width 16] [--epochs 4] [--levels 2] [--rounds 2]

Both launches use the repository's accelerate configs (recipes/accelerate/cpu_2proc.yaml and fsdp2_cpu_2proc.yaml),
alternated ``--rounds`` times; per level it reads ``train_time_s`` from each run's metrics.json and prints the
medians and their ratio, and checks that both runs kept the same masks. Every figure in RESULTS.md names the
machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"DDP": ROOT / "recipes/accelerate/cpu_2proc.yaml", "FSDP2": ROOT / "recipes/accelerate/fsdp2_cpu_2proc.yaml"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recipe(args) -> dict:
    return {
        "model": {"name": args.model, "kwargs": {"width": args.width}},
        "data": {"path": "builtin:digits", "val_fraction": 0.1},
        "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "schedule": "cosine", "seed": 0},
        "ticket": {"strategy": "ltr", "levels": args.levels, "fraction": 0.2, "ignore": ["fc", "conv1"], "rewind": "1ep"},
        "run": {"tracker": "none", "checkpoint_every": "1ep"},
    }


def _launch(config: Path, recipe: Path, out: Path) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port",
               str(_free_port()), "-m", "prac_plugin", "run", str(recipe), "--output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-2000:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    times = {name: {level: [] for level in range(args.levels + 1)} for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(_recipe(args)))
        for round_ in range(args.rounds):
            for name, config in CONFIGS.items():
                out = Path(tmp) / f"{name}-{round_}"
                _launch(config, recipe, out)
                for level in range(args.levels + 1):
                    times[name][level].append(json.loads((out / f"level_{level:02d}" / "metrics.json").read_text())["train_time_s"])
        same = all(torch.equal(a, b) for level in range(args.levels + 1)
                   for a, b in zip(*(load_file(Path(tmp) / f"{n}-0" / f"level_{level:02d}" / "mask.safetensors").values() for n in CONFIGS)))
    print(f"{args.model} width {args.width}, {args.epochs} epochs per level, {args.levels} pruned levels, 2 processes, {args.rounds} rounds")
    print("| level | DDP train s | FSDP2 train s | FSDP2 / DDP |\n|---:|---:|---:|---:|")
    for level in range(args.levels + 1):
        ddp, fsdp = (statistics.median(times[n][level]) for n in CONFIGS)
        print(f"| {level} | {ddp:.2f} | {fsdp:.2f} | {fsdp / ddp:.2f} |")
    print(f"masks identical in both runs at every level: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
