"""Published per-example scores (C-scores, EL2N, forgetting counts, memorization) as PrAC index files.

Such scores are published as ``numpy.savez`` files (C-scores for CIFAR-10/100: ``labels`` and ``scores``), plain
``.npy`` arrays, or CSV tables with one row per example. `index_from_scores` matches them to a dataset split by
position or by an id column (the row number in the split), checks the file's labels against the dataset's, keeps
the rows a rule picks (``top:50%``, ``bottom:30%``, ``top:1000``, ``above:0.8``, ``below:0.2``) and writes a regular
index file: it works wherever one does (``data_selection: index``, the timm hook, ``prac index compare``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..version import __version__
from ..errors import PracError
from ..errors import not_a_file
from .format import PracIndex

RULES = ("top", "bottom", "above", "below")


@dataclass
class Scores:
    """One file's scores, in file order, with the labels and row ids it carries (None where it has none)."""

    values: torch.Tensor
    labels: Optional[torch.Tensor]
    ids: Optional[torch.Tensor]
    columns: str  # where the values came from, for the metadata


def _column(rows: list[dict], name: str, path: str, kind: type):
    if name not in rows[0]:
        raise PracError(f"scores file {path!r} has no column {name!r}; columns: {', '.join(rows[0])}")
    try:
        return [kind(row[name]) for row in rows]
    except ValueError as exc:
        raise PracError(f"scores file {path!r}: column {name!r} holds a value that is not {kind.__name__}: {exc}") from None


def read_scores(path: str, score_key: str = "scores", label_key: Optional[str] = "labels", id_key: Optional[str] = None) -> Scores:
    """Scores from ``.npz`` (arrays ``score_key``, ``label_key``, ``id_key``), ``.npy`` or ``.csv``/``.tsv`` (columns)."""
    file = Path(path)
    problem = not_a_file(file)
    if problem:
        raise PracError(f"scores file {path!r} {problem}")
    suffix = file.suffix.lower()
    if suffix in (".npz", ".npy"):
        try:
            loaded = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise PracError(f"scores file {path!r} is not a readable numpy file ({exc})") from None
        if suffix == ".npy":
            arrays = {score_key: loaded}
        else:
            arrays = {key: loaded[key] for key in loaded.files}
            if score_key not in arrays:
                raise PracError(f"scores file {path!r} has no array {score_key!r}; arrays: {', '.join(arrays)} (set --score-key)")
        values = arrays[score_key]
        labels = arrays.get(label_key) if label_key else None
        ids = arrays.get(id_key) if id_key else None
        if id_key and ids is None:
            raise PracError(f"scores file {path!r} has no array {id_key!r}; arrays: {', '.join(arrays)}")
    elif suffix in (".csv", ".tsv"):
        with file.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        if not rows:
            raise PracError(f"scores file {path!r} has no rows")
        values = np.asarray(_column(rows, score_key, path, float))
        labels = np.asarray(_column(rows, label_key, path, int)) if label_key and label_key in rows[0] else None
        ids = np.asarray(_column(rows, id_key, path, int)) if id_key else None
    else:
        raise PracError(f"scores file {path!r}: use .npz, .npy, .csv or .tsv")
    values = np.asarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        raise PracError(f"scores file {path!r}: {score_key!r} must be one number per example (found {values.dtype}, shape {values.shape})")
    for name, array in (("labels", labels), ("ids", ids)):
        if array is not None and np.asarray(array).shape != values.shape:
            raise PracError(f"scores file {path!r}: {name} has shape {np.asarray(array).shape}, the scores {values.shape}")
    if not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        raise PracError(f"scores file {path!r}: the score of entry {first} is {values[first]}, not a finite number")
    as_long = lambda a: None if a is None else torch.from_numpy(np.asarray(a).astype(np.int64))  # noqa: E731
    return Scores(torch.from_numpy(values.astype(np.float64)), as_long(labels), as_long(ids), score_key)


