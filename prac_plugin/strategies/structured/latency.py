"""CPU latency of several models on the same input, timed alternately so that their ratio is fair on a
machine whose load changes (shared cores, frequency scaling): every repeat times each model once, in turn,
and the figure is the median over repeats.

Two forms are timed: the model as trained (``eager``) and its deployment form with every BatchNorm folded into
the convolution before it (``folded``), which is what an inference export does. Folding removes per-layer work
that does not shrink with the width, so it is the fairer measure of what channel pruning buys at small batches."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ...errors import PracError


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference-only copy of ``model`` (eval mode) with each BatchNorm that follows a convolution folded into
    it, through torch.fx; a model fx cannot trace raises PracError with fx's reason."""
    from torch.fx.experimental.optimization import fuse

    was_training = model.training
    try:
        return fuse(model.eval(), inplace=False)  # a traced copy; ``model`` itself is not changed
    except Exception as error:  # fx raises many types for untraceable code (TraceError, TypeError, ...)
        raise PracError(f"cannot fold BatchNorm into convolutions of {type(model).__name__}: torch.fx could not trace it "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error
    finally:
        model.train(was_training)


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


def _row(batch: int, dense_s: float, ticket_s: float) -> dict[str, float]:
    return {
        "dense_ms": 1e3 * dense_s, "ticket_ms": 1e3 * ticket_s,
        "dense_images_per_s": batch / dense_s, "ticket_images_per_s": batch / ticket_s,
        "speedup": dense_s / ticket_s,
    }


def latency_report(dense: nn.Module, ticket: nn.Module, input_size: list[int], batch_sizes=(1, 64), repeats: int = 30,
                   fold: bool = True) -> dict:
    """Dense and ticket latency (ms) and throughput (images/s) per batch size, with the speed-up, on this CPU:
    ``batches`` for the models as trained and, with ``fold``, ``folded`` for their BatchNorm-folded forms (or the
    reason they could not be folded). All forms are timed in one interleaved loop."""
    models = {"dense": dense, "ticket": ticket}
    report = {"device": "cpu", "threads": torch.get_num_threads(), "repeats": repeats, "method": "interleaved, median", "batches": {}}
    if fold:
        try:
            models.update(dense_folded=fold_batchnorm(dense), ticket_folded=fold_batchnorm(ticket))
            report["folded"] = {"batches": {}}
        except PracError as error:
            report["folded"] = {"unavailable": str(error)}
    for batch in batch_sizes:
        seconds = interleaved_latency(models, torch.randn(batch, *input_size), repeats)
        report["batches"][str(batch)] = _row(batch, seconds["dense"], seconds["ticket"])
        if "ticket_folded" in seconds:
            report["folded"]["batches"][str(batch)] = _row(batch, seconds["dense_folded"], seconds["ticket_folded"])
    return report
