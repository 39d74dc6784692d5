"""PrAC sets, ticket masks and rewind points in a training script shaped like timm's ``train.py``.

About ten added lines (see the README) give such a script:

- ``--prac-index PATH``: train only on the rows of a PrAC index file, checked against the dataset first;
- ``--prac-select``: per-example forgetting statistics during training and, at the end, the PrAC set (CET) as
  an index file in the format ``prac`` writes (``prac_set.prac.safetensors``);
- ``--ticket-mask PATH``: pruned weights exactly zero (gradients masked in backward, weights after every
  optimizer step);
- ``--save-rewind POINT``: the weights at ``0it``/``500it``/``2ep``/``1ep50it`` as ``rewind.safetensors`` +
  ``rewind.json``, the layout of ``prac``'s ltr strategy.

Without these flags every call returns its input or does nothing: the script trains exactly as before.
Mistakes (an index file for another dataset, a mask for another model, a rewind point past the end) are
one `PracError` at start-up, before the first step. How sample ids travel: `prac_plugin.integrations.timm_data`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from torch import nn

from prac_plugin.errors import PracError
from prac_plugin.integrations.timm_data import (
    MIXED_EXTRA,
    SampleIdDataset,
    carry_ids,
    dataset_identity,
    unpack,
)
from prac_plugin.io import atomic_save_safetensors, state_to_cpu
from prac_plugin.masks import MaskEnforcer, TicketMask
from prac_plugin.rewind import RewindPoint, resolve_rewind_step
from prac_plugin.rundir import RunDirectory
from prac_plugin.selection.forgetting import ForgettingTracker, max_over_processes
from prac_plugin.selection.index_file import PracIndex
from prac_plugin.strategies.prac import FINAL_SET, set_index, set_metadata

STATISTICS_FILE = "forgetting.safetensors"  # per-row statistics of the whole split (the index file keeps the set's)
_NOT_WRAPPED = "--prac-index/--prac-select need the training data wrapped: call prac.wrap(dataset_train, ...) before create_loader"


def add_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the PrAC flags to a timm-style argument parser (as their own group)."""
    group = parser.add_argument_group("PrAC and lottery tickets (prac_plugin)")
    group.add_argument("--prac-index", metavar="PATH", help="train only on the rows of this PrAC index file (local or hf://)")
    group.add_argument("--prac-select", action="store_true", help="record forgetting per example; write the PrAC set at the end")
    group.add_argument("--prac-forgetting-threshold", type=int, default=0, metavar="N",
                       help="E_F: an example forgotten more than N times (or never learned) is critical (default 0)")
    group.add_argument("--ticket-mask", metavar="PATH", help="mask.safetensors: pruned weights stay exactly zero")
    group.add_argument("--save-rewind", metavar="POINT", help="save the weights at POINT (0it, 500it, 2ep, 1ep50it) for rewinding")
    group.add_argument("--prac-output", metavar="DIR", help="folder for prac's files (default: the output_dir given to start)")
    return group


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose parameters and state_dict keys are the model's own (not DDP's or torch.compile's)."""
    while isinstance(getattr(model, "module", None), nn.Module) or isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = getattr(model, "module", None) or model._orig_mod
    return model