def parse_rule(rule: str) -> tuple[str, float, bool]:
    """``top:50%`` -> ("top", 0.5, True); ``top:1000`` -> ("top", 1000, False); ``above:0.8`` -> ("above", 0.8, False)."""
    match = re.fullmatch(r"(top|bottom|above|below):(-?[0-9.eE+-]+)(%?)", rule.strip())
    if not match:
        raise PracError(f"--keep {rule!r} should be top:N, top:P%, bottom:N, bottom:P%, above:X or below:X")
    kind, number, percent = match.group(1), float(match.group(2)), bool(match.group(3))
    if kind in ("top", "bottom"):
        if percent and not 0 < number <= 100:
            raise PracError(f"--keep {rule!r}: a share must be in (0, 100]%")
        if not percent and (number < 1 or number != int(number)):
            raise PracError(f"--keep {rule!r}: a count must be a whole number of at least 1")
    elif percent or not math.isfinite(number):
        raise PracError(f"--keep {rule!r}: above/below take a score, not a share")
    return kind, number / 100 if percent else number, percent


def keep(values: torch.Tensor, rule: str) -> torch.Tensor:
    """The positions (in ``values``' order) a rule keeps; ties at a count's edge go to the lower position."""
    kind, number, percent = parse_rule(rule)
    if kind in ("above", "below"):
        chosen = (values > number) if kind == "above" else (values < number)
        return chosen.nonzero().squeeze(1)
    count = round(number * values.numel()) if percent else int(number)
    if count > values.numel():
        raise PracError(f"--keep {rule!r} asks for {count} examples; the file scores {values.numel()}")
    order = torch.sort(values, descending=kind == "top", stable=True).indices
    return order[: max(1, count)].sort().values


def index_from_scores(scores: Scores, signature: dict[str, str], labels: torch.Tensor, rule: str, source: str,
                      class_names: Optional[list[str]] = None) -> PracIndex:
    """An index file of the rows ``rule`` keeps, the scores matched to a split (its ``signature`` and ``labels``)."""
    num_rows = int(signature["num_rows"])
    if scores.ids is None:
        if scores.values.numel() != num_rows:
            raise PracError(f"{source} scores {scores.values.numel()} examples, {signature['dataset']} split {signature['split']} has "
                            f"{num_rows} rows: matched by position they must be equal (or give an id column)")
        rows = torch.arange(num_rows)
    else:
        rows = scores.ids
        bad = rows[(rows < 0) | (rows >= num_rows)]
        if bad.numel():
            raise PracError(f"{source}: id {int(bad[0])} is outside the split's rows 0..{num_rows - 1}")
        if rows.unique().numel() != rows.numel():
            raise PracError(f"{source}: ids repeat (row {int(rows[rows.bincount()[rows] > 1][0])} appears more than once)")
    if scores.labels is not None:
        differ = (scores.labels != labels[rows]).nonzero().squeeze(1)
        if differ.numel():
            first = int(differ[0])
            raise PracError(f"{source}: the label of row {int(rows[first])} is {int(scores.labels[first])} in the file, "
                            f"{int(labels[rows[first]])} in {signature['dataset']} split {signature['split']}: another order or dataset")
    kept = keep(scores.values, rule)
    if kept.numel() == 0:
        raise PracError(f"--keep {rule!r} keeps no example (scores from {float(scores.values.min()):g} to {float(scores.values.max()):g})")
    digest = hashlib.sha256(scores.values.numpy().tobytes()).hexdigest()
    metadata = {
        **signature, "created_by": "prac index from-scores", "package_version": __version__, "criteria": f"scores {rule}",
        "scores_file": Path(source).name, "scores_sha256": digest, "score_key": scores.columns,
        "matched_by": "position" if scores.ids is None else "id column", "labels_checked": str(scores.labels is not None),
    }
    if class_names:
        metadata["class_names"] = json.dumps(class_names)
    statistics = {"score": scores.values[kept].to(torch.float32), "labels": labels[rows[kept]]}
    return PracIndex(rows[kept], metadata, statistics)
