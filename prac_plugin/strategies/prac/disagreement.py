"""Prune disagreement (PrAC's CEP, "easy to forget during pruning"): examples whose eval-mode prediction
differs between the dense model and the current sparse one, on the un-augmented whole training split."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # only a type here: importing the selection package loads no datasets
    from ...data.sources import BatchSource


@torch.no_grad()
def predictions(model: torch.nn.Module, source: BatchSource, batch_size: int) -> torch.Tensor:
    """Eval-mode argmax predictions for every example of ``source``'s split, in position order, on every process.

    With several processes each one predicts its share of every batch and the shares are combined with a
    maximum over processes (-1 where a process did not predict): every example is predicted exactly once,
    with no padding to drop, and the split costs one forward pass per example in total.
    """
    was_training = model.training
    model.eval()
    distributed = source.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
    out = torch.full((len(source.split),), -1, dtype=torch.long, device=source.device)
    for images, _, positions in source.batches(torch.arange(len(source.split)), batch_size, training=False, shard=distributed):
        out[positions] = model(images).argmax(1)
    if distributed:
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
    model.train(was_training)
    return out