class TimmHook:
    """The calls a timm-style loop makes: `wrap` the data, `start`, `observe` after the forward pass, `step`
    after the optimizer step, `end_epoch`, `finish`. Create it with `from_args` before EMA and DDP wrapping."""

    def __init__(self, model: nn.Module, *, index: str | None = None, select: bool = False, threshold: int = 0,
                 mask: str | None = None, rewind: str | None = None, output: str | None = None,
                 model_name: str = "", dataset_name: str = "", split: str = "train"):
        if threshold < 0:
            raise PracError(f"--prac-forgetting-threshold {threshold} must be 0 or more")
        self.model = _unwrap(model)
        self.index_path, self.select, self.threshold = index, select, threshold
        self.rewind = RewindPoint.parse(rewind) if rewind is not None else None
        self.output = Path(output) if output else None
        self.model_name = model_name or type(self.model).__name__
        self.dataset_name, self.split = dataset_name, split
        self.carries_ids = bool(index) or select
        self.mask: TicketMask | None = None
        self.enforcer: MaskEnforcer | None = None
        self._handles: list = []
        if mask:
            try:
                self.mask = TicketMask.load(mask, self.model)
            except PracError as exc:
                raise PracError(f"--ticket-mask {mask!r} for model {self.model_name!r}: {exc}") from None
            self.enforcer = MaskEnforcer(self.model, self.mask)
            self.enforcer.apply()  # before an EMA copy is taken, so its pruned weights start (and stay) zero
            self._handles = self.enforcer.hook_gradients()
        self.identity: dict[str, str] | None = None
        self.tracker: ForgettingTracker | None = None
        self.mixed_width: int | None = None
        self.updates = self.total_steps = self.updates_per_epoch = self._since_fold = 0
        self.rewind_step: int | None = None
        self._started = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, model: nn.Module) -> TimmHook:
        """A hook from the flags `add_args` added (and timm's ``--model``, ``--dataset``, ``--train-split``)."""
        return cls(model, index=args.prac_index, select=args.prac_select, threshold=args.prac_forgetting_threshold,
                   mask=args.ticket_mask, rewind=args.save_rewind, output=args.prac_output,
                   model_name=getattr(args, "model", ""), dataset_name=getattr(args, "dataset", ""),
                   split=getattr(args, "train_split", "train"))

    # -- set-up -----------------------------------------------------------------------------------
    def wrap(self, dataset: Any, collate_fn: Any = None, mixup_fn: Any = None) -> tuple[Any, Any, Any]:
        """(dataset, collate_fn, mixup_fn) whose targets carry sample ids, the dataset restricted to the index
        file's rows (checked against the dataset: row count, label hash, schema). Unchanged without the flags."""
        if not self.carries_ids:
            return dataset, collate_fn, mixup_fn
        self.identity, self.labels, self.class_names = dataset_identity(dataset, self.dataset_name, self.split)
        rows = None
        if self.index_path:
            index = PracIndex.load(self.index_path)
            where = f"--prac-index {self.index_path!r}"
            if "files_sha256" in self.identity and "files_sha256" not in index.metadata:
                raise PracError(f"{where} has no file list hash, so its rows cannot be matched to the folder {self.identity['dataset']!r} "
                                "safely; use an index file written by this hook on the same folder")
            index.check_dataset(self.identity, where)
            rows = index.rows
        mixups = [m for m in (collate_fn, mixup_fn) if isinstance(m, Mixup)]
        self.mixed_width = mixups[0].num_classes + MIXED_EXTRA if mixups else None
        device = next(self.model.parameters()).device
        self.tracker = ForgettingTracker(len(self.labels), device)
        return SampleIdDataset(dataset, rows), carry_ids(collate_fn), carry_ids(mixup_fn)

    def start(self, optimizer: torch.optim.Optimizer, num_epochs: int, updates_per_epoch: int,
              output_dir: str | None = None, start_epoch: int = 0) -> None:
        """Check the run before its first step: the rewind point lies inside training, files have a folder.
        Hooks the optimizer so pruned weights are zeroed after every step; saves a ``0it`` rewind point."""
        if self.carries_ids and self.identity is None:
            raise PracError(_NOT_WRAPPED)
        self.output = self.output or (Path(output_dir) if output_dir else None)
        if (self.select or self.rewind is not None) and self.output is None and _rank() == 0:
            raise PracError("--prac-select and --save-rewind write files: give --prac-output DIR (or output_dir to prac.start)")
        if updates_per_epoch < 1:
            raise PracError(f"updates_per_epoch = {updates_per_epoch}: the training loader yields no batch")
        if self.enforcer is not None and any(f.device != p.device for f, p in zip(self.enforcer.factors, self.enforcer.params)):
            raise PracError("the model moved to another device after prac_plugin.timm.hook(args, model): create the hook after model.to(device)")
        self.updates_per_epoch, self.total_steps = updates_per_epoch, num_epochs * updates_per_epoch
        self.updates = start_epoch * updates_per_epoch
        if self.rewind is not None:
            self.rewind_step = resolve_rewind_step(self.rewind, updates_per_epoch, self.total_steps)
            if self.rewind_step < self.updates:
                raise PracError(f"--save-rewind {self.rewind} is step {self.rewind_step}, before this run's start at step {self.updates} (epoch {start_epoch})")
        if self.enforcer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self.enforcer.apply()))
        self._started = True
        self._capture_rewind()

    # -- per step -----------------------------------------------------------------------------------
    def observe(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """After the forward pass: record each example's correctness against its hard label (also under
        mixup/cutmix) and return the target for the loss, ids split off. No host synchronization."""
        if not self.carries_ids:
            return target
        if self.tracker is None:
            raise PracError(_NOT_WRAPPED)
        target, labels, rows = unpack(target, self.mixed_width)
        logits = output[0] if isinstance(output, (tuple, list)) else output
        self.tracker.update(logits.detach(), labels, rows)
        return target

    def step(self) -> None:
        """After each optimizer update (where the loop counts ``num_updates``): saves the rewind point."""
        if not self._started and (self.carries_ids or self.enforcer is not None or self.rewind is not None):
            raise PracError("call prac.start(optimizer, num_epochs, updates_per_epoch, output_dir) before the first step")
        self.updates += 1
        self._since_fold += 1
        if self.tracker is not None and self._since_fold > self.updates_per_epoch:
            raise PracError(f"{self._since_fold} updates without prac.end_epoch(); call it after every epoch "
                            f"({self.updates_per_epoch} updates), or forgetting counts would merge epochs")
        self._capture_rewind()

    def end_epoch(self) -> None:
        """After every epoch, on every process: fold the epoch into the forgetting counts, across ranks once."""
        if self.tracker is not None:
            self.tracker.end_epoch(max_over_processes)
        self._since_fold = 0

    def finish(self) -> None:
        """After training: fold the last epoch, remove the hooks, and (rank 0) write the final weights, the
        mask, the per-row statistics and the PrAC set into the output folder."""
        self.end_epoch()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if _rank() != 0 or self.output is None or not (self.select or self.mask is not None or self.rewind is not None):
            return
        RunDirectory(self.output).save_state("weights", state_to_cpu(self.model), {"step": self.updates, "total_steps": self.total_steps})
        if self.mask is not None:
            self.mask.save(self.output / "mask.safetensors", {"density": f"{self.mask.density:.6f}"})
        if self.select:
            self._write_set()

    # -- files ----------------------------------------------------------------------------------------
    def _capture_rewind(self) -> None:
        if self.rewind_step is None or self.updates != self.rewind_step or _rank() != 0:
            return
        info = {"point": str(self.rewind), "step": self.updates, "total_steps": self.total_steps, "steps_per_epoch": self.updates_per_epoch}
        RunDirectory(self.output).save_state("rewind", state_to_cpu(self.model), info)

    def _write_set(self) -> None:
        tracker = self.tracker
        stats = {"labels": self.labels, "forgetting": tracker.forgetting, "presentations": tracker.presentations,
                 "ever_correct": tracker.ever_correct, "last_correct": tracker.last_correct}
        atomic_save_safetensors(stats, self.output / STATISTICS_FILE, self.identity)
        cet = tracker.critical(self.threshold).cpu()
        positions = cet.nonzero().squeeze(1)
        if positions.numel() == 0:
            raise PracError(f"the PrAC set is empty: no example was forgotten more than {self.threshold} times or never learned; "
                            f"per-row statistics are in {str(self.output / STATISTICS_FILE)!r}")
        metadata = set_metadata(
            self.identity, self.model_name, self.model, "cet", self.threshold, self.class_names, "prac_plugin timm integration",
            val_fraction=0.0, optimizer_steps=self.updates, trained_rows=int((tracker.presentations > 0).sum()),
            source_index=self.index_path or "",
        )
        index = set_index(tracker, positions, torch.arange(len(self.labels)), self.labels, cet, torch.zeros_like(cet), metadata)
        index.save(self.output / FINAL_SET)


def hook(args: argparse.Namespace, model: nn.Module) -> TimmHook:
    """`TimmHook.from_args`: ``prac = prac_plugin.timm.hook(args, model)``."""
    return TimmHook.from_args(args, model)


__all__ = ["STATISTICS_FILE", "SampleIdDataset", "TimmHook", "add_args", "hook"]
