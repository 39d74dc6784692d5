"""PrAC data selection (Zhang et al., ICML 2021) and reuse of index files.

``prac``: round 0 trains the dense model on the whole training split; after every round the PrAC set is
CET (examples of that round forgotten more than E_F times, or never learned) united with CEP (examples whose
prediction differs between the dense round-0 model and the current sparse one, on the whole split, eval mode,
no augmentation); the next round trains only on it.

``index``: every level trains on the rows of an index file (made by ``prac`` with any architecture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..errors import PracError
from ..io import atomic_save_safetensors, load_safetensors
from ..selection.disagreement import predictions
from ..selection.early_bird import EarlyBird
from ..selection.forgetting import ForgettingTracker, max_over_processes
from ..selection.index_file import PracIndex, dataset_signature
from ..selection.prac_set import FINAL_SET, SUFFIX, critical_set, set_index, set_metadata
from .base import DataSelectionStrategy, StrategyOptions
from .registry import register



def round_file(level: int) -> str:
    return f"prac/round_{level:02d}{SUFFIX}"


@dataclass
class PracOptions(StrategyOptions):
    forgetting_threshold: int = 0
    criteria: Literal["both", "cet", "cep"] = "both"
    budget: Literal["linear", "quadratic", "none"] = "linear"
    early_bird: bool = False
    early_bird_eps: float = 0.08
    early_bird_window: int = 5
    select_rounds: int = 1

    def __post_init__(self):
        if self.forgetting_threshold < 0:
            raise PracError(f"data_selection.forgetting_threshold = {self.forgetting_threshold} must be 0 or more")
        if not 0 < self.early_bird_eps < 1 or self.early_bird_window < 1:
            raise PracError("data_selection.early_bird_eps must be in (0, 1) and early_bird_window at least 1")
        if self.select_rounds < 0:
            raise PracError(f"data_selection.select_rounds = {self.select_rounds} must be 0 or more")


def _set_positions(run, level: int) -> torch.Tensor:
    index = PracIndex.load(run.run_dir.path / round_file(level))
    return index.positions_in(run.data.train.row_ids, f"round {level} set", labels=run.data.train.labels)


@register
class PracSelection(DataSelectionStrategy):
    name = "prac"
    Options = PracOptions

    def __init__(self, options, run):
        super().__init__(options, run)
        self.tracker: Optional[ForgettingTracker] = None
        self.early_bird: Optional[EarlyBird] = None

    def positions_for_level(self, level: int):
        return None if level == 0 else _set_positions(self.run, level - 1)

    def batch_observer(self, level: int):
        self.tracker = ForgettingTracker(len(self.run.data.train), self.run.accelerator.device)
        return self.tracker.update

    def epoch_hook(self, level: int):
        """Fold the epoch into the forgetting counts, then ask early-bird (when on) whether to stop."""
        self.early_bird = None
        if self.options.early_bird:
            ticket = self.run.recipe.ticket
            self.early_bird = EarlyBird(getattr(ticket, "fraction", 0.2), self.options.early_bird_eps, self.options.early_bird_window,
                                        getattr(ticket, "include", ()), getattr(ticket, "ignore", ()))

        def hook(epoch: int, model: torch.nn.Module) -> bool:
            self.tracker.end_epoch(max_over_processes)
            return self.early_bird is not None and self.early_bird(epoch, model)

        return hook

    def state_dict(self) -> dict:
        state = {"tracker": self.tracker.state_dict()}
        if self.early_bird is not None:
            state["early_bird"] = self.early_bird.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        if self.early_bird is not None:
            self.early_bird.load_state_dict(state["early_bird"])

    def end_level(self, level: int, model: torch.nn.Module) -> dict:
        opts, run = self.options, self.run
        batch = run.recipe.train.eval_batch_size
        self.tracker.end_epoch(max_over_processes)  # the level's last (possibly partial) epoch
        cet = self.tracker.critical(opts.forgetting_threshold).cpu()
        dense_file = run.run_dir.path / "prac" / "dense_predictions.safetensors"
        # the whole split, un-augmented, each process scoring its share (see `predictions`)
        current = predictions(model, run.trainer.sources["train"], batch).cpu()  # one forward pass per example in all
        if level == 0:
            if run.is_main_process:
                atomic_save_safetensors({"predictions": current}, dense_file)
            cep = torch.zeros_like(cet)
            chosen = cet if opts.criteria != "cep" else torch.ones_like(cet)  # CEP needs a sparse model: none yet
        else:
            dense = load_safetensors(dense_file, what="dense predictions")["predictions"]
            cep = current != dense
            chosen = critical_set(cet, cep, opts.criteria)
        positions = chosen.nonzero().squeeze(1)
        if positions.numel() == 0:
            raise PracError(
                f"the PrAC set of round {level} is empty (no example forgotten more than {opts.forgetting_threshold} times"
                f"{'' if level == 0 else ' nor changed by pruning'}); lower data_selection.forgetting_threshold or train longer"
            )
        if run.is_main_process:
            self._write(level, positions, cet, cep, model)
        run.accelerator.wait_for_everyone()
        trained = int((self.tracker.presentations > 0).sum())
        return {
            "prac_set_size": int(positions.numel()),
            "prac_set_fraction": positions.numel() / len(run.data.train),
            "cet_count": int(cet.sum()),
            "cep_count": int(cep.sum()),
            "never_learned_count": int(self.tracker.never_learned.sum()),
            "examples_trained": trained,
            "selection_forward_passes": len(run.data.train),
        }

    def _write(self, level, positions, cet, cep, model) -> None:
        run, opts, data = self.run, self.options, self.run.data
        metadata = set_metadata(
            dataset_signature(data), run.recipe.model.name, model,
            opts.criteria if level else ("cet" if opts.criteria != "cep" else "full"), opts.forgetting_threshold,
            data.class_names, "prac_plugin PrAC selection",
            round=level, val_fraction=run.recipe.data.val_fraction, split_seed=run.recipe.data.split_seed,
        )
        index = set_index(self.tracker, positions, data.train.row_ids, data.train.labels, cet, cep, metadata)
        index.save(run.run_dir.path / round_file(level))
        index.save(run.run_dir.path / FINAL_SET)


@dataclass
class IndexOptions(StrategyOptions):
    path: str = ""
    full_first_level: bool = False
    budget: Literal["linear", "quadratic", "none"] = "linear"

    def __post_init__(self):
        if not self.path:
            raise PracError("data_selection.path is required for strategy 'index' (a *.prac.safetensors file or hf:// path)")


@register
class IndexSelection(DataSelectionStrategy):
    """Train every level on the rows of a PrAC index file, validated against the dataset."""

    name = "index"
    Options = IndexOptions

    def __init__(self, options, run):
        super().__init__(options, run)
        index = PracIndex.load(options.path)
        where = f"index file {options.path!r}"
        index.check_dataset(dataset_signature(run.data), where)
        self.positions = index.positions_in(run.data.train.row_ids, where)
        self.index = index

    def positions_for_level(self, level: int):
        return None if level == 0 and self.options.full_first_level else self.positions

    def end_level(self, level, model) -> dict:
        positions = self.positions_for_level(level)
        return {"selected_examples": len(self.run.data.train) if positions is None else int(positions.numel())}
