"""CTS's BatchNorm mode, checked on the network it broke: cifar_resnet20, one dense run, then one 20-epoch search per
mode (`batch`, the authors'; `running`, frozen statistics) at the same density from the same rewind point, each
ticket trained to the end. Prints and writes (``--output``/cts_batchnorm.json) per mode: the ticket's accuracy at
its start point before training (BatchNorm on batch statistics), the tensors it empties, survivors per tensor,
the trained ticket's test accuracy.

    # CPU, digits (8x8 images), 2% density: about 10 minutes on 2 cores
    python benchmarks/cts_batchnorm_check.py --output runs/cts_bn_digits
    # GPU, the paper's setting (issue 22): CIFAR-10, 9 dense epochs, 99.3% sparsity, bf16
    python benchmarks/cts_batchnorm_check.py --cifar10 .gpu_stage/data --epochs 9 --rewind 9ep --density 0.007 \\
        --set train.mixed_precision=bf16 --output $OUT/cts_bn
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import prac_plugin
from prac_plugin.config.recipes import apply_overrides

DIGITS = {
    "model": {"name": "cifar_resnet20"},
    "data": {"path": "builtin:digits", "val_fraction": 0.1},
    "train": {"epochs": 8, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "schedule": "cosine", "seed": 0},
    "run": {"tracker": "none"},
}


def cifar10(folder: str) -> dict:
    return {
        "model": {"name": "cifar_resnet20"},
        "data": {"path": "parquet", "data_files": {"train": f"{folder}/train.parquet", "test": f"{folder}/test.parquet"},
                 "val_fraction": 0.1, "augment": {"random_crop_padding": 4, "hflip": True}},
        "train": {"epochs": 9, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine", "seed": 0},
        "run": {"tracker": "none"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar10", help="folder with CIFAR-10 train.parquet/test.parquet (default: digits)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 8 on digits, 9 on CIFAR-10)")
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--rewind", default="1ep")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", default="runs/cts_batchnorm_check")
    args = parser.parse_args()
    base = cifar10(args.cifar10) if args.cifar10 else copy.deepcopy(DIGITS)
    if args.epochs:
        base["train"]["epochs"] = args.epochs
    output = Path(args.output)
    record = {"density": args.density, "rewind": args.rewind, "data": base["data"]["path"], "modes": {}}
    for mode in ("batch", "running"):
        raw = copy.deepcopy(base)
        raw["ticket"] = {"strategy": "cts", "densities": [args.density], "rewind": args.rewind, "batchnorm": mode}
        started = time.perf_counter()
        prac_plugin.run(apply_overrides(raw, args.set), str(output / mode))
        metrics = json.loads((output / mode / "level_01" / "metrics.json").read_text())
        health = metrics["mask_health"]
        record["modes"][mode] = {
            "start_point_acc": health["start_point_acc"], "dense_start_point_acc": health["dense_start_point_acc"],
            "empty_layers": health["empty_layers"], "test_acc": metrics["test_acc"], "wall_s": time.perf_counter() - started,
            "survivors": {layer["name"]: [layer["remaining"], layer["total"]] for layer in metrics["layers"]},
        }
    (output / "cts_batchnorm.json").write_text(json.dumps(record, indent=1))
    for mode, figures in record["modes"].items():
        print(f"{mode:8s} start point {100 * figures['start_point_acc']:5.1f}% (unmasked {100 * figures['dense_start_point_acc']:5.1f}%), "
              f"trained {100 * figures['test_acc']:5.1f}%, empty tensors {len(figures['empty_layers'])}: {figures['empty_layers'][:4]}, "
              f"conv1 {figures['survivors']['conv1.weight']}")


if __name__ == "__main__":
    main()
