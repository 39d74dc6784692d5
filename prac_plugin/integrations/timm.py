"""PrAC sets, ticket masks and rewind points inside timm's own ``train.py``.

Two shapes of timm's script are supported, each by a handful of added lines kept as a patch file in
``timm_patches/`` (`PATCHES`; ``prac timm-patch`` prints them, the README shows them, the tests apply them to the
real scripts):

- the current, task-based script (timm 1.0.23 and later): the training task the script builds is wrapped
  (`TimmHook.wrap_task`), so whatever task it is (classification, distillation) its forward pass reports the
  predictions and its ``update_ema`` call, made after every optimizer update, drives the counting;
- the earlier script (v1.0.22 and before): the loop calls `observe`, `step` and `end_epoch` itself.

Flags: ``--prac-index`` (train on an index file's rows, checked against the dataset), ``--prac-select`` (forgetting
statistics per example; the PrAC set at the end: CET, and with ``--prac-dense`` CET ∪ CEP as ``prac`` selects it),
``--ticket-mask`` (pruned weights exactly zero), ``--save-rewind`` (the weights at a rewind point, in the layout of
``prac``'s ltr strategy). Without them every call returns its input: the script trains exactly as before.

Mistakes stop the script before anything is written, as one ``prac: error: ...`` line with exit status 2. The
state a resumed run needs (forgetting counts, the mask, whether the rewind point was saved) is kept beside timm's
checkpoints in ``prac_state.safetensors`` at every epoch end and restored by ``--resume``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from timm.data import Mixup
from torch import nn

from prac_plugin.errors import PracError
from prac_plugin.integrations.timm_data import (
    MIXED_EXTRA,
    SampleIdDataset,
    carry_ids,
    dataset_identity,
    eval_predictions,
    unpack,
)
from prac_plugin.io import atomic_save_safetensors, load_safetensors, load_safetensors_and_metadata, state_to_cpu
from prac_plugin.masks import MaskEnforcer, TicketMask
from prac_plugin.rewind import RewindPoint, resolve_rewind_step
from prac_plugin.rundir import FINAL_SET, MASK_FILE, RunDirectory
from prac_plugin.selection.forgetting import ForgettingTracker, max_over_processes
from prac_plugin.selection.index_file import PracIndex
from prac_plugin.selection.prac_set import critical_set, prune_disagreement, set_index, set_metadata

PATCHES = {  # the lines to add to timm's train.py, per script version (`prac timm-patch`, the README)
    "current": Path(__file__).parent / "timm_patches" / "train.py.diff",
    "v1.0.22": Path(__file__).parent / "timm_patches" / "train_v1.0.22.py.diff",
}
STATISTICS_FILE = "forgetting.safetensors"  # per-row statistics of the whole split (the index file keeps the set's)
STATE_FILE = "prac_state.safetensors"  # what --resume restores: forgetting counts, the mask, the rewind point's fate
STATE_FORMAT = "1"
_NOT_WRAPPED = "--prac-index/--prac-select need the training data wrapped: call prac.wrap(dataset_train, ...) before create_loader"
_TRACKER_STATE = ("last_correct", "ever_correct", "forgetting", "presentations")


def add_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the PrAC flags to a timm-style argument parser (as their own group), and make a `PracError` that
    reaches the top of the script one line and exit status 2."""
    group = parser.add_argument_group("PrAC and lottery tickets (prac_plugin)")
    group.add_argument("--prac-index", metavar="PATH", help="train only on the rows of this PrAC index file (local or hf://)")
    group.add_argument("--prac-select", action="store_true", help="record forgetting per example; write the PrAC set at the end")
    group.add_argument("--prac-forgetting-threshold", type=int, default=0, metavar="N",
                       help="E_F: an example forgotten more than N times (or never learned) is critical (default 0)")
    group.add_argument("--prac-dense", metavar="PATH", help="with --prac-select: the dense round's weights.safetensors; the set "
                       "becomes CET and the examples whose prediction pruning changed (CEP), as prac selects it")
    group.add_argument("--ticket-mask", metavar="PATH", help="mask.safetensors: pruned weights stay exactly zero")
    group.add_argument("--save-rewind", metavar="POINT", help="save the weights at POINT (0it, 500it, 2ep, 1ep50it) for rewinding")
    group.add_argument("--prac-output", metavar="DIR", help="folder for prac's files (default: the script's output folder)")
    install_error_exit()
    return group


