"""Per-epoch cost of the engine (masked level) against a plain hand-written PyTorch loop, same process.

LeNet-300-100 on Fashion-MNIST (55,000 training images in memory), batch 128, SGD lr 0.1, one level at 80%
sparsity. The plain loops do the same math on the same uint8 tensors: index a batch, normalize, forward,
cross-entropy, backward, SGD step; the "plain + mask" loop also masks gradients and weights by hand.
Epochs alternate between the three loops so that machine noise hits all of them alike.

    python benchmarks/engine_overhead.py [--epochs-each 15] [--data-dir /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import timm
import torch
import torch.nn.functional as F
from accelerate import Accelerator

import prac_plugin  # noqa: F401
from prac_plugin import MaskEnforcer, TicketMask
from prac_plugin.config.schema import from_dict
from prac_plugin.data.sources import BatchSource, load_data, resolve_normalization
from prac_plugin.engine.trainer import LevelSchedule, Trainer, create_optimizer
from prac_plugin.config.recipes import DataSection, TrainSection


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs-each", type=int, default=15)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    data_cfg = from_dict(DataSection, {"path": "builtin:fashion_mnist", "data_dir": args.data_dir, "val_fraction": 0.0833}, "data")
    train_cfg = from_dict(TrainSection, {"batch_size": 128, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "epochs": 1}, "train")
    bundle = load_data(data_cfg)
    torch.manual_seed(0)
    model = timm.create_model("lenet_300_100", num_classes=10, in_chans=1, img_size=28)
    mean, std, _ = resolve_normalization(data_cfg, bundle, model)
    accelerator = Accelerator(cpu=True)
    trainer = Trainer(accelerator, train_cfg, {"train": BatchSource(bundle.train, bundle, data_cfg, mean, std, accelerator.device)})
    mask = TicketMask.dense(model, ignore=["fc"]).prune_magnitude(model, 0.8)
    enforcer = MaskEnforcer(model, mask)
    enforcer.apply()
    prepared = accelerator.prepare_model(model)
    positions = torch.arange(len(bundle.train))
    schedule = LevelSchedule.for_examples(len(positions), train_cfg.batch_size, 1)

    images, labels = bundle.train.images, bundle.train.labels
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    params = [p for n, p in model.named_parameters() if n in mask.masks]
    factors = [mask.masks[n].float() for n, p in model.named_parameters() if n in mask.masks]

    def engine_epoch() -> None:
        optimizer = accelerator.prepare_optimizer(create_optimizer(model, train_cfg))
        trainer.train(prepared, optimizer, enforcer, positions, schedule, desc="engine")

    def plain_epoch(with_mask: bool) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        order = torch.randperm(len(labels))
        for start in range(0, len(order), 128):
            index = order[start : start + 128]
            x = (images[index].float() / 255.0 - mean_t) / std_t
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if with_mask:
                for p, f in zip(params, factors):
                    p.grad.mul_(f)
            optimizer.step()
            if with_mask:
                with torch.no_grad():
                    for p, f in zip(params, factors):
                        p.mul_(f)

    loops = {"plain": lambda: plain_epoch(False), "plain + mask": lambda: plain_epoch(True), "engine (masked)": engine_epoch}
    for fn in loops.values():  # warm-up
        fn()
    times = {name: [] for name in loops}
    for _ in range(args.epochs_each):
        for name, fn in loops.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["plain"]
    print(f"LeNet-300-100, Fashion-MNIST train ({len(labels)} images), batch 128, {schedule.total_steps} steps/epoch, "
          f"{100 * (1 - mask.density):.1f}% sparsity; torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    # each round runs every loop back to back: the median of per-round ratios cancels slow drifts of the machine
    paired = {name: statistics.median(t / p for t, p in zip(times[name], times["plain"])) for name in loops}
    print("| loop | median epoch s | min s | ratio of medians | median paired ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, median in medians.items():
        print(f"| {name} | {median:.3f} | {min(times[name]):.3f} | {median / base:.3f} | {paired[name]:.3f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"times": times, "medians": medians, "paired_ratios": paired}, handle, indent=2)


if __name__ == "__main__":
    main()
