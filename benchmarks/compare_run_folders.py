"""Are two run folders the same result? Every safetensors file bit-equal (NaN equal to NaN), every JSON file equal
except wall-clock times, the package version and the run's own path, and the recorded recipes (recipe.yaml, the
run's own copy, the one in summary.json) equal: equal tensors under different recorded recipes are not the same run.
Paths inside the folders' parents are compared relative to them (a run that read its sibling, as the quick start's
random-subset control reads the PrAC run's sizes, names that sibling's path).

Used to show that a refactor keeps results bit-identical: run a recipe before and after the change, then
    python benchmarks/compare_run_folders.py runs/before runs/after [--added KEY ...]
``--added KEY``: a key the change added to the records and recipes (e.g. ``sharding``, a new ``train`` key with
its default), left out of the comparison on both sides; everything else must still match. Exit status 0 when identical. The run folder's lock file (.prac.lock) is not a result and is not compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file

TIMING = ("wall_time", "train_time", "elapsed", "seconds")  # in a key; and any key ending in _s (seconds)
IGNORED_FILES = {".prac.lock"}


def without_timing(value, added: tuple = ()):
    if isinstance(value, dict):
        return {k: without_timing(v, added) for k, v in value.items()
                if not (any(t in k for t in TIMING) or k.endswith("_s")) and k not in ("run", "package_version", *added)}
    if isinstance(value, list):
        return [without_timing(v, added) for v in value]
    return value


def without(value, keys: tuple):
    """``value`` with the keys ``keys`` left out at every depth (a recorded recipe's new key)."""
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        return False
    for key in x:
        p, q = x[key], y[key]
        if p.dtype != q.dtype or p.shape != q.shape:
            return False
        equal = (p == q) | (p.isnan() & q.isnan()) if p.is_floating_point() else p == q
        if not bool(equal.all()):
            return False
    return True


def read(root: Path, rel: Path) -> str:
    return (root / rel).read_text().replace(str(root.resolve().parent), "<parent>")


def compare(a: Path, b: Path, added: tuple = ()) -> list[str]:
    files = [sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name not in IGNORED_FILES) for root in (a, b)]
    problems = [f"only in one folder: {sorted(map(str, set(files[0]) ^ set(files[1])))}"] if files[0] != files[1] else []
    for rel in sorted(set(files[0]) & set(files[1])):
        if rel.suffix == ".safetensors" and not same_tensors(a / rel, b / rel):
            problems.append(f"tensors differ: {rel}")
        elif rel.suffix == ".json" and without_timing(json.loads(read(a, rel)), added) != without_timing(json.loads(read(b, rel)), added):
            problems.append(f"JSON differs: {rel}")
        elif rel.suffix == ".yaml" and without(yaml.safe_load(read(a, rel)), added) != without(yaml.safe_load(read(b, rel)), added):
            problems.append(f"recipe differs: {rel}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--added", action="append", default=[], metavar="KEY", help="a JSON key the change added (repeatable)")
    args = parser.parse_args(argv)
    a, b = args.a, args.b
    problems = compare(a, b, tuple(args.added))
    count = sum(1 for p in a.rglob("*") if p.is_file() and p.name not in IGNORED_FILES)
    print("\n".join(problems) if problems else f"{count} files compared: identical (timings aside)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
