"""The campaign's cells stage (issue 25): run the pending cells that fit the time left, side by side, and write
each one that finishes to the ledger.

A level cell restores its chain's state from the ledger, runs `prac run` on the experiment's recipe and stops
the run once its level's metrics.json exists (the run would go on to the next level: that is the next cell).
A retrain cell runs `prac retrain --level L` on the chain's latest state. A cell still running at the stage's
deadline is killed and leaves no entry; one that fails is recorded in campaign.json and not retried in the
same call. New ledger entries come back from the GPU machine as one archive, cells.tar.gz.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_cells import CELL_OVERHEAD_S, SLOWEST_EPOCH_S, TIMM_EPOCHS, Cell, cells, experiment  # noqa: E402
from campaign_ledger import MACHINE_PATHS, REWIND, STATE, Ledger, cell_recipe, choose, concurrency, fingerprint, open_chains, tidy  # noqa: E402

LEVEL_FIGURES = ("level", "weights_remaining_pct", "sparsity_pct", "test_acc", "val_acc", "train_loss", "train_acc", "optimizer_steps",
                 "examples_seen", "train_examples", "wall_time_s", "train_time_s", "full_data_steps", "start_step", "total_steps",
                 "steps_per_epoch", "prac_set_size", "prac_set_fraction", "cet_count", "cep_count", "cts_search_steps",
                 "early_bird_epoch", "stopped_early", "mixed_precision", "compiled", "num_processes")
RETRAIN_FIGURES = ("level", "accuracy", "mean", "std", "training_steps", "finding_steps", "training_wall_time_s", "split", "seeds")
STATE_SKIP = ("checkpoints/", "init.safetensors", ".prac.lock", "curve.png")
REWIND_FILES = ("rewind.safetensors", "rewind.json", "rewind_optimizer.pt")  # in the chain's rewind.tar.gz, not its states


@dataclass
class Timing:
    """Seconds per full-data ResNet-20 epoch for one process alone, and the slowdown of each of ``processes``
    side by side (measured: 2.3 with 5 on the H200)."""

    epoch_s: float
    slowdown_measured: float
    basis: str
    processes: int = 5

    def slowdown(self, k: int) -> float:
        """Assumed linear between 1 (alone) and the measured slowdown of ``processes``; beyond, extrapolated."""
        return 1.0 + (self.slowdown_measured - 1.0) * (k - 1) / max(1, self.processes - 1)

    def cost_s(self, cell: Cell, k: int) -> float:
        return CELL_OVERHEAD_S + cell.epochs * self.epoch_s * self.slowdown(k)


@dataclass
class Job:
    cell: Cell
    folder: Path
    run: Path
    target: Path
    final: bool  # the run's last level: let the process end by itself (it writes the summary)
    args: list = field(default_factory=list)
    process: Optional[subprocess.Popen] = None
    started: float = 0.0
    peers: int = 1  # the most cells running at once while it ran
    restored: list = field(default_factory=list)


def timing(c, dry_run: bool) -> Timing:
    thr = c.record["stages"].get("throughput", {})
    single = thr.get("figures", {}).get("device_resident_epoch")
    slowdown = thr.get("concurrent", {}).get("slowdown_per_process")
    given = c.record.get("given_timing", {})
    if single and single.get("status") == "ok":
        if slowdown:
            return Timing(single["seconds_per_epoch"], slowdown, "this call's epoch time and side-by-side slowdown",
                          thr["concurrent"]["processes"])
        return Timing(single["seconds_per_epoch"], given.get("slowdown", 2.3), "this call's epoch time, slowdown of 5 processes "
                      + ("given" if given else "as measured on the H200 (2.3)"))
    if given:
        return Timing(given["epoch_seconds"], given["slowdown"], "epoch time and slowdown given on the command line")
    if dry_run:
        return Timing(1.0, 2.3, "dry run: 1 s per epoch assumed")
    return Timing(SLOWEST_EPOCH_S, 2.3, "the slowest H200 epoch measured so far (benchmarks/RESULTS.md), slowdown 2.3 measured with 5 processes")


def _extract(archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")


def _numbered(name: str, prefix: str) -> Optional[int]:
    """NN of ``level_NN/...`` or ``prac/round_NN...``; None for other names."""
    if not name.startswith(prefix):
        return None
    digits = name[len(prefix):len(prefix) + 2]
    return int(digits) if digits.isdigit() else None


def _pack_state(run: Path, level: int, target: Path) -> None:
    """What the chain's next cell needs, as the run stood when ``level`` was complete: recipe, rewind point,
    every level's mask and metrics up to ``level``, that level's weights, PrAC's sets up to it and predictions.

    The run was stopped only after ``level``'s metrics.json appeared, so it may have gone further (a small
    PrAC level can take less than a second): nothing of a later level goes into the state."""
    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(run.rglob("*")):
            name = path.relative_to(run).as_posix()
            if not path.is_file() or name.startswith(STATE_SKIP) or name in STATE_SKIP or name.startswith("summary") or name in REWIND_FILES:
                continue
            number = _numbered(name, "level_")
            number = _numbered(name, "prac/round_") if number is None else number
            if number is not None and number > level:
                continue
            if name == "prac_set.prac.safetensors" and not final_level(run, level):
                continue  # the final set is written when the run ends
            if name.endswith("weights.safetensors") and number != level:
                continue
            archive.add(path, arcname=name)


def _pack_rewind(run: Path, target: Path) -> None:
    with tarfile.open(target, "w:gz") as archive:
        for name in REWIND_FILES:
            if (run / name).is_file():
                archive.add(run / name, arcname=name)


def final_level(run: Path, level: int) -> bool:
    import yaml

    ticket = yaml.safe_load((run / "recipe.yaml").read_text())["ticket"]
    return level == (len(ticket["densities"]) if ticket["strategy"] == "cts" else int(ticket["levels"]))


class CellRunner:
    def __init__(self, c, ledger: Ledger, scale: Optional[dict], data: Optional[Path], environment: "Environment"):
        self.c, self.ledger, self.scale, self.data, self.environment = c, ledger, scale, data, environment
        self.all = cells(scale)

    def recipe(self, cell: Cell, job_folder: Path, done: set[str]) -> tuple[dict, list[str]]:
        raw = cell_recipe(cell, self.scale)
        restored = []
        if self.data is not None and raw["data"].get("path") == "parquet":
            raw["data"]["data_files"] = {"train": str(self.data / "train.parquet"), "test": str(self.data / "test.parquet")}
        spec = experiment(cell.experiment)
        if spec.sizes_from:
            state = self.ledger.latest_state(f"{spec.sizes_from}-s{cell.seed}", done, artifacts=True)
            if state is None:
                raise RuntimeError(f"no state of {spec.sizes_from}-s{cell.seed} left in the ledger for sizes_from")
            _extract(state, job_folder / "sizes_from")
            raw["data_selection"]["sizes_from"] = str(job_folder / "sizes_from")
            restored.append(str(state.relative_to(self.ledger.path)))
        if spec.index_from:
            source = f"{spec.index_from}-s0"
            state = self.ledger.latest_state(source, done, artifacts=True)
            if state is None:
                raise RuntimeError(f"no state of {source} left in the ledger for its PrAC set")
            _extract(state, job_folder / "index_from")
            raw["data_selection"]["path"] = str(job_folder / "index_from" / "prac_set.prac.safetensors")
            restored.append(str(state.relative_to(self.ledger.path)))
        return raw, restored

    def prepare(self, cell: Cell, done: set[str]) -> Job:
        import yaml

        folder = self.c.work / "cells" / cell.id
        shutil.rmtree(folder, ignore_errors=True)
        run = folder / "run"
        raw, restored = self.recipe(cell, folder, done)
        if cell.kind == "timm":
            return self.prepare_timm(cell, folder, raw)
        previous = None
        if cell.kind == "level" and cell.level > 0:
            previous = self.ledger.latest_state(cell.chain, done, upto=cell.level - 1)
        elif cell.kind == "retrain":
            previous = self.ledger.latest_state(cell.chain, done)
        if previous is not None:
            rewind = self.ledger.rewind(cell.chain)
            if not rewind.is_file():
                raise RuntimeError(f"{cell.id}: the ledger has no {rewind.relative_to(self.ledger.path)} (the chain's rewind point)")
            _extract(rewind, run)
            _extract(previous, run)
            restored += [str(rewind.relative_to(self.ledger.path)), str(previous.relative_to(self.ledger.path))]
            # the run's resolved recipe with this machine's paths (that the recipe is the same otherwise, the ledger
            # checked: a dependency counts as done only when its fingerprint matches this campaign's recipe)
            # (both the recipe and the run's record of it as it started, which a resume compares it with)
            from prac_plugin.rundir.folder import RECIPE_FILE, RECIPE_RECORD

            for name in (RECIPE_FILE, RECIPE_RECORD):
                if (run / name).is_file():
                    stored = yaml.safe_load((run / name).read_text())
                    for section, key in MACHINE_PATHS:
                        if key in raw.get(section, {}):
                            stored.setdefault(section, {})[key] = raw[section][key]
                    (run / name).write_text(yaml.safe_dump(stored, sort_keys=False))
        elif cell.kind != "level" or cell.level > 0:
            raise RuntimeError(f"{cell.id}: no state of {cell.chain} in the ledger")
        folder.mkdir(parents=True, exist_ok=True)
        if cell.kind == "level" and (run / f"level_{cell.level:02d}" / "metrics.json").exists():
            raise RuntimeError(f"the state restored for {cell.id} already holds its level: the ledger's state is wrong")
        recipe = folder / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
        last = max(c.level for c in self.all if c.chain == cell.chain and c.kind == "level")
        if cell.kind == "retrain":
            args = ["-m", "prac_plugin", "retrain", str(run), "--level", str(cell.level)]
            target = run / "full_data" / f"level_{cell.level:02d}.json"
        else:
            args = ["-m", "prac_plugin", "run", str(recipe), "--output", str(run)]
            target = run / f"level_{cell.level:02d}" / "metrics.json"
        return Job(cell, folder, run, target, final=cell.kind != "level" or cell.level == last, args=args, restored=restored)

    def prepare_timm(self, cell: Cell, folder: Path, raw: dict) -> Job:
        """E7: benchmarks/campaign_timm.py on the CIFAR-10 copy with timm's staged train.py."""
        import campaign_timm
        import yaml

        if self.data is None:
            raise RuntimeError("E7 runs timm's train.py on the CIFAR-10 parquet files: give --data")
        script = campaign_timm.STAGED_SCRIPT if campaign_timm.STAGED_SCRIPT.is_file() else campaign_timm.SHARED_SCRIPT
        if not script.is_file():
            raise RuntimeError(f"no timm train.py staged at {campaign_timm.STAGED_SCRIPT} (benchmarks/gpu_prepare.sh copies it)")
        run = folder / "run"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))  # the campaign's schedule, as a tag
        args = [str(Path(campaign_timm.__file__)), "--script", str(script), "--data", str(self.data), "--out", str(run),
                "--epochs", str(TIMM_EPOCHS), "--seed", str(cell.seed)]
        if self.c.plan.dry_run:
            args += ["--light", "--epochs", "2", "--train-split", "train[:512]", "--val-split", "test[:256]"]
        return Job(cell, folder, run, run / "e7.json", final=True, args=args)

    def start(self, job: Job) -> None:
        job.process, job.started = self.c.start(job.cell.id, job.args), self.c.elapsed()

    def finished(self, job: Job) -> Optional[str]:
        """None while the cell runs; else how it ended: done, or why not."""
        code = job.process.poll()
        if code is None:
            if job.target.is_file() and not job.final:
                time.sleep(0.5)  # metrics.json is written last; let the process finish the rename
                self.c.kill(job.process)
                return "done"
            return None
        if job.target.is_file() and (code == 0 or not job.final):
            # the cell's level was written (metrics.json last, atomically); a run that went on into the next level
            # and stopped there (before this poll saw the file) failed in the next cell's level, not in this one
            return "done"
        return f"exit {code}" + ("" if code else f", no {job.target.name}")

    def record(self, job: Job, seconds: float) -> Path:
        cell = job.cell
        figures = json.loads(job.target.read_text())
        keys = LEVEL_FIGURES if cell.kind == "level" else RETRAIN_FIGURES if cell.kind == "retrain" else list(figures)
        entry = {
            "cell": cell.id, "experiment": cell.experiment, "title": experiment(cell.experiment).title, "seed": cell.seed,
            "kind": cell.kind, "level": cell.level, "fingerprint": fingerprint(json.loads(json.dumps(cell_recipe(cell, self.scale)))),
            "figures": {k: figures[k] for k in keys if k in figures},
            "cell_wall_s": seconds, "cells_side_by_side": job.peers, "estimate_epochs": cell.epochs,
            "dry_run": self.c.plan.dry_run, "environment": self.environment.get(),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "restored_from": job.restored,
            "recipe": _yaml(job.folder / "recipe.yaml"),
        }
        files = {}
        if cell.kind == "level":
            state = job.folder / STATE
            _pack_state(job.run, cell.level, state)
            files[STATE] = state
            if cell.level == 0:
                rewind = job.folder / REWIND
                _pack_rewind(job.run, rewind)
                files[REWIND] = rewind
            summary = job.run / "summary.json"
            if job.final and summary.is_file():
                files["summary.json"] = summary
        return self.ledger.write(cell.id, entry, files)


