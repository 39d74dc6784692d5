"""PrAC data selection (Zhang et al., ICML 2021).

``prac``: round 0 trains the dense model on the whole training split; after every round the PrAC set is
CET (examples of that round forgotten more than E_F times, or never learned) united with CEP (examples whose
prediction differs between the dense round-0 model and the current sparse one, on the whole split, eval mode,
no augmentation); the next round trains only on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch

from ...errors import PracError
from ...rundir.files import atomic_save_safetensors, load_safetensors
from .disagreement import predictions
from .early_bird import EarlyBird
from .forgetting import ForgettingTracker, max_over_processes
from ...index_files.format import PracIndex
from .sets import select_round, write_round
from ..base import DataSelectionStrategy, StrategyOptions


# The settings of the PrAC reference code (VITA-Group/PrAC-LTH), whose runs produced the paper's savings (83.9%
# fewer iterations on ResNet-20): early-bird in every round, the epochs shrinking with the set (quadratic budget),
# convolutions pruned only, rewinding to the weights after epoch 3. ``data_selection.preset: reference`` fills
# the keys a recipe leaves unset; the paper's own statement (linear budget, no early-bird) is the default.
REFERENCE_PRESET = {
    "data_selection": {"early_bird": True, "early_bird_eps": 0.08, "early_bird_window": 5, "budget": "quadratic"},
    "ticket": {"include": ["type:Conv*"], "rewind": "3ep"},
}


@dataclass
class EarlyBirdOptions(StrategyOptions):
    """Early-bird stopping, shared by PrAC and the random-subset control so both get the same rule."""

    early_bird: bool = False
    early_bird_eps: float = 0.08
    early_bird_window: int = 5

    def __post_init__(self):
        if not 0 < self.early_bird_eps < 1 or self.early_bird_window < 1:
            raise PracError("data_selection.early_bird_eps must be in (0, 1) and early_bird_window at least 1")


class EarlyBirdStopping:
    """A data-selection strategy whose levels may end by early-bird stopping (``options.early_bird``)."""

    options: EarlyBirdOptions
    context: Any
    presets = {"reference": REFERENCE_PRESET}
    early_bird: Optional[EarlyBird] = None

    def new_early_bird(self) -> Optional[EarlyBird]:
        """A fresh early-bird judge for a level, or None when early-bird stopping is off."""
        self.early_bird = None
        if self.options.early_bird:
            fraction, include, ignore = self.context.pruning
            self.early_bird = EarlyBird(fraction, self.options.early_bird_eps, self.options.early_bird_window, include, ignore)
        return self.early_bird

    def epoch_hook(self, level: int):
        judge = self.new_early_bird()
        return None if judge is None else (lambda epoch, model: judge(epoch, model))

    def state_dict(self) -> dict:
        return {"early_bird": self.early_bird.state_dict()} if self.early_bird is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.early_bird is not None:
            self.early_bird.load_state_dict(state["early_bird"])


@dataclass
class PracOptions(EarlyBirdOptions):
    forgetting_threshold: int = 0
    criteria: Literal["both", "cet", "cep"] = "both"
    budget: Literal["linear", "quadratic", "none"] = "linear"
    select_rounds: int = 1
    preset: Optional[Literal["reference"]] = None

    def __post_init__(self):
        super().__post_init__()
        if self.forgetting_threshold < 0:
            raise PracError(f"data_selection.forgetting_threshold = {self.forgetting_threshold} must be 0 or more")
        if self.select_rounds < 0:
            raise PracError(f"data_selection.select_rounds = {self.select_rounds} must be 0 or more")


def _set_positions(context, level: int) -> torch.Tensor:
    index = PracIndex.load(context.run_dir.prac_round_path(level))
    return index.positions_in(context.train.row_ids, f"round {level} set", labels=context.train.labels)


class PracSelection(EarlyBirdStopping, DataSelectionStrategy):
    name = "prac"
    Options = PracOptions

    def __init__(self, options, context):
        super().__init__(options, context)
        self.tracker: Optional[ForgettingTracker] = None

    def positions_for_level(self, level: int):
        return None if level == 0 else _set_positions(self.context, level - 1)

    def batch_observer(self, level: int):
        self.tracker = ForgettingTracker(self.context.train_size, self.context.device)
        return self.tracker.update

    def epoch_hook(self, level: int):
        """Fold the epoch into the forgetting counts, then ask early-bird (when on) whether to stop."""
        judge = self.new_early_bird()

        def hook(epoch: int, model: torch.nn.Module) -> bool:
            self.tracker.end_epoch(max_over_processes)
            return judge is not None and judge(epoch, model)

        return hook

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        super().load_state_dict(state)

    def end_level(self, level: int, model: torch.nn.Module) -> dict:
        opts, context = self.options, self.context
        self.tracker.end_epoch(max_over_processes)  # the level's last (possibly partial) epoch
        cet = self.tracker.critical(opts.forgetting_threshold).cpu()
        dense_file = context.run_dir.dense_predictions_path
        # the whole split, un-augmented, each process scoring its share (see `predictions`)
        current = predictions(model, context.train_source, context.eval_batch_size).cpu()  # one forward pass per example in all
        if level == 0:
            if context.is_main_process:
                atomic_save_safetensors({"predictions": current}, dense_file)
            cep = None  # CEP needs a sparse model: none yet
        else:
            cep = current != load_safetensors(dense_file, what="dense predictions")["predictions"]
        selected = select_round(cet, cep, opts.criteria, if_empty=(
            f"the PrAC set of round {level} is empty (no example forgotten more than {opts.forgetting_threshold} times"
            f"{'' if level == 0 else ' nor changed by pruning'}); lower data_selection.forgetting_threshold or train longer"))
        if context.is_main_process:
            self._write(level, selected, model)
        context.wait_for_everyone()
        trained = int((self.tracker.presentations > 0).sum())
        return {
            "prac_set_size": int(selected.positions.numel()),
            "prac_set_fraction": selected.positions.numel() / context.train_size,
            "cet_count": int(cet.sum()),
            "cep_count": int(selected.cep.sum()),
            "never_learned_count": int(self.tracker.never_learned.sum()),
            "examples_trained": trained,
            "selection_forward_passes": context.train_size,
        }

    def _write(self, level, selected, model) -> None:
        context, opts = self.context, self.options
        provenance = dict(context.provenance)
        run_dir = context.run_dir
        write_round([run_dir.prac_round_path(level), run_dir.final_set_path], selected, self.tracker, context.train.row_ids,
                    context.train.labels, context.dataset_signature, provenance.pop("model"), model, opts.forgetting_threshold,
                    context.class_names, "prac_plugin PrAC selection", round=level, **provenance)
