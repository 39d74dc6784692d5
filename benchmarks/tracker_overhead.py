"""Cost of the PrAC forgetting tracker per training step, against the same engine without it, same process.

Two models bracket the range: LeNet-300-100 on Fashion-MNIST (a ~1.5 ms step on 2 CPU cores, where any
fixed per-step cost shows most) and cifar_resnet20 on CIFAR-10 (a ~40 ms step). Epochs with and without
the tracker alternate (median of per-round ratios, a noisy end-to-end check), and the tracker's own calls
are timed directly (one update per step plus the per-epoch fold spread over the epoch's steps).

    python benchmarks/tracker_overhead.py [--rounds 9] [--cifar-rows 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from accelerate import Accelerator

import prac_plugin  # noqa: F401
from prac_plugin import MaskEnforcer, TicketMask
from prac_plugin.config.schema import from_dict
from prac_plugin.data.sources import BatchSource, load_data, resolve_normalization
from prac_plugin.engine.trainer import LevelSchedule, Trainer, create_optimizer
from prac_plugin.config.recipes import DataSection, TrainSection
from prac_plugin.strategies.prac.forgetting import ForgettingTracker

CIFAR = "../shared/data/cifar10-jpeg"


def measure(name: str, data: dict, model_name: str, kwargs: dict, rounds: int) -> dict:
    data_cfg = from_dict(DataSection, data, "data")
    train_cfg = from_dict(TrainSection, {"batch_size": 128, "lr": 0.05, "epochs": 1}, "train")
    bundle = load_data(data_cfg)
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=bundle.num_classes, in_chans=bundle.in_chans, **kwargs)
    mean, std, _ = resolve_normalization(data_cfg, bundle, model)
    accelerator = Accelerator(cpu=True)
    trainer = Trainer(accelerator, train_cfg, {"train": BatchSource(bundle.train, bundle, data_cfg, mean, std, accelerator.device)})
    enforcer = MaskEnforcer(model, TicketMask.dense(model))
    positions = torch.arange(len(bundle.train))
    schedule = LevelSchedule.for_examples(len(positions), train_cfg.batch_size, 1)

    def epoch(with_tracker: bool) -> float:
        observer = ForgettingTracker(len(bundle.train)).update if with_tracker else None
        started = time.perf_counter()
        trainer.train(model, create_optimizer(model, train_cfg), enforcer, positions, schedule, observer=observer, desc=name)
        return (time.perf_counter() - started) / schedule.total_steps

    epoch(False), epoch(True)  # warm-up
    plain, tracked = [], []
    for _ in range(rounds):
        plain.append(epoch(False))
        tracked.append(epoch(True))
    ratio = statistics.median(t / p for t, p in zip(tracked, plain))
    direct = direct_cost(len(bundle.train), bundle.num_classes, train_cfg.batch_size, schedule.total_steps)
    return {"name": name, "steps": schedule.total_steps, "plain_ms": 1e3 * statistics.median(plain),
            "tracked_ms": 1e3 * statistics.median(tracked), "ratio": ratio, "direct_ms": 1e3 * direct,
            "direct_share": direct / statistics.median(plain)}


def direct_cost(num_examples: int, num_classes: int, batch: int, steps_per_epoch: int, repeats: int = 2000) -> float:
    """Seconds per step the tracker itself costs: one ``update`` plus 1/steps_per_epoch of an ``end_epoch``."""
    tracker = ForgettingTracker(num_examples)
    logits, targets = torch.randn(batch, num_classes), torch.randint(0, num_classes, (batch,))
    order = torch.randperm(num_examples)
    started = time.perf_counter()
    for i in range(repeats):
        start = (i * batch) % (num_examples - batch)
        tracker.update(logits, targets, order[start : start + batch])
    update = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(50):
        tracker.update(logits, targets, order[:batch])
        tracker.end_epoch()
    fold = (time.perf_counter() - started) / 50 - update
    return update + fold / steps_per_epoch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cifar-rows", type=int, default=5000, help="training rows of CIFAR-10 used (an epoch of ResNet-20 is slow on a CPU)")
    args = parser.parse_args()
    rows = [
        measure("lenet_300_100 / Fashion-MNIST", {"path": "builtin:fashion_mnist", "val_fraction": 0}, "lenet_300_100", {"img_size": 28}, args.rounds),
        measure("cifar_resnet20 / CIFAR-10", {"path": "parquet", "data_files": {"train": f"{CIFAR}/train.parquet"},
                                             "train_split": f"train[:{args.cifar_rows}]", "val_fraction": 0,
                                             "augment": {"random_crop_padding": 4, "hflip": True}},
                "cifar_resnet20", {}, max(3, args.rounds // 3)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128")
    print("| model / data | steps per epoch | step ms without | step ms with tracker | median paired ratio | tracker ms per step (direct) | tracker share of step |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['steps']} | {r['plain_ms']:.3f} | {r['tracked_ms']:.3f} | {r['ratio']:.4f} | "
              f"{r['direct_ms']:.4f} | {100 * r['direct_share']:.2f}% |")


if __name__ == "__main__":
    main()
