"""The campaign's ledger (issue 25): one folder per finished cell, and which cells to run next.

    benchmarks/results/cells/<cell id>/cell.json     figures, recipe, device, versions, wall time, steps
    benchmarks/results/cells/<cell id>/state.tar.gz  the run as the cell left it, for the chain's next cell
    benchmarks/results/cells/<chain>-L00/rewind.tar.gz  the chain's rewind point (weights, step), kept once
    benchmarks/results/cells/<cell id>/artifacts.tar.gz  a finished chain's final mask, PrAC index files, summary

A cell's folder is built under a hidden name and renamed into place with its cell.json inside, so a cell
killed mid-run (or mid-write) leaves no entry. An entry counts as done only while its recipe fingerprint
matches the recipe the campaign would run now: change the schedule in recipes/campaign/ and every earlier
cell is stale, run again, never mixed with the new ones.

After copying a GPU call's cells.tar.gz into the ledger, drop the states no pending cell needs:

    tar -xzf cells.tar.gz -C benchmarks/results/cells && python benchmarks/campaign_ledger.py tidy
    python benchmarks/campaign_ledger.py status        # done / stale / pending / ready, per experiment
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Callable, Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_cells import ROOT, Cell, cells, experiment, load_recipe  # noqa: E402

LEDGER = ROOT / "benchmarks" / "results" / "cells"
ENTRY = "cell.json"
STATE = "state.tar.gz"
REWIND = "rewind.tar.gz"  # the chain's rewind point, kept once in its level-0 cell (every level's state would repeat it)
ARTIFACTS = "artifacts.tar.gz"
MACHINE_PATHS = (("data", "data_files"), ("data_selection", "sizes_from"), ("data_selection", "path"))


def cell_recipe(cell: Cell, scale: Optional[dict] = None) -> dict:
    """The recipe a cell runs, before the machine's paths are filled in: its experiment's, at its seed."""
    raw = load_recipe(experiment(cell.experiment), scale)
    raw["train"]["seed"] = cell.seed
    if raw["data_selection"]["strategy"] == "random":
        raw["data_selection"]["seed"] = cell.seed
    raw.setdefault("run", {}).update(tracker="none", checkpoint_every="none")
    return raw


def fingerprint(recipe: dict) -> str:
    """What makes a cell's result, without the paths that differ between machines."""
    raw = json.loads(json.dumps(recipe))
    for section, key in MACHINE_PATHS:
        raw.get(section, {}).pop(key, None)
    raw.pop("run", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


class Ledger:
    def __init__(self, path: Path):
        self.path = Path(path)

    def entries(self) -> dict[str, dict]:
        """Every finished cell's cell.json (hidden, half-written folders are not entries)."""
        if not self.path.is_dir():
            return {}
        found = {}
        for entry in sorted(self.path.glob(f"*/{ENTRY}")):
            if entry.parent.name.startswith("."):
                continue
            try:
                found[entry.parent.name] = json.loads(entry.read_text())
            except ValueError:
                continue
        return found

    def done(self, all_cells: Iterable[Cell], scale: Optional[dict] = None) -> set[str]:
        """Cells with an entry whose recipe fingerprint is the one they would run with now."""
        entries = self.entries()
        return {c.id for c in all_cells if c.id in entries and entries[c.id].get("fingerprint") == fingerprint(cell_recipe(c, scale))}

    def folder(self, cell_id: str) -> Path:
        return self.path / cell_id

    def write(self, cell_id: str, entry: dict, files: dict[str, Path]) -> Path:
        """The cell's folder, whole or not at all: files copied in, cell.json last, then renamed into place."""
        self.path.mkdir(parents=True, exist_ok=True)
        partial = self.path / f".partial-{cell_id}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for name, source in files.items():
            shutil.copyfile(source, partial / name)
        (partial / ENTRY).write_text(json.dumps(entry, indent=1, default=str) + "\n")
        final = self.folder(cell_id)
        if final.exists():  # a stale entry of the same cell
            shutil.rmtree(final)
        os.replace(partial, final)
        return final

    def rewind(self, chain: str) -> Path:
        return self.folder(f"{chain}-L00") / REWIND

    def clear_partials(self) -> None:
        for partial in self.path.glob(".partial-*"):
            shutil.rmtree(partial, ignore_errors=True)

    def latest_state(self, chain: str, done: set[str], upto: Optional[int] = None, artifacts: bool = False) -> Optional[Path]:
        """The state archive of the chain's highest done level (at most ``upto``), if it is still there; with
        ``artifacts``, a finished chain's artifacts archive will do (it keeps the PrAC index files)."""
        levels = sorted((int(name.rsplit("-L", 1)[1]), name) for name in done if name.startswith(chain + "-L"))
        for level, name in reversed(levels):
            if upto is not None and level > upto:
                continue
            for file in (STATE, ARTIFACTS) if artifacts else (STATE,):
                path = self.folder(name) / file
                if path.is_file():
                    return path
        return None


def ready(cell: Cell, done: set[str]) -> bool:
    return all(d in done for d in cell.depends)


def choose(all_cells: list[Cell], done: set[str], busy: set[str], slots: int, seconds_left: float,
           cost_s: Callable[[Cell], float], open_chains: Optional[set[str]] = None, max_open: Optional[int] = None) -> list[Cell]:
    """The cells to start now, in priority order: not done or busy, their dependencies done, each expected to
    finish within ``seconds_left``, no more than ``slots`` running in all. With ``max_open``, a cell that would
    open a chain beyond ``open_chains`` waits while that many are open (every open chain keeps a state of about
    2 MiB in the ledger, and the ledger travels to the GPU machine inside a 64 MiB limit)."""
    picked: list[Cell] = []
    chains = set(open_chains or ())
    for cell in all_cells:
        if len(busy) + len(picked) >= slots:
            break
        if cell.id in done or cell.id in busy or not ready(cell, done):
            continue
        if max_open is not None and cell.chain not in chains and len(chains) >= max_open:
            continue
        if cost_s(cell) <= seconds_left:
            picked.append(cell)
            chains.add(cell.chain)
    return picked


def open_chains(ledger: "Ledger", all_cells: list[Cell], done: set[str]) -> set[str]:
    """Chains holding a state in the ledger (started, or finished with retrain cells pending)."""
    return {c.chain for c in all_cells if c.kind == "level" and c.id in done and (ledger.folder(c.id) / STATE).is_file()}


def concurrency(all_cells: list[Cell], done: set[str], busy: set[str], max_slots: int, seconds_left: float,
                cost_s: Callable[[Cell, int], float], **limits) -> int:
    """How many cells to run side by side: the most (up to ``max_slots``) for which as many ready cells each fit
    ``seconds_left`` at the slowdown of that many processes; at least 1. ``limits``: `choose`'s chain limits."""
    for k in range(max_slots, 1, -1):
        if len(choose(all_cells, done, busy, k, seconds_left, lambda c: cost_s(c, k), **limits)) + len(busy) >= k:
            return k
    return 1


def readers(chain: str, all_cells: list[Cell]) -> list[Cell]:
    """Cells that need the chain's last state with its weights: its retrain cells (the experiments drawing on
    its PrAC sets read them from the artifacts that stay)."""
    return [c for c in all_cells if c.chain == chain and c.kind == "retrain"]


ARTIFACT_SUFFIXES = (".prac.safetensors", "summary.json", "summary.md", "rewind.json", "recipe.yaml")


def slim(state: Path, target: Path) -> None:
    """A finished chain's artifacts from its state: the final level's mask, the PrAC index files, the summary."""
    with tarfile.open(state) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        masks = sorted(m.name for m in members if m.name.endswith("mask.safetensors"))
        keep = {m.name for m in members if m.name.endswith(ARTIFACT_SUFFIXES)} | set(masks[-1:])
        partial = target.with_name("." + target.name)
        with tarfile.open(partial, "w:gz") as out:
            for m in members:
                if m.name in keep:
                    out.addfile(m, archive.extractfile(m))
    os.replace(partial, target)


def tidy(ledger: Ledger, all_cells: list[Cell], scale: Optional[dict] = None) -> list[str]:
    """Remove the state archives no pending cell can need; what was removed or slimmed."""
    done = ledger.done(all_cells, scale)
    by_chain: dict[str, list[Cell]] = {}
    for c in all_cells:
        if c.kind == "level":
            by_chain.setdefault(c.chain, []).append(c)
    changes = []
    for cell_id in sorted(set(ledger.entries()) - done):  # run with an older recipe: nothing will continue from it
        for name in (STATE, REWIND):
            state = ledger.folder(cell_id) / name
            if state.is_file():
                state.unlink()
                changes.append(f"removed {cell_id}/{name} (a stale entry: its recipe is not the campaign's any more)")
    for chain, chain_cells in by_chain.items():
        finished = [c for c in chain_cells if c.id in done]
        if not finished:
            continue
        latest = max(finished, key=lambda c: c.level)
        for c in finished:
            state = ledger.folder(c.id) / STATE
            if c is not latest and state.is_file():
                state.unlink()
                changes.append(f"removed {c.id}/{STATE} (superseded by {latest.id})")
        state = ledger.folder(latest.id) / STATE
        last_level = max(c.level for c in chain_cells)
        if state.is_file() and latest.level == last_level and all(r.id in done for r in readers(chain, all_cells)):
            slim(state, ledger.folder(latest.id) / ARTIFACTS)
            state.unlink()
            changes.append(f"slimmed {latest.id}/{STATE} to {ARTIFACTS} (the chain and its readers are done)")
            if ledger.rewind(chain).is_file():
                ledger.rewind(chain).unlink()
                changes.append(f"removed {chain}-L00/{REWIND} (the chain and its readers are done)")
    return changes


def status(ledger: Ledger, all_cells: list[Cell], scale: Optional[dict] = None) -> str:
    entries, done = ledger.entries(), ledger.done(all_cells, scale)
    lines = []
    for key in dict.fromkeys(c.experiment for c in all_cells):
        mine = [c for c in all_cells if c.experiment == key]
        stale = [c.id for c in mine if c.id in entries and c.id not in done]
        ready_now = [c.id for c in mine if c.id not in done and ready(c, done)]
        lines.append(f"{key}: {sum(c.id in done for c in mine)}/{len(mine)} done" + (f", {len(stale)} stale" if stale else "")
                     + (f"; ready: {', '.join(ready_now[:6])}" if ready_now else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("status", "tidy"))
    parser.add_argument("--ledger", type=Path, default=LEDGER)
    args = parser.parse_args()
    ledger, all_cells = Ledger(args.ledger), cells()
    if args.command == "tidy":
        ledger.clear_partials()
        print("\n".join(tidy(ledger, all_cells)) or "nothing to tidy")
    else:
        print(status(ledger, all_cells))


if __name__ == "__main__":
    main()