def install_error_exit() -> None:
    """A `PracError` that reaches the top of the script prints ``prac: error: ...`` and exits with status 2, no
    traceback (other exceptions keep Python's report). Exits at once: at start-up nothing is left to clean up,
    and under torchrun the launcher stops the other processes."""
    previous = sys.excepthook
    if getattr(previous, "prac_plugin", False):
        return

    def excepthook(kind, value, traceback):
        if isinstance(value, PracError):
            sys.stdout.flush()
            print(f"prac: error: {value}", file=sys.stderr, flush=True)
            os._exit(2)
        previous(kind, value, traceback)

    excepthook.prac_plugin = True
    sys.excepthook = excepthook


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose parameters and state_dict keys are the model's own (not DDP's or torch.compile's)."""
    while isinstance(getattr(model, "module", None), nn.Module) or isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def scheduled_epochs(args: argparse.Namespace, updates_per_epoch: int) -> Optional[int]:
    """The number of epochs timm's scheduler factory gives for the script's flags (warm-up and cool-down
    included), as ``train.py`` will compute it; None if the flags are not timm's."""
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    probe = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=getattr(args, "lr", None) or 0.1)
    try:
        _, num_epochs = create_scheduler_v2(probe, **scheduler_kwargs(args), updates_per_epoch=updates_per_epoch)
    except (AttributeError, TypeError, ValueError):
        return None
    return int(num_epochs)


