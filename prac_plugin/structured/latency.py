"""CPU latency of several models on the same input, timed alternately so that their ratio is fair on a
machine whose load changes (shared cores, frequency scaling): every repeat times each model once, in turn,
and the figure is the median over repeats."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.inference_mode()
def interleaved_latency(models: dict[str, nn.Module], example: torch.Tensor, repeats: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median seconds per forward pass of each model on ``example`` (eval mode, no autograd)."""
    modes = {name: m.training for name, m in models.items()}
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(example)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            started = time.perf_counter()
            model(example)
            times[name].append(time.perf_counter() - started)
    for name, model in models.items():
        model.train(modes[name])
    return {name: statistics.median(t) for name, t in times.items()}


def latency_report(dense: nn.Module, ticket: nn.Module, input_size: list[int], batch_sizes=(1, 64), repeats: int = 30) -> dict:
    """Dense and ticket latency (ms) and throughput (images/s) per batch size, with the speed-up, on this CPU."""
    report = {"device": "cpu", "threads": torch.get_num_threads(), "repeats": repeats, "method": "interleaved, median", "batches": {}}
    for batch in batch_sizes:
        seconds = interleaved_latency({"dense": dense, "ticket": ticket}, torch.randn(batch, *input_size), repeats)
        report["batches"][str(batch)] = {
            "dense_ms": 1e3 * seconds["dense"], "ticket_ms": 1e3 * seconds["ticket"],
            "dense_images_per_s": batch / seconds["dense"], "ticket_images_per_s": batch / seconds["ticket"],
            "speedup": seconds["dense"] / seconds["ticket"],
        }
    return report
