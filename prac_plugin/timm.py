"""``import prac_plugin.timm``: the timm training-script hook (`prac_plugin.integrations.timm.hook`).

Named after timm, this module never imports timm itself; imports inside the package are absolute, so
``import timm`` anywhere in prac_plugin still means the real timm.
"""

from __future__ import annotations

from .integrations.timm.hook import STATE_FILE, STATISTICS_FILE, SampleIdDataset, TimmHook, add_args, hook

__all__ = ["STATE_FILE", "STATISTICS_FILE", "SampleIdDataset", "TimmHook", "add_args", "hook"]