class TimmHook:
    """What timm's script calls: `wrap` the data, `wrap_task` (task-based script) or `plan` (v1.0.22), `start`,
    then per step `observe` and `step` and per epoch `end_epoch` (v1.0.22; the wrapped task does it itself),
    and `finish`. Create it with `from_args` once the model is on its device, before EMA, compile and DDP."""

    def __init__(self, model: nn.Module, *, index: str | None = None, select: bool = False, threshold: int = 0,
                 mask: str | None = None, rewind: str | None = None, output: str | None = None, dense: str | None = None,
                 resume: str | None = None, model_name: str = "", dataset_name: str = "", split: str = "train",
                 args: argparse.Namespace | None = None):
        if threshold < 0:
            raise PracError(f"--prac-forgetting-threshold {threshold} must be 0 or more")
        if dense and not select:
            raise PracError("--prac-dense gives CEP for the PrAC set: it needs --prac-select")
        self.model = _unwrap(model)
        self.args = args
        self.index_path, self.select, self.threshold = index, select, threshold
        self.rewind = RewindPoint.parse(rewind) if rewind is not None else None
        self.explicit_output = Path(output) if output else None
        self.output = self.explicit_output
        self.resume = resume or None
        self.model_name = model_name or type(self.model).__name__
        self.dataset_name, self.split = dataset_name, split
        self.carries_ids = bool(index) or select
        self.mask: TicketMask | None = None
        self.enforcer: MaskEnforcer | None = None
        self._handles: list = []
        if mask:
            try:
                self._enforce(TicketMask.load(mask, self.model))
            except PracError as exc:
                raise PracError(f"--ticket-mask {mask!r} for model {self.model_name!r}: {exc}") from None
        self.dense_state = self._load_dense(dense) if dense else None
        self.dense_path = dense
        self.identity: dict[str, str] | None = None
        self.tracker: ForgettingTracker | None = None
        self.dataset = None  # the training split as the script built it, for CEP's un-augmented predictions
        self.mixed_width: int | None = None
        self.updates = self.total_steps = self.updates_per_epoch = self._since_fold = 0
        self.rewind_step: int | None = None
        self.rewind_saved = ""  # where the rewind point went (a resumed run may have saved it before)
        self.epochs_recorded = 0
        self.auto_epochs = False  # a wrapped task folds each epoch itself
        self._started = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, model: nn.Module) -> TimmHook:
        """A hook from the flags `add_args` added and timm's own (``--model``, ``--dataset``, ``--train-split``,
        ``--resume``); flags the hook cannot serve stop the script here, named."""
        ids = args.prac_index or args.prac_select
        if ids and getattr(args, "naflex_loader", False):
            raise PracError("--naflex-loader batches patches without sample ids: --prac-index/--prac-select need the standard loader")
        if (ids or args.ticket_mask) and getattr(args, "torchscript", False):
            raise PracError("--torchscript is not supported with --prac-index/--prac-select/--ticket-mask; use --torchcompile")
        return cls(model, index=args.prac_index, select=args.prac_select, threshold=args.prac_forgetting_threshold,
                   mask=args.ticket_mask, rewind=args.save_rewind, output=args.prac_output, dense=getattr(args, "prac_dense", None),
                   resume=getattr(args, "resume", None), model_name=getattr(args, "model", ""), dataset_name=getattr(args, "dataset", ""),
                   split=getattr(args, "train_split", "train"), args=args)

    @property
    def active(self) -> bool:
        return self.carries_ids or self.mask is not None or self.rewind is not None

    # -- set-up -----------------------------------------------------------------------------------
    def _enforce(self, mask: TicketMask) -> None:
        self.mask = mask
        self.enforcer = MaskEnforcer(self.model, mask)
        self.enforcer.apply()  # before an EMA copy is taken, so its pruned weights start (and stay) zero
        self._handles.extend(self.enforcer.hook_gradients())

    def _load_dense(self, path: str) -> dict[str, torch.Tensor]:
        state = load_safetensors(path, what="--prac-dense weights")
        own = self.model.state_dict()
        for name, value in own.items():
            if name not in state:
                raise PracError(f"--prac-dense {path!r} has no {name!r}: not the weights of {self.model_name!r}")
            if state[name].shape != value.shape:
                raise PracError(f"--prac-dense {path!r}: {name!r} has shape {tuple(state[name].shape)}, the model's {tuple(value.shape)}")
        extra = sorted(set(state) - set(own))
        if extra:
            raise PracError(f"--prac-dense {path!r} has {extra[0]!r}, which {self.model_name!r} has not")
        return state

    def wrap(self, dataset: Any, collate_fn: Any = None, mixup_fn: Any = None) -> tuple[Any, Any, Any]:
        """(dataset, collate_fn, mixup_fn) whose targets carry sample ids, the dataset restricted to the index
        file's rows (checked against the dataset: row count, label hash, schema). Unchanged without the flags."""
        if not self.carries_ids:
            return dataset, collate_fn, mixup_fn
        self.identity, self.labels, self.class_names = dataset_identity(dataset, self.dataset_name, self.split)
        self.dataset = dataset
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

    def plan(self, loader: Any) -> None:
        """With the training loader built (before the script writes anything): the updates per epoch and the
        number of epochs the script will train, and the rewind point checked against them."""
        if self.rewind is None:
            return
        accumulate = max(1, int(getattr(self.args, "grad_accum_steps", 1) or 1))
        updates_per_epoch = (len(loader) + accumulate - 1) // accumulate
        num_epochs = scheduled_epochs(self.args, updates_per_epoch) if self.args is not None else None
        if num_epochs is None:
            return  # not timm's flags: `start` checks with the script's own numbers
        start_epoch = getattr(self.args, "start_epoch", None) or 0
        self._check_rewind(num_epochs, updates_per_epoch, start_epoch, resuming=bool(self.resume))

    def wrap_task(self, task: nn.Module, loader: Any = None) -> nn.Module:
        """The script's training task, reporting each batch's predictions and each optimizer update to this hook
        (`prac_plugin.integrations.timm_task.PracTask`); the task itself when no flag asks for anything. With the
        training loader, checks the run's schedule first (`plan`)."""
        if loader is not None:
            self.plan(loader)
        if not self.active:
            return task
        from prac_plugin.integrations.timm_task import PracTask

        self.auto_epochs = True
        return PracTask(task, self)

    def _check_rewind(self, num_epochs: int, updates_per_epoch: int, start_epoch: int, resuming: bool) -> int:
        """The rewind point's step, which must lie inside training and (unless a resumed run saved it) after its start."""
        step = resolve_rewind_step(self.rewind, updates_per_epoch, num_epochs * updates_per_epoch)  # past the end: PracError
        if step < start_epoch * updates_per_epoch and not resuming:
            raise PracError(f"--save-rewind {self.rewind} is step {step}, before this run's start at step "
                            f"{start_epoch * updates_per_epoch} (epoch {start_epoch})")
        return step

    def start(self, optimizer: torch.optim.Optimizer, num_epochs: int, updates_per_epoch: int,
              output_dir: str | None = None, start_epoch: int = 0) -> None:
        """Check the run before its first step; restore a resumed run's state (`STATE_FILE`); hook the optimizer
        so pruned weights are zeroed after every step; save a ``0it`` rewind point."""
        if self.carries_ids and self.identity is None:
            raise PracError(_NOT_WRAPPED)
        self.output = self.explicit_output or (Path(output_dir) if output_dir else None)
        if (self.select or self.rewind is not None) and self.output is None and _rank() == 0:
            raise PracError("--prac-select and --save-rewind write files: give --prac-output DIR (or output_dir to prac.start)")
        if updates_per_epoch < 1:
            raise PracError(f"updates_per_epoch = {updates_per_epoch}: the training loader yields no batch")
        if self.enforcer is not None and any(f.device != p.device for f, p in zip(self.enforcer.factors, self.enforcer.params)):
            raise PracError("the model moved to another device after prac_plugin.timm.hook(args, model): create the hook after model.to(device)")
        self.updates_per_epoch, self.total_steps = updates_per_epoch, num_epochs * updates_per_epoch
        self.updates = start_epoch * updates_per_epoch
        if self.resume and self.active:
            self._restore(start_epoch)
        if self.rewind is not None:
            self.rewind_step = self._check_rewind(num_epochs, updates_per_epoch, start_epoch, resuming=bool(self.rewind_saved))
        if self.enforcer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self.enforcer.apply()))
        self._started = True
        self._capture_rewind()

    # -- per step -----------------------------------------------------------------------------------
    def split_ids(self, target: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(target for the loss, hard labels, source rows) of a batch's target; the target as it is without ids."""
        if not self.carries_ids:
            return target, None, None
        if self.tracker is None:
            raise PracError(_NOT_WRAPPED)
        return unpack(target, self.mixed_width)

    def record(self, output: Any, labels: Optional[torch.Tensor], rows: Optional[torch.Tensor]) -> None:
        """Each example's correctness in the training forward pass (against its hard label). No host sync."""
        if labels is None or self.tracker is None:
            return
        logits = output[0] if isinstance(output, (tuple, list)) else output
        self.tracker.update(logits.detach(), labels, rows)

    def observe(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """After the forward pass (v1.0.22's loop): record each example's correctness against its hard label (also
        under mixup/cutmix) and return the target for the loss, ids split off."""
        target, labels, rows = self.split_ids(target)
        self.record(output, labels, rows)
        return target

    def step(self, updates: int | None = None) -> None:
        """After each optimizer update (``updates``: the script's count, when it gives one): saves the rewind
        point; a wrapped task also folds each epoch's predictions here, at the epoch's last update."""
        if not self._started and self.active:
            raise PracError("call prac.start(optimizer, num_epochs, updates_per_epoch, output_dir) before the first step")
        self.updates = updates if updates is not None else self.updates + 1
        self._since_fold += 1
        if self.tracker is not None and self._since_fold > self.updates_per_epoch:
            raise PracError(f"{self._since_fold} updates without prac.end_epoch(); call it after every epoch "
                            f"({self.updates_per_epoch} updates), or forgetting counts would merge epochs")
        self._capture_rewind()
        if self.auto_epochs and self.updates_per_epoch and self.updates % self.updates_per_epoch == 0:
            self.end_epoch()

    def end_epoch(self) -> None:
        """After every epoch, on every process: fold the epoch into the forgetting counts (across processes once)
        and keep the state a resumed run needs."""
        if self._since_fold == 0 and self.epochs_recorded:
            return  # already folded at this epoch's last update
        if self.tracker is not None:
            self.tracker.end_epoch(max_over_processes)
        self._since_fold = 0
        if self.updates_per_epoch:
            self.epochs_recorded = self.updates // self.updates_per_epoch
        self._save_state()

    def finish(self) -> None:
        """After training: fold the last epoch, remove the hooks, and (rank 0) write the final weights, the
        mask, the per-row statistics and the PrAC set (with ``--prac-dense``, CET ∪ CEP) into the output folder."""
        self.end_epoch()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        cep = self._prune_disagreement() if self.select and self.dense_state is not None else None  # every process
        if _rank() != 0 or self.output is None or not self.active:
            return
        RunDirectory(self.output).save_state("weights", state_to_cpu(self.model), {"step": self.updates, "total_steps": self.total_steps})
        if self.mask is not None:
            self.mask.save(self.output / MASK_FILE, {"density": f"{self.mask.density:.6f}"})
        if self.select:
            self._write_set(cep)

    # -- resume -------------------------------------------------------------------------------------
    def _save_state(self) -> None:
        if _rank() != 0 or self.output is None or not self.active or not self._started:
            return
        tensors = {}
        if self.tracker is not None:
            tensors.update({f"tracker.{k}": v.cpu() for k, v in self.tracker.state_dict().items() if k in _TRACKER_STATE})
        if self.mask is not None:
            tensors.update({f"mask.{k}": v for k, v in self.mask.masks.items()})
        if not tensors:
            tensors["empty"] = torch.zeros(0)
        meta = {"format_version": STATE_FORMAT, "epochs": str(self.epochs_recorded), "updates": str(self.updates),
                "rewind_saved": self.rewind_saved, "dataset": json.dumps(self.identity, sort_keys=True) if self.identity else "",
                "prac_index": self.index_path or ""}
        self.output.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(tensors, self.output / STATE_FILE, meta)

    def _restore(self, start_epoch: int) -> None:
        """Continue the statistics, mask and rewind bookkeeping of the run ``--resume`` continues."""
        candidates = [p for p in (self.explicit_output, Path(self.resume).parent) if p is not None]
        path = next((p / STATE_FILE for p in candidates if (p / STATE_FILE).is_file()), None)
        if path is None:
            if self.tracker is not None and _rank() == 0:
                print(f"prac: note: no {STATE_FILE} in {' or '.join(map(str, candidates))}: forgetting statistics start at "
                      f"epoch {start_epoch} (the set's metadata records the epochs it saw)", file=sys.stderr, flush=True)
            return
        tensors, meta = load_safetensors_and_metadata(path, what="prac state")
        if meta.get("format_version") != STATE_FORMAT:
            raise PracError(f"{str(path)!r} has state format {meta.get('format_version')!r}; this prac_plugin reads {STATE_FORMAT}")
        epochs = int(meta.get("epochs", "-1"))
        if epochs != start_epoch:
            raise PracError(f"{str(path)!r} holds the state after epoch {epochs}, the checkpoint resumes at epoch {start_epoch}: "
                            f"resume from the last checkpoint (last.pth.tar), whose epoch matches")
        if self.tracker is not None and any(k.startswith("tracker.") for k in tensors):
            if meta.get("dataset") != json.dumps(self.identity, sort_keys=True) or meta.get("prac_index", "") != (self.index_path or ""):
                raise PracError(f"{str(path)!r} was recorded on other training data (dataset or --prac-index differ); resume with the same flags")
            self.tracker.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("tracker.")})
        stored = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("mask.")}
        if stored:
            trained = TicketMask(stored)
            if self.mask is None:  # resumed without --ticket-mask: the run's own mask stays on
                try:
                    trained.check_model(self.model)
                except PracError as exc:
                    raise PracError(f"the mask in {str(path)!r}: {exc}") from None
                self._enforce(trained)
            elif not self.mask.equal(trained):
                raise PracError(f"--ticket-mask differs from the mask the resumed run trained with ({str(path)!r}); resume with the same mask")
            self.enforcer.apply()
        self.epochs_recorded = epochs
        self.rewind_saved = meta.get("rewind_saved", "")

    # -- files ----------------------------------------------------------------------------------------
    def _capture_rewind(self) -> None:
        if self.rewind_step is None or self.updates != self.rewind_step or self.rewind_saved:
            return
        if _rank() == 0:
            info = {"point": str(self.rewind), "step": self.updates, "total_steps": self.total_steps, "steps_per_epoch": self.updates_per_epoch}
            RunDirectory(self.output).save_state("rewind", state_to_cpu(self.model), info)
        self.rewind_saved = str(self.output / "rewind.safetensors") if self.output else "saved by rank 0"

    @torch.no_grad()
    def _prune_disagreement(self) -> torch.Tensor:
        """CEP on the whole training split: eval-mode predictions of the dense weights and of this run's model,
        each example un-augmented (timm's eval transform), every process predicting its share once."""
        from timm.data import resolve_data_config

        dense = copy.deepcopy(self.model)
        dense.load_state_dict(self.dense_state)
        config = resolve_data_config(vars(self.args) if self.args is not None else {}, model=self.model)
        batch = getattr(self.args, "validation_batch_size", None) or getattr(self.args, "batch_size", 64)
        workers = getattr(self.args, "workers", 0) if self.args is not None else 0
        dense_pred, current = eval_predictions([dense, self.model], self.dataset, config, batch, workers)
        return prune_disagreement(dense_pred, current).cpu()

    def _write_set(self, cep: Optional[torch.Tensor]) -> None:
        tracker = self.tracker
        stats = {"labels": self.labels, "forgetting": tracker.forgetting, "presentations": tracker.presentations,
                 "ever_correct": tracker.ever_correct, "last_correct": tracker.last_correct}
        if cep is not None:
            stats["prune_disagreement"] = cep
        atomic_save_safetensors(stats, self.output / STATISTICS_FILE, self.identity)
        cet = tracker.critical(self.threshold).cpu()
        criteria = "cet" if cep is None else "both"
        cep = torch.zeros_like(cet) if cep is None else cep
        positions = critical_set(cet, cep, criteria).nonzero().squeeze(1)
        if positions.numel() == 0:
            raise PracError(f"the PrAC set is empty: no example was forgotten more than {self.threshold} times or never learned"
                            f"{'' if criteria == 'cet' else ' nor changed by pruning'}; per-row statistics are in "
                            f"{str(self.output / STATISTICS_FILE)!r}")
        metadata = set_metadata(
            self.identity, self.model_name, self.model, criteria, self.threshold, self.class_names, "prac_plugin timm integration",
            val_fraction=0.0, optimizer_steps=self.updates, trained_rows=int((tracker.presentations > 0).sum()),
            source_index=self.index_path or "", epochs_recorded=self.epochs_recorded, dense_weights=self.dense_path or "",
        )
        index = set_index(tracker, positions, torch.arange(len(self.labels)), self.labels, cet, cep, metadata)
        index.save(self.output / FINAL_SET)


def hook(args: argparse.Namespace, model: nn.Module) -> TimmHook:
    """`TimmHook.from_args`: ``prac = prac_plugin.timm.hook(args, model)``."""
    return TimmHook.from_args(args, model)


__all__ = ["STATE_FILE", "STATISTICS_FILE", "SampleIdDataset", "TimmHook", "add_args", "hook", "install_error_exit"]
