"""PyTorch internals the captured training step relies on (checked against torch 2.14.1).

- ``torch.nn.modules.batchnorm._BatchNorm``: the base of every BatchNorm (1d, 2d, 3d, lazy, SyncBatchNorm); a
  BatchNorm with ``momentum=None`` reads ``num_batches_tracked`` on the host every step, which a CUDA graph
  cannot replay.
- ``OptimizedModule._orig_mod``: the module ``torch.compile`` wraps; a compiled model keeps Accelerate's autocast
  inside its traced graph, so the captured step calls it as it is.
- The texts of a lost peer: gloo raises a plain ``RuntimeError`` (not ``torch.distributed.DistError``) when
  another process of the group dies mid-collective ("Connection reset by peer", "Connection closed by peer",
  "Broken pipe", from its TCP transport); NCCL's watchdog reports a lost peer as a ``DistBackendError``.
"""

from __future__ import annotations

import torch

CHECKED_VERSION = "2.14.1"


def batchnorm_types() -> tuple[type, ...]:
    return (torch.nn.modules.batchnorm._BatchNorm,)


def is_compiled_module(model: torch.nn.Module) -> bool:
    """Whether ``model`` is what ``torch.compile`` returned (not a module inside one)."""
    return isinstance(model, torch.nn.Module) and hasattr(model, "_orig_mod")


LOST_PEER_TEXTS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused")


def is_lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process of the run stopped (a machine lost, a
    process killed), rather than a fault of this process."""
    import torch.distributed as dist

    if isinstance(exc, (dist.DistNetworkError, dist.DistBackendError)):
        return True
    return isinstance(exc, RuntimeError) and "gloo" in str(exc).lower() and any(t in str(exc) for t in LOST_PEER_TEXTS)
