"""PrAC index files (``*.prac.safetensors``): a set of training rows, portable across architectures.

The file holds the sorted source-row indices of the set and optional per-row statistics, plus metadata
naming the dataset and a content signature of it (SHA-256 of the label column and of the feature schema;
a ``datasets`` fingerprint is not portable: it hashes local paths and times). Loading validates the file
against the dataset and refuses a mismatch, naming the field; nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open

from ..errors import PracError
from ..io import atomic_save_safetensors

FORMAT = "prac-index"
FORMAT_VERSION = 1
SUFFIX = ".prac.safetensors"
STATISTICS = ("forgetting", "never_learned", "prune_disagreement")
# fields compared when a file is loaded against a dataset; files_sha256 (ordered file list) only where both have it
CHECKED_FIELDS = {"num_rows": "row count", "labels_sha256": "label hash", "features_sha256": "feature schema hash",
                  "files_sha256": "file list hash"}


def labels_sha256(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def schema_sha256(features_json: str) -> str:
    return hashlib.sha256(features_json.encode()).hexdigest()


def signature(dataset: str, config, revision, split: str, labels: torch.Tensor, label_column: str,
              features_json: str) -> dict[str, str]:
    """The metadata that ties an index file to a training split: names, row count and content hashes."""
    return {
        "dataset": str(dataset),
        "dataset_config": str(config),
        "dataset_revision": str(revision),
        "split": str(split),
        "num_rows": str(int(labels.numel())),
        "label_column": label_column,
        "labels_sha256": labels_sha256(labels),
        "features_sha256": schema_sha256(features_json),
    }


def dataset_signature(bundle) -> dict[str, str]:
    """`signature` of a `DataBundle`'s source training split (before a validation set is carved out)."""
    info = bundle.info
    return signature(info.get("path"), info.get("config"), info.get("revision"), info.get("train_split"),
                     bundle.source_labels, bundle.label_column, bundle.features_json)