ENVIRONMENT = """
import json, platform, torch, timm, accelerate, datasets, prac_plugin
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "timm": timm.__version__,
        "accelerate": accelerate.__version__, "datasets": datasets.__version__, "prac_plugin": prac_plugin.__version__}
info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (" + platform.machine() + ")"
print(json.dumps(info))
"""


class Environment:
    """Versions and device for the ledger's entries: the preflight's record, else asked of a subprocess that runs
    beside the first cells (importing torch takes seconds) and is read when the first entry is written."""

    def __init__(self, c, known: Optional[dict]):
        self.info = dict(known) if known is not None else None
        self.process = None
        if self.info is None:
            self.process = subprocess.Popen([sys.executable, "-c", ENVIRONMENT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            text=True, env=c.env)

    def get(self) -> dict:
        if self.info is None:
            try:
                out, _ = self.process.communicate(timeout=120)
                self.info = json.loads(out.strip().splitlines()[-1])
            except Exception as exc:  # a cell's figures matter more than its version line
                self.process.kill()
                self.info = {"error": f"{type(exc).__name__}: {exc}"}
            self.info["commit"] = _commit()
        return self.info

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except Exception:
        return None


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


MAX_OPEN_CHAINS = 3  # 3 states of ~2.2 MiB: what the 64 MiB transfer has room for beside the data (55 MiB)


def stage_cells(c, scale: Optional[dict], data: Optional[Path], ledger_path: Path, max_slots: int,
                only: Optional[list[str]] = None, environment: Optional[dict] = None, max_open: int = MAX_OPEN_CHAINS) -> None:
    """Run pending cells until the stage's deadline; every finished one goes to the ledger and to cells.tar.gz."""
    deadline = c.budget - c.final_reserve_s
    ledger = Ledger(ledger_path)
    ledger.clear_partials()
    runner = CellRunner(c, ledger, scale, data, Environment(c, environment if environment is not None else (c.record.get("environment") or None)))
    pool = [cell for cell in runner.all if only is None or cell.id in only]
    unsupported: set[str] = set()
    clock = timing(c, c.plan.dry_run)
    done = ledger.done(runner.all, scale)
    slots = concurrency(pool, done, set(), max_slots, deadline - c.elapsed(), clock.cost_s,
                        open_chains=open_chains(ledger, runner.all, done), max_open=max_open)
    stage = c.record["stages"]["cells"] = {
        "ledger": str(ledger_path), "deadline_s": deadline, "started_at_s": c.elapsed(), "slots": slots,
        "timing": clock.__dict__, "done_before": sorted(done), "not_runnable": sorted(unsupported), "cells": {},
    }
    c.log(f"cells: {len(done)} done, {len([x for x in pool if x.id not in done])} pending; {slots} side by side; "
          f"{clock.epoch_s:.2f} s per epoch ({clock.basis})")
    running: dict[str, Job] = {}
    skipped: set[str] = set()
    new: list[str] = []
    while True:
        for cell_id, job in list(running.items()):
            outcome = runner.finished(job)
            if outcome is None and c.elapsed() >= deadline:
                c.kill(job.process)
                outcome = "killed at the stage deadline: no ledger entry"
            if outcome is None:
                job.peers = max(job.peers, len(running))
                continue
            del running[cell_id]
            seconds = c.elapsed() - job.started
            note = {"outcome": outcome, "seconds": seconds, "side_by_side": job.peers, "estimate_s": clock.cost_s(job.cell, slots)}
            if outcome == "done":
                try:
                    runner.record(job, seconds)
                    done.add(cell_id)
                    new.append(cell_id)
                    note["tidy"] = tidy(ledger, runner.all, scale)
                except Exception as exc:  # a harvest bug: the cell counts as not done
                    note["outcome"] = f"finished, but its entry could not be written: {type(exc).__name__}: {exc}"
            else:
                skipped.add(cell_id)
                note["log_tail"] = c.tail(cell_id)
            stage["cells"][cell_id] = note
            c.log(f"cell {cell_id}: {note['outcome']} after {seconds:.0f} s (estimate {note['estimate_s']:.0f} s)")
            pack_new(c, ledger, new)
            c.save()
        left = deadline - c.elapsed()
        chains = open_chains(ledger, runner.all, done) | {job.cell.chain for job in running.values()}
        for cell in choose(pool, done | skipped, set(running), slots, left, lambda x: clock.cost_s(x, slots),
                           open_chains=chains, max_open=max_open):
            try:
                job = runner.prepare(cell, done)
            except Exception as exc:
                skipped.add(cell.id)
                stage["cells"][cell.id] = {"outcome": f"not started: {type(exc).__name__}: {exc}"}
                c.log(f"cell {cell.id} not started: {exc}")
                continue
            runner.start(job)
            running[cell.id] = job
        if not running:
            break
        time.sleep(0.5)
    runner.environment.close()
    pending = [x for x in pool if x.id not in done]
    stage.update(ended_at_s=c.elapsed(), new=new, pending=len(pending),
                 next_ready=[x.id for x in pending if all(d in done for d in x.depends)][:12])
    ready_now = [x for x in pending if all(d in done for d in x.depends)]
    if ready_now and not new:
        smallest = min(ready_now, key=lambda x: x.epochs)
        stage["why_none"] = (f"The smallest ready cell ({smallest.id}) needs about {clock.cost_s(smallest, 1):.0f} s alone; "
                             f"{deadline - stage['started_at_s']:.0f} s were left")
    c.save()


def pack_new(c, ledger: Ledger, new: list[str]) -> None:
    """This call's new ledger entries, as the one file the device tool brings back."""
    if not new:
        return
    partial = c.out / ".partial-cells.tar.gz"
    with tarfile.open(partial, "w:gz") as archive:
        for cell_id in new:
            folder = ledger.folder(cell_id)
            if folder.is_dir():
                archive.add(folder, arcname=cell_id)
    partial.replace(c.out / "cells.tar.gz")
