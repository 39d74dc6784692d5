"""PrAC sets, ticket masks and rewind points inside timm's own ``train.py``.

Two shapes of timm's script are supported, each by a handful of added lines kept as a patch file in
``patches/`` (`PATCHES`; ``prac timm-patch`` prints them, the README shows them, the tests apply them to the
real scripts):

- the current, task-based script (timm 1.0.23 and later): the training task the script builds is wrapped
  (`TimmHook.wrap_task`), so whatever task it is (classification, distillation) its forward pass reports the
  predictions and its ``update_ema`` call, made after every optimizer update, drives the counting;
- the earlier script (v1.0.22 and before): the loop calls `observe`, `step` and `end_epoch` itself.

Flags: ``--prac-index`` (train on an index file's rows, checked against the dataset), ``--prac-select`` (forgetting
statistics per example; the PrAC set at the end: CET, and with ``--prac-dense`` CET ∪ CEP as ``prac`` selects it),
``--ticket-mask`` (pruned weights exactly zero), ``--save-rewind`` (the weights at a rewind point, in the layout of
``prac``'s ltr strategy). Without them every call returns its input: the script trains exactly as before.

Mistakes stop the script before anything is written (`plan` runs before timm writes ``args.yaml``), as one
``prac: error: ...`` line with exit status 2. The state a resumed run needs (forgetting counts, the mask, whether
the rewind point was saved, where the round began) is kept beside timm's checkpoints in ``prac_state.safetensors``
at every epoch end and restored by ``--resume``. The hook logs one line through Python's logging (timm's log) when
it starts and one each time it saves a rewind point or a PrAC set.

Importing this module loads only torch, timm (already loaded by the script) and safetensors: Hugging Face
``datasets`` only when a PrAC flag reads an ``hfds/`` split, no torch-pruning, no Accelerate.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from timm.data import AugMixDataset, Mixup  # loaded by `import timm` itself
from torch import nn

from ...compat.timm_private import resume_epoch
from ...errors import PracError
from .data import MIXED_EXTRA, SampleIdDataset, carry_ids, dataset_identity, eval_predictions, unpack
from ...rundir.files import atomic_save_safetensors, load_safetensors, load_safetensors_and_metadata, state_to_cpu
from ...tickets.masks import MaskEnforcer, TicketMask
from ...tickets.rewind import RewindPoint, resolve_rewind_step, rewind_record, save_rewind_point
from ...rundir.folder import MASK_FILE, RunDirectory
from ...strategies.prac.options import FINAL_SET
from ...strategies.prac.forgetting import ForgettingTracker, max_over_processes
from ...index_files.format import PracIndex
from ...strategies.prac.sets import prune_disagreement, select_round, write_round

PATCHES = {  # the lines to add to timm's train.py, per script version (`prac timm-patch`, the README)
    "current": Path(__file__).parent / "patches" / "train.py.diff",
    "v1.0.22": Path(__file__).parent / "patches" / "train_v1.0.22.py.diff",
}
STATISTICS_FILE = "forgetting.safetensors"  # per-row statistics of the whole split (the index file keeps the set's)
STATE_FILE = "prac_state.safetensors"  # what --resume restores: forgetting counts, the mask, the rewind point's fate
STATE_FORMAT = "1"
_NOT_WRAPPED = "--prac-index/--prac-select need the training data wrapped: call prac.wrap(dataset_train, ...) before create_loader"
_TRACKER_STATE = ("last_correct", "ever_correct", "forgetting", "presentations")
_log = logging.getLogger("prac_plugin.timm")  # timm's script sends the root logger to its console


def add_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the PrAC flags to a timm-style argument parser (as their own group), and make a `PracError` that
    reaches the top of the script one line and exit status 2."""
    group = parser.add_argument_group("PrAC and lottery tickets (prac_plugin)")
    group.add_argument("--prac-index", metavar="PATH", help="train only on the rows of this PrAC index file (local or hf://)")
    group.add_argument("--prac-select", action="store_true", help="record forgetting per example; write the PrAC set at the end")
    group.add_argument("--prac-forgetting-threshold", type=int, default=None, metavar="N",
                       help="with --prac-select: E_F, an example forgotten more than N times (or never learned) is critical (default 0)")
    group.add_argument("--prac-dense", metavar="PATH", help="with --prac-select: the dense round's weights.safetensors; the set "
                       "becomes CET and the examples whose prediction pruning changed (CEP), as prac selects it")
    group.add_argument("--ticket-mask", metavar="PATH", help="mask.safetensors: pruned weights stay exactly zero")
    group.add_argument("--save-rewind", metavar="POINT", help="save the weights at POINT (0it, 500it, 2ep, 1ep50it) for rewinding")
    group.add_argument("--prac-output", metavar="DIR", help="folder for prac's files (default: the script's output folder); "
                       "needs a flag that writes some (--prac-select, --save-rewind, --ticket-mask, --prac-index)")
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

    def __init__(self, model: nn.Module, *, index: str | None = None, select: bool = False, threshold: int | None = None,
                 mask: str | None = None, rewind: str | None = None, output: str | None = None, dense: str | None = None,
                 resume: str | None = None, model_name: str = "", dataset_name: str = "", split: str = "train",
                 args: argparse.Namespace | None = None):
        # flags that would do nothing are refused, not ignored
        if threshold is not None and not select:
            raise PracError(f"--prac-forgetting-threshold {threshold} sets E_F for the PrAC set: it needs --prac-select")
        if threshold is not None and threshold < 0:
            raise PracError(f"--prac-forgetting-threshold {threshold} must be 0 or more")
        if dense and not select:
            raise PracError("--prac-dense gives CEP for the PrAC set: it needs --prac-select")
        if output and not (index or select or mask or rewind is not None):
            raise PracError(f"--prac-output {output!r}: no flag writes files there; it needs --prac-select, --save-rewind, "
                            "--ticket-mask or --prac-index")
        threshold = 0 if threshold is None else threshold
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
        self.mask_path = mask or ""  # the effective mask's file (a resumed run's own, without --ticket-mask)
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
        self.rows: torch.Tensor | None = None  # the rows this round trains on (None: all)
        self.num_rows: int | None = None  # the split's rows (known once `wrap` saw the dataset)
        self.aug_splits = 1  # timm's AugMixDataset: each batch holds every example once per split, clean split first
        self.mixed_width: int | None = None
        self.updates = self.total_steps = self.updates_per_epoch = self._since_fold = 0
        self.rewind_step: int | None = None
        self.rewind_saved = ""  # where the rewind point went (a resumed run may have saved it before)
        self.epochs_recorded = 0  # timm's absolute epoch counter after the last fold
        self.round_start = (0, 0)  # (epoch, update) this round began at: a --start-epoch round's, kept across --resume
        self.auto_epochs = False  # a wrapped task folds each epoch itself
        self._resume_state: tuple | None = None  # (start_epoch, path, tensors, meta), checked by `plan`
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
        return cls(model, index=args.prac_index, select=args.prac_select, threshold=getattr(args, "prac_forgetting_threshold", None),
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
        file's rows (checked against the dataset: row count, label hash, schema). Unchanged without the flags.
        timm's ``AugMixDataset`` (``--aug-splits``) is wrapped as it is: its rows are the dataset it wraps."""
        try:
            self.num_rows = len(dataset)
        except TypeError:
            self.num_rows = None
        if not self.carries_ids:
            return dataset, collate_fn, mixup_fn
        self.identity, self.labels, self.class_names = dataset_identity(dataset, self.dataset_name, self.split)
        self.dataset = dataset
        self.aug_splits = dataset.num_splits if isinstance(dataset, AugMixDataset) else 1
        rows = None
        if self.index_path:
            index = PracIndex.load(self.index_path)
            where = f"--prac-index {self.index_path!r}"
            if "files_sha256" in self.identity and "files_sha256" not in index.metadata:
                raise PracError(f"{where} has no file list hash, so its rows cannot be matched to the folder {self.identity['dataset']!r} "
                                "safely; use an index file written by this hook on the same folder")
            index.check_dataset(self.identity, where)
            rows = index.rows
        self.rows = rows
        mixups = [m for m in (collate_fn, mixup_fn) if isinstance(m, Mixup)]
        self.mixed_width = mixups[0].num_classes + MIXED_EXTRA if mixups else None
        device = next(self.model.parameters()).device
        self.tracker = ForgettingTracker(len(self.labels), device)
        return SampleIdDataset(dataset, rows), carry_ids(collate_fn), carry_ids(mixup_fn)

    def plan(self, loader: Any) -> None:
        """With the training loader built, before the script writes anything (timm's ``args.yaml`` included):
        every check the run's start needs. The loader yields batches, the rewind point lies inside the scheduled
        training, and a ``--resume``'d run's state matches the checkpoint, the data and the mask."""
        if not self.active:
            return
        if self.carries_ids and self.identity is None:
            raise PracError(_NOT_WRAPPED)
        accumulate = max(1, int(getattr(self.args, "grad_accum_steps", 1) or 1))
        updates_per_epoch = (len(loader) + accumulate - 1) // accumulate
        if updates_per_epoch < 1:
            raise PracError(f"the training loader yields no batch ({self.num_rows} rows, batch size "
                            f"{getattr(self.args, 'batch_size', '?')}; timm drops a last partial batch)")
        self._check_device()
        start_epoch = getattr(self.args, "start_epoch", None)  # timm's rule: --start-epoch, else the checkpoint's
        if start_epoch is None and self.resume:
            start_epoch = resume_epoch(self.resume)  # None: unreadable, timm says why; `start` checks then
        if self.resume and start_epoch is not None:
            self._read_resume_state(start_epoch)
        if self.rewind is None:
            return
        num_epochs = scheduled_epochs(self.args, updates_per_epoch) if self.args is not None else None
        if num_epochs is None:
            return  # not timm's flags: `start` checks with the script's own numbers
        rewind_saved = bool(self._resume_state and self._resume_state[3].get("rewind_saved"))
        self._check_rewind(num_epochs, updates_per_epoch, start_epoch or 0, resuming=rewind_saved)

    def wrap_task(self, task: nn.Module, loader: Any = None) -> nn.Module:
        """The script's training task, reporting each batch's predictions and each optimizer update to this hook
        (`prac_plugin.integrations.timm.task.PracTask`); the task itself when no flag asks for anything. With the
        training loader, checks the run's start first (`plan`)."""
        if loader is not None:
            self.plan(loader)
        if not self.active:
            return task
        from .task import PracTask

        self.auto_epochs = True
        return PracTask(task, self)

    def _check_device(self) -> None:
        if self.enforcer is not None and any(f.device != p.device for f, p in zip(self.enforcer.factors, self.enforcer.params)):
            raise PracError("the model moved to another device after prac_plugin.timm.hook(args, model): create the hook after model.to(device)")

    def _check_rewind(self, num_epochs: int, updates_per_epoch: int, start_epoch: int, resuming: bool) -> int:
        """The rewind point's step, which must lie inside training and (unless a resumed run saved it) after its start."""
        step = resolve_rewind_step(self.rewind, updates_per_epoch, num_epochs * updates_per_epoch)  # past the end: PracError
        if step < start_epoch * updates_per_epoch and not resuming:
            raise PracError(f"--save-rewind {self.rewind} is step {step}, before this run's start at step "
                            f"{start_epoch * updates_per_epoch} (epoch {start_epoch})")
        return step

    def start(self, optimizer: torch.optim.Optimizer, num_epochs: int, updates_per_epoch: int,
              output_dir: str | None = None, start_epoch: int = 0) -> None:
        """Check the run before its first step (what `plan` did not); restore a resumed run's state
        (`STATE_FILE`); hook the optimizer so pruned weights are zeroed after every step; save a ``0it`` rewind
        point; record the effective ``--ticket-mask`` in timm's ``args.yaml``; log what the hook does."""
        if self.carries_ids and self.identity is None:
            raise PracError(_NOT_WRAPPED)
        self.output = self.explicit_output or (Path(output_dir) if output_dir else None)
        if (self.select or self.rewind is not None) and self.output is None and _rank() == 0:
            raise PracError("--prac-select and --save-rewind write files: give --prac-output DIR (or output_dir to prac.start)")
        if updates_per_epoch < 1:
            raise PracError(f"updates_per_epoch = {updates_per_epoch}: the training loader yields no batch")
        self._check_device()
        self.updates_per_epoch, self.total_steps = updates_per_epoch, num_epochs * updates_per_epoch
        self.updates = start_epoch * updates_per_epoch
        self.round_start = (start_epoch, self.updates)
        self.epochs_recorded = start_epoch
        resumed = self.resume and self.active and self._restore(start_epoch)
        if self.rewind is not None:
            self.rewind_step = self._check_rewind(num_epochs, updates_per_epoch, start_epoch, resuming=bool(self.rewind_saved))
        if self.enforcer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self.enforcer.apply()))
        self._started = True
        if self.active and _rank() == 0:
            self._record_effective_mask(output_dir)
            _log.info(self._start_line(num_epochs, start_epoch, bool(resumed)))
        self._capture_rewind()

    def _start_line(self, num_epochs: int, start_epoch: int, resumed: bool) -> str:
        """One line for timm's log: what this round trains on, with what mask, what it saves and tracks."""
        if self.rows is not None:
            data = f"training on {len(self.rows)} of {self.num_rows} rows (--prac-index {self.index_path})"
        elif self.num_rows is not None:
            data = f"training on all {self.num_rows} rows"
        else:
            data = "training on the script's data"
        if self.aug_splits > 1:
            data += f", {self.aug_splits} aug splits (the clean split's predictions are tracked)"
        mask = (f"mask density {self.mask.density:.4f} ({self.mask_path or 'from the resumed state'})" if self.mask is not None
                else "no mask")
        rewind = (f"rewind point {self.rewind} = step {self.rewind_step}" + (" (already saved)" if self.rewind_saved else "")
                  if self.rewind is not None else "no rewind point")
        if self.select:
            cep = f" ∪ CEP against {self.dense_path}" if self.dense_path else ""
            tracked = f"tracking forgetting per example for the PrAC set (CET{cep}, E_F {self.threshold})"
        elif self.carries_ids:
            tracked = "tracking nothing (no --prac-select)"
        else:
            tracked = "tracking nothing"
        epochs = f"epochs {start_epoch}-{num_epochs - 1} of {num_epochs}" + (", resumed" if resumed else "")
        return f"prac: {data}; {mask}; {rewind}; {tracked}; {epochs}"

    def _record_effective_mask(self, output_dir: str | None) -> None:
        """timm wrote ``args.yaml`` from the command line; a resumed run without ``--ticket-mask`` still trains with
        its own mask, so the file names it (only that key changes)."""
        if self.mask is None or self.args is None or getattr(self.args, "ticket_mask", None) or not output_dir:
            return
        self.args.ticket_mask = self.mask_path
        path = Path(output_dir) / "args.yaml"
        if not path.is_file():
            return
        import yaml

        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            return
        if isinstance(values, dict) and values.get("ticket_mask") is None and "ticket_mask" in values:
            values["ticket_mask"] = self.mask_path
            from ...rundir.files import atomic_write_text

            atomic_write_text(path, yaml.safe_dump(values, default_flow_style=False))

    # -- per step -----------------------------------------------------------------------------------
    def split_ids(self, target: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(target for the loss, hard labels, source rows) of a batch's target; the target as it is without ids."""
        if not self.carries_ids:
            return target, None, None
        if self.tracker is None:
            raise PracError(_NOT_WRAPPED)
        return unpack(target, self.mixed_width)

    def record(self, output: Any, labels: Optional[torch.Tensor], rows: Optional[torch.Tensor]) -> None:
        """Each example's correctness in the training forward pass (against its hard label). No host sync.
        With ``--aug-splits`` the batch holds each example once per split (timm's order: the clean split first);
        the clean split's prediction is the one recorded, so an example is presented once per epoch."""
        if labels is None or self.tracker is None:
            return
        logits = output[0] if isinstance(output, (tuple, list)) else output
        if self.aug_splits > 1:
            clean = labels.shape[0] // self.aug_splits
            logits, labels, rows = logits[:clean], labels[:clean], rows[:clean]
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
                "prac_index": self.index_path or "", "ticket_mask": self.mask_path,
                "round_start_epoch": str(self.round_start[0]), "round_start_step": str(self.round_start[1])}
        self.output.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(tensors, self.output / STATE_FILE, meta)

    def _read_resume_state(self, start_epoch: int) -> Optional[tuple]:
        """The state of the run ``--resume`` continues, checked against the checkpoint's epoch, the training data
        and the mask, without changing anything (`plan` calls it before the script writes a file); None without one."""
        if self._resume_state is not None and self._resume_state[0] == start_epoch:
            return self._resume_state
        candidates = [p for p in (self.explicit_output, Path(self.resume).parent) if p is not None]
        path = next((p / STATE_FILE for p in candidates if (p / STATE_FILE).is_file()), None)
        if path is None:
            return None
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
        stored = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("mask.")}
        if stored:
            trained = TicketMask(stored)
            if self.mask is None:  # resumed without --ticket-mask: the run's own mask stays on
                try:
                    trained.check_model(self.model)
                except PracError as exc:
                    raise PracError(f"the mask in {str(path)!r}: {exc}") from None
            elif not self.mask.equal(trained):
                raise PracError(f"--ticket-mask differs from the mask the resumed run trained with ({str(path)!r}); resume with the same mask")
        self._resume_state = (start_epoch, path, tensors, meta)
        return self._resume_state

    def _restore(self, start_epoch: int) -> bool:
        """Continue the statistics, mask and rewind bookkeeping of the run ``--resume`` continues (True if there was one)."""
        state = self._read_resume_state(start_epoch)
        if state is None:
            if self.tracker is not None and _rank() == 0:
                candidates = [p for p in (self.explicit_output, Path(self.resume).parent) if p is not None]
                print(f"prac: note: no {STATE_FILE} in {' or '.join(map(str, candidates))}: forgetting statistics start at "
                      f"epoch {start_epoch} (the set's metadata records the epochs it saw)", file=sys.stderr, flush=True)
            return False
        _, path, tensors, meta = state
        if self.tracker is not None and any(k.startswith("tracker.") for k in tensors):
            self.tracker.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("tracker.")})
        stored = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("mask.")}
        if stored:
            if self.mask is None:
                self._enforce(TicketMask(stored))
                self.mask_path = meta.get("ticket_mask") or str(path)
            self.enforcer.apply()
        self.epochs_recorded = int(meta["epochs"])
        self.round_start = (int(meta.get("round_start_epoch", "0")), int(meta.get("round_start_step", "0")))
        self.rewind_saved = meta.get("rewind_saved", "")
        return True

    # -- files ----------------------------------------------------------------------------------------
    def _capture_rewind(self) -> None:
        if self.rewind_step is None or self.updates != self.rewind_step or self.rewind_saved:
            return
        run_dir = RunDirectory(self.output) if self.output else None  # rank 0 always has one (`start` refuses none)
        if _rank() == 0:
            save_rewind_point(run_dir, self.model, rewind_record(self.rewind, self.updates, self.total_steps, self.updates_per_epoch))
            _log.info(f"prac: saved the rewind point {self.rewind} (step {self.updates} of {self.total_steps}) to "
                      f"{run_dir.state_path('rewind')}")
        self.rewind_saved = str(run_dir.state_path("rewind")) if run_dir else "saved by rank 0"

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

    def unshown_rows(self) -> torch.Tensor:
        """Rows of this round's data the loader never presented (timm drops the last partial batch of every
        epoch, and with a fixed order or one epoch the same rows each time), as a mask over the split."""
        presented = self.tracker.presentations.cpu() > 0
        trained = torch.zeros_like(presented)
        trained[self.rows if self.rows is not None else slice(None)] = True
        return trained & ~presented

    def _write_set(self, cep: Optional[torch.Tensor]) -> None:
        """The PrAC set. A row of this round's data that was never presented has never been learned, so it is
        critical (in the set), as the forgetting reference treats an example it has no evidence is easy: only
        examples learned and never forgotten are left out."""
        tracker = self.tracker
        stats = {"labels": self.labels, "forgetting": tracker.forgetting, "presentations": tracker.presentations,
                 "ever_correct": tracker.ever_correct, "last_correct": tracker.last_correct}
        if cep is not None:
            stats["prune_disagreement"] = cep
        atomic_save_safetensors(stats, self.output / STATISTICS_FILE, self.identity)
        unshown = self.unshown_rows()
        cet = tracker.critical(self.threshold).cpu() | unshown
        selected = select_round(cet, cep, "both", if_empty=(
            f"the PrAC set is empty: no example was forgotten more than {self.threshold} times or never learned"
            f"{'' if cep is None else ' nor changed by pruning'}; per-row statistics are in "
            f"{str(self.output / STATISTICS_FILE)!r}"))
        start_epoch, start_step = self.round_start  # what this round trained, not timm's absolute counters
        write_round(
            [self.output / FINAL_SET], selected, tracker, torch.arange(len(self.labels)), self.labels, self.identity,
            self.model_name, self.model, self.threshold, self.class_names, "prac_plugin timm integration",
            val_fraction=0.0, optimizer_steps=self.updates - start_step, trained_rows=int((tracker.presentations > 0).sum()),
            source_index=self.index_path or "", epochs_recorded=self.epochs_recorded - start_epoch, dense_weights=self.dense_path or "",
            start_epoch=start_epoch, unshown_rows=int(unshown.sum()),
        )
        positions, criteria = selected.positions, selected.criteria
        rows = len(self.rows) if self.rows is not None else len(self.labels)
        _log.info(f"prac: saved the PrAC set ({criteria.replace('both', 'CET ∪ CEP').upper()}): {positions.numel()} of the "
                  f"{rows} rows trained on ({int(unshown.sum())} never shown, counted as never learned) to {self.output / FINAL_SET}")


def hook(args: argparse.Namespace, model: nn.Module) -> TimmHook:
    """`TimmHook.from_args`: ``prac = prac_plugin.timm.hook(args, model)``."""
    return TimmHook.from_args(args, model)


__all__ = ["STATE_FILE", "STATISTICS_FILE", "SampleIdDataset", "TimmHook", "add_args", "hook", "install_error_exit"]
