"""The PrAC set of a round and its index file: one rule for `prac run` and the timm hook.

CET (forgotten more than E_F times during the round, or never learned) united with CEP (eval-mode predictions
of the dense round-0 model and of the current one differ on the un-augmented training split). `select_round`
chooses a round's rows, `write_round` writes them as an index file; both callers (`PracSelection.end_level`, the
timm hook's ``finish``) only gather the statistics and say where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ...errors import PracError
from ...version import __version__
from .forgetting import ForgettingTracker
from ...index_files.format import PracIndex

CRITERIA = ("both", "cet", "cep")


def prune_disagreement(dense: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """CEP: rows whose dense-model and current-model predictions differ (both computed in eval mode, no augmentation)."""
    if dense.shape != current.shape:
        raise ValueError(f"predictions of {dense.numel()} and {current.numel()} rows cannot be compared")
    return dense != current


def critical_set(cet: torch.Tensor, cep: torch.Tensor, criteria: str = "both") -> torch.Tensor:
    """The rows a round selects: CET, CEP or (the paper's PrAC set) their union."""
    if criteria not in CRITERIA:
        raise ValueError(f"unknown PrAC criteria {criteria!r}")
    return {"both": cet | cep, "cet": cet, "cep": cep}[criteria]


def weight_density(model: torch.nn.Module) -> float:
    """Fraction of nonzero entries over the model's weight matrices and kernels (biases and norms excluded)."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    total = sum(p.numel() for p in weights)
    return sum(int((p != 0).sum()) for p in weights) / total if total else 1.0


def set_metadata(signature: dict[str, str], model_name: str, model: torch.nn.Module, criteria: str, threshold: int,
                 class_names: list[str], created_by: str, **extra) -> dict[str, str]:
    """Index-file metadata of a PrAC set: the dataset's signature and how and with what the set was chosen."""
    return {
        **signature, **{k: str(v) for k, v in extra.items()},
        "model": model_name,
        "criteria": criteria,
        "forgetting_threshold": str(threshold),
        "class_names": json.dumps(class_names),
        "package_version": __version__,
        "created_by": created_by,
        "weight_density": f"{weight_density(model):.6f}",
    }


def set_index(tracker: ForgettingTracker, positions: torch.Tensor, row_ids: torch.Tensor, labels: torch.Tensor,
              cet: torch.Tensor, cep: torch.Tensor, metadata: dict[str, str]) -> PracIndex:
    """The set at ``positions`` of a split (source rows ``row_ids``), with its per-row statistics."""
    statistics = {
        "labels": labels[positions],
        "forgetting": tracker.forgetting_scores().cpu()[positions],
        "never_learned": tracker.never_learned.cpu()[positions],
        "cet": cet[positions],
        "prune_disagreement": cep[positions],
    }
    return PracIndex(row_ids[positions], metadata, statistics)


@dataclass
class RoundSet:
    """The rows a round selected: the criteria applied, CET and CEP over the split's rows, and the chosen positions."""

    criteria: str  # "both", "cet", "cep", or "full" (every row: CEP was asked for and there is no sparse model yet)
    cet: torch.Tensor
    cep: torch.Tensor
    positions: torch.Tensor


def select_round(cet: torch.Tensor, cep: Optional[torch.Tensor], criteria: str, if_empty: str) -> RoundSet:
    """The rows a round selects by ``criteria``. CEP needs a sparse model and the dense one's predictions: a round
    without them (``cep`` None: round 0 of `prac run`, the timm hook without ``--prac-dense``) selects CET, or every
    row when only CEP was asked for. An empty set is a `PracError` saying ``if_empty``."""
    if criteria not in CRITERIA:
        raise ValueError(f"unknown PrAC criteria {criteria!r}")
    if cep is None:
        applied, cep = ("full" if criteria == "cep" else "cet"), torch.zeros_like(cet)
        chosen = torch.ones_like(cet) if applied == "full" else cet
    else:
        applied, chosen = criteria, critical_set(cet, cep, criteria)
    positions = chosen.nonzero().squeeze(1)
    if positions.numel() == 0:
        raise PracError(if_empty)
    return RoundSet(applied, cet, cep, positions)


def write_round(paths: Sequence[str | Path], selected: RoundSet, tracker: ForgettingTracker, row_ids: torch.Tensor,
                labels: torch.Tensor, signature: dict[str, str], model_name: str, model: torch.nn.Module, threshold: int,
                class_names: list[str], created_by: str, **extra) -> PracIndex:
    """Write a round's set (`select_round`) as an index file at each of ``paths``, with its per-row statistics and
    the metadata saying how and with what it was chosen (`set_metadata`; ``extra``: further provenance)."""
    metadata = set_metadata(signature, model_name, model, selected.criteria, threshold, class_names, created_by, **extra)
    index = set_index(tracker, selected.positions, row_ids, labels, selected.cet, selected.cep, metadata)
    for path in paths:
        index.save(path)
    return index
