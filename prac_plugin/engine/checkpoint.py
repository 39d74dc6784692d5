"""Mid-level checkpoints: a killed or preempted run resumes inside the level it was training.

A checkpoint holds everything the rest of the level depends on: the model and optimizer state (and the fp16
gradient scaler), the level's mask, and per process the trainer's progress (step, the epoch's running sums,
history), the RNG states and the data-selection strategy's state (the forgetting tracker). The data position
needs no saving: each epoch's order and augmentation are functions of (seed, level, epoch), and the step
says how far into the epoch training got.

Layout: ``checkpoints/level_LL-step_SSSSSSSS/`` with ``model.safetensors``, ``mask.safetensors``,
``optimizer.pt``, ``rank_R.pt`` (one per process) and ``meta.json``. All files are written into a hidden
``.partial-*`` folder that is renamed into place once complete, so a kill leaves the whole checkpoint or
none; the newest ``keep`` are kept, and a level's checkpoints go once the level is complete.

Accelerate's ``save_state`` is not used: it saves every model and optimizer ever prepared (one optimizer per
level here, a new model per level for structured tickets), and the level loop has state of its own to keep.
Torch files are read back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..version import __version__
from ..config.recipes import CheckpointPolicy
from ..errors import PracError
from ..rundir.files import atomic_save_safetensors, atomic_write_json, load_safetensors, save_torch
from ..tickets.masks import TicketMask, check_mask_entries
from ..rundir.folder import CHECKPOINTS, FORMAT_VERSION, MASK_FILE

_NAME = re.compile(r"^level_(\d+)-step_(\d+)$")


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, Python, NumPy) in types ``weights_only`` loads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


@dataclass
class Checkpoint:
    """A checkpoint read back: shared state (model, optimizer, scaler, the mask's entries) and this process's state."""

    path: Path
    level: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    scaler: Optional[dict]
    process: dict
    mask_entries: dict[str, torch.Tensor]  # read once, when the checkpoint is (`mask` checks them against a model)

    @property
    def mask_path(self) -> Path:
        return self.path / MASK_FILE

    def mask(self, model: torch.nn.Module, include: Optional[list[str]] = None, ignore: Optional[list[str]] = None) -> TicketMask:
        """The mask this level trained with, refused unless it is a mask of ``model``'s prunable weights (with
        ``include``/``ignore``: exactly the run's prunable set), as `TicketMask.load` refuses a file."""
        return TicketMask.from_entries(self.mask_path, self.mask_entries, model, include=include, ignore=ignore)


class LevelCheckpoints:
    """The checkpoints of a run directory, written and read by every process of the run together."""

    def __init__(self, run_path: Path, policy: CheckpointPolicy, accelerator, log: Callable[[str], None] = print):
        self.root = Path(run_path) / CHECKPOINTS
        self.policy, self.accelerator, self.log = policy, accelerator, log

    def _complete(self) -> list[tuple[int, int, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = _NAME.match(path.name)
            if match and (path / "meta.json").is_file():
                found.append((int(match.group(1)), int(match.group(2)), path))
        return sorted(found)

    def save(self, level: int, step: int, model_state: dict, optimizer_state: dict, mask_save: Callable[[Path], None],
             scaler_state: Optional[dict], process_state: dict) -> None:
        """Every process writes its own state, the main process the shared state; then it is renamed into place."""
        acc = self.accelerator
        name = f"level_{level:02d}-step_{step:08d}"
        partial = self.root / f".partial-{name}"
        partial.mkdir(parents=True, exist_ok=True)
        save_torch(process_state, partial / f"rank_{acc.process_index}.pt")
        if acc.is_main_process:
            atomic_save_safetensors(model_state, partial / "model.safetensors", {"format": "pt"})
            mask_save(partial / MASK_FILE)
            save_torch({"optimizer": optimizer_state, "scaler": scaler_state}, partial / "optimizer.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            meta = {"format_version": FORMAT_VERSION, "package_version": __version__, "level": level, "step": step,
                    "num_processes": acc.num_processes}
            atomic_write_json(partial / "meta.json", meta)  # last: marks the files complete
            final = self.root / name
            if final.exists():  # the same step saved again after a resume
                shutil.rmtree(final)
            os.replace(partial, final)
            for *_, old in self._complete()[: -self.policy.keep]:
                shutil.rmtree(old, ignore_errors=True)

    def _check_world_size(self, path: Path, level: int) -> bool:
        """False for a checkpoint whose meta.json is unreadable (fall back past it); an error for another world size."""
        try:
            written = json.loads((path / "meta.json").read_bytes().decode("utf-8")).get("num_processes")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return False
        world = self.accelerator.num_processes
        if written != world:
            raise PracError(
                f"checkpoint {str(path)!r} was written by {written} processes and this run has {world}: relaunch with "
                f"{written} processes, or delete {str(self.root)!r} to restart level {level} from its beginning"
            )
        return True

    def _read(self, path: Path, level: int, step: int) -> Checkpoint:
        model = load_safetensors(path / "model.safetensors", what="checkpoint model")
        shared = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        process = torch.load(path / f"rank_{self.accelerator.process_index}.pt", map_location="cpu", weights_only=True)
        mask = load_safetensors(path / MASK_FILE, what="checkpoint mask")
        check_mask_entries(path / MASK_FILE, mask, None)  # e.g. not boolean: fall back past it, as past a damaged file
        return Checkpoint(path, level, step, model, shared["optimizer"], shared["scaler"], process, mask)

    def latest(self, level: int) -> Optional[Checkpoint]:
        """The newest checkpoint of ``level`` every process can read, falling back past unreadable ones."""
        acc = self.accelerator
        for ckpt_level, step, path in reversed(self._complete()):
            if ckpt_level != level:
                continue
            loaded, reason = None, "its meta.json is damaged"
            if self._check_world_size(path, level):  # another world size is not a fault to fall back from: the launch differs
                try:
                    loaded, reason = self._read(path, level, step), ""
                except Exception as exc:  # a truncated or corrupt file (PracError from safetensors, torch's own errors)
                    loaded, reason = None, str(exc)
            readable = torch.tensor([1 if loaded is not None else 0], device=acc.device)
            if int(acc.gather(readable).min()) == 1:
                return loaded
            if acc.is_main_process:
                self.log(f"checkpoint {path.name} is unreadable ({reason or 'on another process'}); falling back to an older one")
        return None

    def clear(self, partial_only: bool = False) -> None:
        """Remove checkpoints (main process): half-written ones, or all once their level is complete."""
        if not self.accelerator.is_main_process or not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith(".partial-") or not partial_only:
                shutil.rmtree(path, ignore_errors=True)
        if not partial_only and not any(self.root.iterdir()):
            self.root.rmdir()  # a finished run keeps no empty checkpoints/ folder
