"""The PrAC set of a round and its index file: one rule for `prac run` and the timm hook.

CET (forgotten more than E_F times during the round, or never learned) united with CEP (eval-mode predictions
of the dense round-0 model and of the current one differ on the un-augmented training split).
"""

from __future__ import annotations

import json

import torch

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
