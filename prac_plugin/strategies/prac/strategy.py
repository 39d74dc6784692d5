"""PrAC data selection (Zhang et al., ICML 2021).

``prac``: round 0 trains the dense model on the whole training split; after every round the PrAC set is
CET (examples of that round forgotten more than E_F times, or never learned) united with CEP (examples whose
prediction differs between the dense round-0 model and the current sparse one, on the whole split, eval mode,
no augmentation); the next round trains only on it.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ...errors import PracError
from ...rundir.files import atomic_save_safetensors, load_safetensors
from .disagreement import predictions
from .early_bird import EarlyBird
from .forgetting import ForgettingTracker, max_over_processes
from ...index_files.format import PracIndex
from .options import FINAL_SET, PRAC, EarlyBirdOptions, dense_predictions_path, round_path
from .sets import select_round, write_round
from ..base import DataSelectionStrategy


class EarlyBirdStopping:
    """A data-selection strategy whose levels may end by early-bird stopping (``options.early_bird``)."""

    options: EarlyBirdOptions
    context: Any
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


def _set_positions(context, level: int) -> torch.Tensor:
    index = PracIndex.load(round_path(context.run_dir.path, level))
    return index.positions_in(context.train.row_ids, f"round {level} set", labels=context.train.labels)


class PracSelection(EarlyBirdStopping, DataSelectionStrategy):
    spec = PRAC

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
        dense_file = dense_predictions_path(context.run_dir.path)
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
        write_round([round_path(context.run_dir.path, level), context.run_dir.path / FINAL_SET], selected, self.tracker,
                    context.train.row_ids, context.train.labels, context.dataset_signature, provenance.pop("model"), model,
                    opts.forgetting_threshold, context.class_names, "prac_plugin PrAC selection", round=level, **provenance)
