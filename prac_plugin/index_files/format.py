"""PrAC index files (``*.prac.safetensors``): a set of training rows, portable across architectures.

The file holds the sorted source-row indices of the set and optional per-row statistics, plus metadata
naming the dataset and a content signature of it (SHA-256 of the label column and of the feature schema;
a ``datasets`` fingerprint is not portable: it hashes local paths and times). Loading validates the file
against the dataset and refuses a mismatch, naming the field; nothing is silently dropped.

Format version 2 adds ``content_sha256``: a SHA-256 over every tensor and every metadata value (`content_sha256`
gives the byte layout), written at save and verified at load, so a file whose rows, statistics or metadata changed
after it was written is refused. It detects corruption and edits, not forgery: anyone can recompute it; the
per-row labels and the dataset signature are checked against the dataset besides. Version 1 files (written before
the checksum) still load, with every check but that one: there is nothing to verify; re-saving writes version 2.
A file claiming version 1 that carries a checksum has it verified, so a changed version digit does not skip it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open

from ..errors import PracError
from ..errors import not_a_file
from ..rundir.files import atomic_save_safetensors

FORMAT = "prac-index"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no content checksum
SUFFIX = ".prac.safetensors"
STATISTICS = ("forgetting", "never_learned", "prune_disagreement")
# fields compared when a file is loaded against a dataset; files_sha256 (ordered file list) only where both have it
CHECKED_FIELDS = {"num_rows": "row count", "labels_sha256": "label hash", "features_sha256": "feature schema hash",
                  "files_sha256": "file list hash"}
# without these a file cannot be tied to a dataset at all: refused when it is matched to one
SIGNATURE_FIELDS = ("num_rows", "labels_sha256", "features_sha256")
CHECKSUM_FIELD = "content_sha256"
# canonical dtype names (safetensors' own), part of the checksummed bytes; other dtypes are refused
DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
          torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64"}
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
FLAG_STATISTICS = ("never_learned", "cet", "prune_disagreement", "ever_correct", "last_correct")


def labels_sha256(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def schema_sha256(features_json: str) -> str:
    return hashlib.sha256(features_json.encode()).hexdigest()


class DatasetSignature(dict):
    """A signature (string fields, as stored in index files) that also carries the split's labels, so that
    `PracIndex.check_dataset` can compare a file's per-row labels with the dataset's without a new argument."""

    def __init__(self, fields: dict[str, str], labels: Optional[torch.Tensor] = None):
        super().__init__(fields)
        self.labels = labels


def signature(dataset: str, config, revision, split: str, labels: torch.Tensor, label_column: str,
              features_json: str) -> dict[str, str]:
    """The metadata that ties an index file to a training split: names, row count and content hashes."""
    return DatasetSignature({
        "dataset": str(dataset),
        "dataset_config": str(config),
        "dataset_revision": str(revision),
        "split": str(split),
        "num_rows": str(int(labels.numel())),
        "label_column": label_column,
        "labels_sha256": labels_sha256(labels),
        "features_sha256": schema_sha256(features_json),
    }, labels.detach().cpu())


def dataset_signature(bundle) -> dict[str, str]:
    """`signature` of a `DataBundle`'s source training split (before a validation set is carved out)."""
    info = bundle.info
    return signature(info.get("path"), info.get("config"), info.get("revision"), info.get("train_split"),
                     bundle.source_labels, bundle.label_column, bundle.features_json)


def _little_endian_bytes(values: torch.Tensor) -> bytes:
    flat = values.detach().cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy()
    if sys.byteorder == "big" and flat.element_size() > 1:  # the checksum is defined on little-endian bytes
        data = data.reshape(-1, flat.element_size())[:, ::-1]
    return data.tobytes()