@dataclass
class PracIndex:
    """Sorted source rows of a set, per-row statistics (aligned with ``rows``) and string metadata."""

    rows: torch.Tensor
    metadata: dict[str, str]
    statistics: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        self.rows = self.rows.to(torch.int64)
        if self.rows.numel() > 1 and not bool((self.rows[1:] > self.rows[:-1]).all()):
            order = self.rows.argsort()
            self.rows = self.rows[order]
            self.statistics = {k: v[order] for k, v in self.statistics.items()}
            if bool((self.rows[1:] == self.rows[:-1]).any()):
                raise PracError("index rows contain duplicates")

    def __len__(self) -> int:
        return int(self.rows.numel())

    @property
    def num_rows(self) -> int:
        return int(self.metadata.get("num_rows", -1))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if not path.name.endswith(SUFFIX):
            raise PracError(f"index file name {path.name!r} should end with {SUFFIX}")
        if len(self) == 0:
            raise PracError("refusing to write an empty index set")
        metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), **self.metadata, "size": str(len(self))}
        atomic_save_safetensors({"rows": self.rows, **self.statistics}, path, metadata)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PracIndex":
        """Read an index file (local path or ``hf://`` path); a corrupt or foreign file is a `PracError`."""
        local = resolve_path(str(path))
        try:
            with safe_open(local, framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise PracError(f"index file {str(path)!r} is corrupt or not a safetensors file ({exc})") from None
        if metadata.get("format") != FORMAT or "rows" not in tensors:
            raise PracError(f"{str(path)!r} is not a PrAC index file (format {metadata.get('format')!r})")
        if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
            raise PracError(f"index file {str(path)!r} has format version {metadata['format_version']}; this prac_plugin reads up to {FORMAT_VERSION}")
        rows = tensors.pop("rows")
        if rows.ndim != 1 or rows.dtype != torch.int64:
            raise PracError(f"index file {str(path)!r}: rows must be a 1-D int64 tensor")
        if str(len(rows)) != metadata.get("size", str(len(rows))):
            raise PracError(f"index file {str(path)!r} is truncated: {len(rows)} rows, metadata says {metadata['size']}")
        if len(rows) == 0:
            raise PracError(f"index file {str(path)!r} holds an empty set")
        for name, values in tensors.items():
            if values.shape[0] != len(rows):
                raise PracError(f"index file {str(path)!r}: statistic {name!r} has {values.shape[0]} entries for {len(rows)} rows")
        return cls(rows, metadata, tensors)

    def check_dataset(self, signature: dict[str, str], path: str = "index file") -> None:
        """Refuse a file made for another dataset or split: row count and label hash must match."""
        for key, what in CHECKED_FIELDS.items():
            mine, theirs = self.metadata.get(key), signature.get(key)
            if mine is not None and theirs is not None and mine != theirs:
                raise PracError(
                    f"{path} does not match the dataset: {key} ({what}) is {mine} in the file, {theirs} for "
                    f"{signature['dataset']} split {signature['split']}; it was made for {self.metadata.get('dataset')} "
                    f"split {self.metadata.get('split')}"
                )
        out_of_range = self.rows[(self.rows < 0) | (self.rows >= int(signature["num_rows"]))]
        if out_of_range.numel():
            raise PracError(f"{path} has row {int(out_of_range[0])} outside 0..{int(signature['num_rows']) - 1}")

    def positions_in(self, row_ids: torch.Tensor, path: str = "index file") -> torch.Tensor:
        """Positions of this set's rows within a split whose examples are source rows ``row_ids``."""
        lookup = torch.full((int(max(int(row_ids.max()), int(self.rows.max()))) + 1,), -1, dtype=torch.int64)
        lookup[row_ids] = torch.arange(row_ids.numel())
        positions = lookup[self.rows]
        missing = int((positions < 0).sum())
        if missing:
            raise PracError(
                f"{path}: {missing} of its {len(self)} rows are not in the training split (held out for validation?); "
                "use the data.val_fraction and data.split_seed it was made with "
                f"({self.metadata.get('val_fraction', '?')}, {self.metadata.get('split_seed', '?')}) or data.val_split"
            )
        return positions

    def class_counts(self, source_labels: Optional[torch.Tensor] = None) -> dict[int, int]:
        labels = self.statistics.get("labels")
        if labels is None and source_labels is not None:
            labels = source_labels[self.rows]
        if labels is None:
            return {}
        values, counts = labels.unique(return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


def resolve_path(path: str) -> str:
    """A local file for ``path``; ``hf://`` paths are fetched through huggingface_hub's file system."""
    if path.startswith("hf://"):
        from huggingface_hub import HfFileSystem

        try:
            return HfFileSystem().get_file(path, _cache_path(path)) or _cache_path(path)
        except Exception as exc:  # offline, missing repo or file: one clear line
            raise PracError(f"index file {path!r} could not be fetched from the Hub: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not Path(path).is_file():
        raise PracError(f"index file {path!r} does not exist")
    return path


def _cache_path(hf_path: str) -> str:
    folder = Path(os.environ.get("PRAC_CACHE", Path.home() / ".cache" / "prac_plugin")) / "hub"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / hashlib.sha256(hf_path.encode()).hexdigest()[:16]) + SUFFIX


def describe(index: PracIndex) -> dict:
    """Size, fraction, class balance and provenance of an index file, for ``prac index inspect``."""
    meta = index.metadata
    total = index.num_rows
    counts = index.class_counts()
    return {
        "size": len(index),
        "num_rows": total,
        "fraction": len(index) / total if total > 0 else None,
        "class_counts": counts,
        "provenance": {k: meta[k] for k in sorted(meta) if k not in ("format", "format_version", "size", "class_names")},
        "statistics": sorted(index.statistics),
        "class_names": json.loads(meta["class_names"]) if "class_names" in meta else [],
    }


def compare(a: PracIndex, b: PracIndex) -> dict:
    """Overlap, Jaccard index and per-class sizes of two index files over the same dataset."""
    both = torch.isin(a.rows, b.rows)
    overlap = int(both.sum())
    union = len(a) + len(b) - overlap
    keys = ("num_rows", "labels_sha256")
    differing = [k for k in keys if k in a.metadata and k in b.metadata and a.metadata[k] != b.metadata[k]]
    per_class = {}
    labels_a, labels_b = a.statistics.get("labels"), b.statistics.get("labels")
    if labels_a is not None and labels_b is not None:
        names = json.loads(a.metadata.get("class_names", "[]"))
        for label in sorted(set(labels_a.tolist()) | set(labels_b.tolist())):
            name = names[label] if label < len(names) else label
            per_class[name] = {
                "a": int((labels_a == label).sum()), "b": int((labels_b == label).sum()),
                "both": int(((labels_a == label) & both).sum()),
            }
    return {
        "size_a": len(a), "size_b": len(b), "overlap": overlap, "only_a": len(a) - overlap, "only_b": len(b) - overlap,
        "jaccard": overlap / union if union else 1.0, "per_class": per_class,
        "same_dataset": not differing, "dataset_difference": ", ".join(differing),
    }
