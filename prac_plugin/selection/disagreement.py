"""Prune disagreement (PrAC's CEP, "easy to forget during pruning"): examples whose eval-mode prediction
differs between the dense model and the current sparse one, on the un-augmented whole training split."""

from __future__ import annotations

import torch

from ..engine.data import BatchSource


@torch.no_grad()
def predictions(model: torch.nn.Module, source: BatchSource, batch_size: int) -> torch.Tensor:
    """Eval-mode argmax predictions for every example of ``source``'s split, in position order."""
    was_training = model.training
    model.eval()
    out = torch.empty(len(source.split), dtype=torch.long, device=source.device)
    for images, _, positions in source.batches(torch.arange(len(source.split)), batch_size, training=False, shard=False):
        out[positions] = model(images).argmax(1)
    model.train(was_training)
    return out