def content_sha256(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of an index file's content, independent of how safetensors laid it out.

    Hashed, each piece preceded by its length as 8 little-endian bytes: the tag ``prac-index content v1``; for
    every tensor in name order a JSON header ``{"dtype", "name", "shape"}`` (sorted keys) and its elements as
    little-endian bytes in row-major order (bool as one byte 0/1); last the metadata as JSON (sorted keys,
    ASCII escapes) without ``content_sha256`` itself. Metadata is included because it is what ties the rows to a
    dataset (num_rows, label hash) and says what they mean (class_names).
    """
    digest = hashlib.sha256()

    def piece(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    piece(b"prac-index content v1")
    for name in sorted(tensors):
        values = tensors[name]
        header = {"name": name, "dtype": DTYPES.get(values.dtype, str(values.dtype)), "shape": list(values.shape)}
        piece(json.dumps(header, sort_keys=True).encode())
        piece(_little_endian_bytes(values))
    piece(json.dumps({k: v for k, v in metadata.items() if k != CHECKSUM_FIELD}, sort_keys=True).encode())
    return digest.hexdigest()


def _whole_number(metadata: dict[str, str], key: str, where: str, minimum: int) -> Optional[int]:
    """A metadata value that must be a plain decimal integer (as this package writes it), or None if absent."""
    value = metadata.get(key)
    if value is None:
        return None
    plain = isinstance(value, str) and 0 < len(value) <= 18 and value.isascii() and value.isdigit()  # 18 digits fit int64
    if not (plain and str(int(value)) == value and int(value) >= minimum):
        raise PracError(f"{where}: metadata {key} = {value!r} is not allowed; it must be a whole number of at least {minimum}, "
                        "written in plain digits")
    return int(value)


def _validate(tensors: dict[str, torch.Tensor], metadata: dict[str, str], where: str, verify_checksum: bool) -> None:
    """Every check a file must pass, the same at save and at load: a file this package writes always loads.

    Each failure is one `PracError` naming the field and what is allowed."""
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise PracError(f"{where}: metadata {key!r} = {value!r}; metadata keys and values must be strings")
    if metadata.get("format") != FORMAT or "rows" not in tensors:
        raise PracError(f"{where} is not a PrAC index file (format {metadata.get('format')!r}, tensors {', '.join(sorted(tensors)) or 'none'})")
    if "format_version" not in metadata:
        raise PracError(f"{where} has no metadata format_version; this prac_plugin reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    raw_version = metadata["format_version"]
    version = int(raw_version) if 0 < len(raw_version) <= 18 and raw_version.isascii() and raw_version.isdigit() else None
    if version is not None and version > FORMAT_VERSION:
        raise PracError(f"{where} has format version {raw_version}; this prac_plugin reads up to {FORMAT_VERSION}")
    if version not in READABLE_VERSIONS or str(version) != raw_version:
        raise PracError(f"{where}: metadata format_version = {raw_version!r} is not a known version; this prac_plugin reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}")
    for name, values in tensors.items():
        if values.dtype not in DTYPES:
            raise PracError(f"{where}: tensor {name!r} has dtype {values.dtype}; allowed: bool, (u)int8..int64, float16/bfloat16/32/64")
        if values.ndim == 0:
            raise PracError(f"{where}: tensor {name!r} is a scalar; rows and statistics hold one entry per row")
    rows = tensors["rows"]
    if rows.ndim != 1 or rows.dtype != torch.int64:
        raise PracError(f"{where}: rows must be a 1-D int64 tensor (found {rows.dtype}, shape {tuple(rows.shape)})")
    # verified wherever present, whatever version is claimed: a version digit changed to 1 does not skip it
    if verify_checksum and (version >= 2 or CHECKSUM_FIELD in metadata):
        stored = metadata.get(CHECKSUM_FIELD)
        if stored is None:
            raise PracError(f"{where} has no metadata {CHECKSUM_FIELD}, which every format version {version} file carries: "
                            "it was edited or not written by prac_plugin")
        actual = content_sha256(tensors, metadata)
        if stored != actual:
            raise PracError(f"{where}: its content changed after it was written ({CHECKSUM_FIELD} is {stored} in the file, "
                            f"{actual} for its rows, statistics and metadata); use the original file or write it again")
    size = _whole_number(metadata, "size", where, 1)
    if size is None and version >= 2:
        raise PracError(f"{where} has no metadata size, which every format version {version} file carries")
    if size is not None and size != len(rows):
        raise PracError(f"{where} is truncated: {len(rows)} rows, metadata says {metadata['size']}")
    if len(rows) == 0:
        raise PracError(f"{where} holds an empty set")
    if int(rows.min()) < 0:
        raise PracError(f"{where}: rows holds {int(rows.min())}; row numbers are 0 or more")
    steps = rows[1:] - rows[:-1]
    if rows.numel() > 1 and not bool((steps > 0).all()):
        at = int((steps <= 0).nonzero()[0]) + 1
        problem = "repeats" if int(steps[at - 1]) == 0 else f"comes after {int(rows[at - 1])}"
        raise PracError(f"{where}: rows must be sorted and distinct; row {int(rows[at])} (entry {at}) {problem}")
    num_rows = _whole_number(metadata, "num_rows", where, 1)
    if num_rows is not None and int(rows[-1]) >= num_rows:
        raise PracError(f"{where}: rows holds {int(rows[-1])}, outside the split's rows 0..{num_rows - 1} (metadata num_rows = {num_rows})")
    for name, values in tensors.items():
        if name != "rows" and values.shape[0] != len(rows):
            raise PracError(f"{where}: statistic {name!r} has {values.shape[0]} entries for {len(rows)} rows")
        if name in FLAG_STATISTICS and values.dtype != torch.bool:
            raise PracError(f"{where}: statistic {name!r} has dtype {values.dtype}; it is a per-row flag, stored as bool")
    names = None
    if "class_names" in metadata:
        try:
            names = json.loads(metadata["class_names"])
        except (ValueError, RecursionError):  # RecursionError: a deeply nested value
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PracError(f"{where}: metadata class_names = {metadata['class_names'][:80]!r} is not allowed; "
                            "it must be a JSON list of strings")
    labels = tensors.get("labels")
    if labels is not None:
        if labels.ndim != 1 or labels.dtype not in INTEGER_DTYPES:
            raise PracError(f"{where}: statistic 'labels' must be one integer class per row (found {labels.dtype}, shape {tuple(labels.shape)})")
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise PracError(f"{where}: statistic 'labels' holds {low} at row {int(rows[int(labels.argmin())])}; class labels are 0 or more")
        if names and high >= len(names):
            raise PracError(f"{where}: statistic 'labels' holds {high} at row {int(rows[int(labels.argmax())])}, but class_names "
                            f"lists {len(names)} classes (labels 0..{len(names) - 1})")


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

    @property
    def format_version(self) -> int:
        """The file format version this set was read from (the current one for a set made in memory)."""
        value = self.metadata.get("format_version", "")
        return int(value) if value in map(str, READABLE_VERSIONS) else FORMAT_VERSION

    def save(self, path: str | Path) -> Path:
        """Write the set as the current format version, with its content checksum; refuses what `load` would refuse."""
        path = Path(path)
        if not path.name.endswith(SUFFIX):
            raise PracError(f"index file name {path.name!r} should end with {SUFFIX}")
        if len(self) == 0:
            raise PracError("refusing to write an empty index set")
        if "rows" in self.statistics:
            raise PracError("a statistic cannot be called 'rows': that name holds the set's row numbers")
        tensors = {"rows": self.rows, **self.statistics}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        # what was read from an older file is rewritten as this version: its version, size and checksum are recomputed
        metadata = {k: str(v) for k, v in self.metadata.items() if k != CHECKSUM_FIELD}
        metadata.update({"format": FORMAT, "format_version": str(FORMAT_VERSION), "size": str(len(self))})
        _validate(tensors, metadata, f"index file {path.name!r}", verify_checksum=False)
        metadata[CHECKSUM_FIELD] = content_sha256(tensors, metadata)
        atomic_save_safetensors(tensors, path, metadata)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PracIndex":
        """Read an index file (local path or ``hf://`` path); a corrupt, changed, malformed or foreign file is a
        `PracError` naming the field. Version 1 files load with every check but the content checksum they lack."""
        local = resolve_path(str(path))
        where = f"index file {str(path)!r}"
        try:
            with safe_open(local, framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PracError(f"{where} is corrupt or not a safetensors file ({reason})") from None
        _validate(tensors, metadata, where, verify_checksum=True)
        return cls(tensors.pop("rows"), metadata, tensors)

    def check_dataset(self, signature: dict[str, str], path: str = "index file", labels: Optional[torch.Tensor] = None) -> None:
        """Refuse a file made for another dataset or split: the signature fields must be present and match, the rows
        lie in the split, and stored per-row labels equal the dataset's. ``labels`` (the split's, by source row)
        defaults to those a `signature`/`dataset_signature` result carries."""
        missing = [key for key in SIGNATURE_FIELDS if not self.metadata.get(key)]
        if missing:
            raise PracError(f"{path} has no dataset signature ({', '.join(missing)} missing from its metadata), so it cannot be "
                            "matched to a dataset safely; write it again with this prac_plugin (a prac run, prac index from-scores "
                            "or the timm hook)")
        missing = [key for key in SIGNATURE_FIELDS if not signature.get(key)]
        if missing:
            raise PracError(f"{path} cannot be matched: the dataset signature given lacks {', '.join(missing)}")
        for key, what in CHECKED_FIELDS.items():
            mine, theirs = self.metadata.get(key), signature.get(key)
            if mine is not None and theirs is not None and mine != theirs:
                raise PracError(
                    f"{path} does not match the dataset: {key} ({what}) is {mine} in the file, {theirs} for "
                    f"{signature.get('dataset')} split {signature.get('split')}; it was made for {self.metadata.get('dataset')} "
                    f"split {self.metadata.get('split')}"
                )
        out_of_range = self.rows[(self.rows < 0) | (self.rows >= int(signature["num_rows"]))]
        if out_of_range.numel():
            raise PracError(f"{path} has row {int(out_of_range[0])} outside 0..{int(signature['num_rows']) - 1}")
        labels = labels if labels is not None else getattr(signature, "labels", None)
        if labels is not None:
            if labels.numel() != int(signature["num_rows"]):
                raise ValueError(f"{labels.numel()} labels for a signature of {signature['num_rows']} rows")
            self._check_labels(labels[self.rows], path, f"{signature.get('dataset')} split {signature.get('split')}")

    def positions_in(self, row_ids: torch.Tensor, path: str = "index file", labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Positions of this set's rows within a split whose examples are source rows ``row_ids``; with ``labels``
        (the split's, aligned with ``row_ids``) the file's per-row labels are checked against them too."""
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
        if labels is not None:
            self._check_labels(labels[positions], path, "the training split")
        return positions

    def _check_labels(self, dataset_labels: torch.Tensor, path: str, dataset: str) -> None:
        """The file's per-row labels (where it stores them) against the dataset's at the same rows: a row that was
        changed, or rows of another order of the data, show up here even when every hash matches."""
        stored = self.statistics.get("labels")
        if stored is None:
            return
        differ = (stored.to(torch.int64) != dataset_labels.to(torch.int64).cpu()).nonzero()
        if differ.numel():
            at = int(differ[0])
            raise PracError(f"{path}: row {int(self.rows[at])} has label {int(stored[at])} in the file, {int(dataset_labels[at])} in "
                            f"{dataset}; the file's rows or labels were changed, or it was made for another order of the data")

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
    problem = not_a_file(path)
    if problem:
        raise PracError(f"index file {path!r} {problem}")
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
        "format_version": index.format_version,
        "content_sha256": meta.get(CHECKSUM_FIELD),  # verified by `PracIndex.load`; None for a version 1 file
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
