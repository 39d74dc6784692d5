"""What timm's training checkpoints hold that its resume functions read, for the timm hook's start-up checks.

``resume_epoch`` repeats the epoch rule of ``timm.models.resume_checkpoint`` and ``timm.task.resume_task_checkpoint``
(checked against timm 1.0.31): the checkpoint's ``epoch``, plus one when its ``version`` is above 1. The hook
needs the epoch a ``--resume`` will start at before timm's script writes anything (its ``args.yaml``), and the
current script resumes only after the hook's checks run; ``tests/test_compat.py`` compares the two on a
checkpoint timm's ``CheckpointSaver`` wrote.
"""

from __future__ import annotations

import argparse
from typing import Optional

import torch

CHECKED_VERSION = "timm 1.0.31"


def resume_epoch(path: str) -> Optional[int]:
    """The epoch timm's script resumes at from the checkpoint ``path``; None when it holds no epoch or cannot be
    read (timm then reports it). Loaded as timm loads it (``weights_only`` with ``argparse.Namespace`` allowed),
    tensors memory-mapped rather than read where the file allows."""
    def load(**kwargs):
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, **kwargs)

    try:
        try:
            checkpoint = load(mmap=True)
        except RuntimeError:  # not a zip-format file: no memory map
            checkpoint = load()
    except Exception:  # noqa: BLE001 - timm's own resume names what is wrong with the file
        return None
    if not isinstance(checkpoint, dict) or "epoch" not in checkpoint:
        return None
    epoch = int(checkpoint["epoch"])
    if "version" in checkpoint and checkpoint["version"] > 1:
        epoch += 1
    return epoch
