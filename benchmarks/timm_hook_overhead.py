"""Cost of the timm training-script hook per step, against the same loop without it, in one process.

The loop is the core of a timm ``train.py`` step on in-memory batches (no data loading, so the hook's
share is not diluted): forward, cross-entropy, backward, SGD step. Three variants alternate round by round:

- plain: no hook;
- engine-style masking: ``MaskEnforcer.mask_gradients`` / ``apply`` (fused ``_foreach`` ops), for reference;
- hook: ``TimmHook`` with ``--ticket-mask`` and ``--prac-select`` as timm v1.0.22's loop calls it (per-parameter
  gradient hooks, a post-step hook applying the mask, ``observe`` unpacking ids and recording correctness, ``step``);
- task: the same through the current script's shape, ``task(input, target)`` on the wrapped ``ClassificationTask``
  and ``task.update_ema(step)`` after each update.

The epoch end (folding the epoch, writing the resume state) runs once per epoch, outside the timed steps; its
cost is reported on its own.

    python benchmarks/timm_hook_overhead.py [--rounds 5] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import create_dataset
from timm.task import ClassificationTask

import prac_plugin  # noqa: F401  (registers cifar_resnet20)
from prac_plugin import MaskEnforcer, TicketMask
from prac_plugin.timm import TimmHook


def tiny_hfds(folder: Path, rows: int) -> str:
    """A parquet split of ``rows`` 8x8 images: only its labels and row count matter to the hook."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    images = [np.zeros((8, 8, 3), dtype=np.uint8)] * rows
    labels = np.random.default_rng(0).integers(0, 10, rows).tolist()
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(str(folder / "train.parquet"))
    return f"hfds/{folder}"


def measure(model_name: str, batch: int, size: int, rows: int, steps: int, rounds: int, folder: Path) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10)
    mask = TicketMask.dense(model).prune_magnitude(model, 0.8)
    mask.save(folder / "mask.safetensors")
    inputs = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 10, (steps, batch))  # a fresh draw per step: some examples stay wrong
    dataset = create_dataset(tiny_hfds(folder, rows), root=str(folder / "cache"), split="train")

    epoch_ends = []

    def run(variant: str) -> float:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        hook = enforcer = task = None
        if variant in ("hook", "task"):
            hook = TimmHook(model, select=True, mask=str(folder / "mask.safetensors"), output=str(folder / "out"))
            hook.wrap(dataset)
            if variant == "task":
                task = hook.wrap_task(ClassificationTask(model, torch.nn.CrossEntropyLoss(), verbose=False))
            hook.start(optimizer, num_epochs=1, updates_per_epoch=steps + 1)  # no epoch end inside the timed steps
        elif variant == "engine":
            enforcer = MaskEnforcer(model, mask)
        order = torch.randperm(rows)
        started = time.perf_counter()
        for step in range(steps):
            target = labels[step]
            if hook is not None:
                target = torch.stack([target, order[step * batch:(step + 1) * batch]], 1)  # what the wrapped loader yields
            if task is not None:
                loss = task(inputs, target)["loss"]
            else:
                output = model(inputs)
                if hook is not None:
                    target = hook.observe(output, target)
                loss = F.cross_entropy(output, target)
            optimizer.zero_grad()
            loss.backward()
            if enforcer is not None:
                enforcer.mask_gradients()
            optimizer.step()
            if enforcer is not None:
                enforcer.apply()
            if task is not None:
                task.update_ema(step=step + 1)
            elif hook is not None:
                hook.step()
        elapsed = (time.perf_counter() - started) / steps
        if hook is not None:
            begun = time.perf_counter()
            hook.end_epoch()  # fold the epoch, write the resume state: once per epoch
            epoch_ends.append(time.perf_counter() - begun)
            hook.finish()  # removes its hooks, writes the set (not timed: once per training run)
        return elapsed

    variants = ("plain", "engine", "hook", "task")
    for variant in variants:  # warm-up
        run(variant)
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            times[variant].append(run(variant))
    ratio = {v: statistics.median(t / p for t, p in zip(times[v], times["plain"])) for v in variants}
    return {"name": f"{model_name}, batch {batch}, {size}x{size}", "tensors": len(mask.masks),
            "ms": {v: 1e3 * statistics.median(times[v]) for v in variants}, "ratio": ratio,
            "direct_ms": 1e3 * direct_cost(model, mask, inputs, dataset, rows, rounds, folder),
            "epoch_end_ms": 1e3 * statistics.median(epoch_ends)}


def direct_cost(model, mask: TicketMask, inputs: torch.Tensor, dataset, rows: int, rounds: int, folder: Path,
                repeats: int = 20) -> float:
    """Seconds per step of the hook's own work: gradient hooks in backward (paired against a plain backward),
    the post-step mask, and ``observe`` (unpack ids, record correctness)."""
    enforcer = MaskEnforcer(model, mask)
    grads = []
    for _ in range(rounds):
        timed = {}
        for hooked in (False, True):
            handles = enforcer.hook_gradients() if hooked else []
            started = time.perf_counter()
            for _ in range(repeats):
                model.zero_grad()
                model(inputs).sum().backward()
            timed[hooked] = (time.perf_counter() - started) / repeats
            for handle in handles:
                handle.remove()
        grads.append(timed[True] - timed[False])
    hook = TimmHook(model, select=True, output=str(folder / "direct"))
    hook.wrap(dataset)
    hook.start(torch.optim.SGD(model.parameters(), lr=0.01), num_epochs=1, updates_per_epoch=10**9)
    logits = torch.randn(inputs.shape[0], 10)
    target = torch.stack([torch.randint(0, 10, (len(logits),)), torch.randperm(rows)[: len(logits)]], 1)
    started = time.perf_counter()
    for _ in range(200 * repeats):
        hook.observe(logits, target)
        enforcer.apply()
        hook.step()
    return statistics.median(grads) + (time.perf_counter() - started) / (200 * repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (one is steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SGD momentum, 80% of the prunable weights masked")
    print("| model | masked tensors | plain step ms | engine-style masking ms (paired ratio) | hook, v1.0.22 loop ms (paired ratio) | "
          "hook, wrapped task ms (paired ratio) | hook's own work ms per step (direct) | share of the plain step | epoch end ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for model_name, batch, size in (("test_resnet", 32, 16), ("cifar_resnet20", 64, 32)):
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(model_name, batch, size, batch * args.steps, args.steps, args.rounds, Path(tmp))
        ms, ratio = r["ms"], r["ratio"]
        print(f"| {r['name']} | {r['tensors']} | {ms['plain']:.2f} | {ms['engine']:.2f} ({ratio['engine']:.3f}) | "
              f"{ms['hook']:.2f} ({ratio['hook']:.3f}) | {ms['task']:.2f} ({ratio['task']:.3f}) | {r['direct_ms']:.3f} | "
              f"{100 * r['direct_ms'] / ms['plain']:.2f}% | {r['epoch_end_ms']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
