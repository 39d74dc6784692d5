"""BatchNorm that normalises with the current batch's statistics, without touching the running buffers.

The CTS authors build their networks with ``BatchNorm2d(track_running_stats=False)``: in eval mode too, each
layer normalises with the statistics of the batch it sees. `batch_statistics` gives any model that behaviour for
a while: it hides the running mean and variance (PyTorch's and timm's BatchNorm then take batch statistics in
eval mode and update nothing) and puts the very same tensors back on exit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.nn.modules.batchnorm import _BatchNorm

RUNNING_BUFFERS = ("running_mean", "running_var")


@contextmanager
def batch_statistics(model: torch.nn.Module) -> Iterator[None]:
    """Within the block every BatchNorm of ``model`` normalises with batch statistics, in train and eval mode
    alike, and no running buffer changes; on exit each module has its own buffers back."""
    hidden = []
    for module in model.modules():
        if isinstance(module, _BatchNorm) and all(module._buffers.get(name) is not None for name in RUNNING_BUFFERS):
            hidden.append((module, {name: module._buffers[name] for name in RUNNING_BUFFERS}))
            for name in RUNNING_BUFFERS:
                module._buffers[name] = None
    try:
        yield
    finally:
        for module, buffers in hidden:
            module._buffers.update(buffers)
