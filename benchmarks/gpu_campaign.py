"""Every GPU figure of the project from one budgeted script that fits one short GPU lease.

GPU time comes here rarely and in short leases (15 minutes in all, one command at most 10). This script spends
a lease well and returns figures even when it is cut short. Stages, in priority order, each with a time limit
the script enforces (its subprocesses are killed at their deadline) and each writing its results the moment it
finishes:

  0. preflight   versions, device, CIFAR-10 decoded onto the device; a few steps of every strategy (ltr, prac
                 with CEP, cts, structured), every precision (fp32, bf16, fp16 with the grad scaler),
                 channels_last and train.compile. A failure is recorded with its error; the campaign goes on.
  1. throughput  cifar_resnet20 / CIFAR-10 / bf16 / batch 128: seconds per epoch and images per second of the
                 device-resident path, the compiled model and the DataLoader path; the per-step cost of masking
                 and of the forgetting tracker; a profiler table; K runs side by side against one.
  2. the paper's comparisons on a schedule chosen from stage 1's epoch time to fit what is left: full-data LTR
     vs PrAC-LTR vs random subsets of PrAC's sizes to 89% sparsity (20% per level), the PrAC and random tickets
     of the last level trained on the full data (prac retrain); CTS vs LTR near 99.3% sparsity (LTR prunes 51%
     per level to get there in 7 levels). Independent runs go side by side as separate processes.

Outputs (at most 7 files, flat, as the device tool returns them): campaign.json (every figure), campaign.md
(tables), campaign.log, profile.txt, runs.tar.gz (the runs' metrics, recipes and logs), report_prac.png and
report_cts.png (prac report's plots).

    # here: stage the wheels and the data, print the command for the GPU machine
    bash benchmarks/gpu_prepare.sh
    # there (what gpu_prepare.sh prints):
    python3 benchmarks/gpu_campaign.py --budget 480 --data .gpu_stage/data
    # anywhere, on a CPU, in a few minutes: the same code path on scikit-learn's digits, numbers meaningless
    python benchmarks/gpu_campaign.py --dry-run --output runs/gpu_campaign_dry
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROBES = Path(__file__).resolve().parent / "gpu_probes.py"

# stage limits as fractions of the budget; stage 2 gets what is left less FINAL_RESERVE_S for the last writes
# measured on the H200 (2026-11-29): preflight 69 s, eager 65 s, extra 45-80 s (compile cached by preflight or cold),
# concurrency 32 s; stage 2 gets the rest
LIMITS = {"preflight": 0.15, "eager": 0.14, "extra": 0.12, "concurrent": 0.07}
FINAL_RESERVE_S = 20.0
PROCESS_START_S = 15.0  # import, CUDA start and cached data load of one run process (re-measured in stage 2)
LEVEL_OVERHEAD_S = 1.0  # evaluation, CEP predictions and saving per level, under load
REWIND_FRACTION = 9 / 160  # the CTS paper rewinds ResNet-20 to epoch 9 of 160; both comparisons use it


@dataclass
class Plan:
    """What a mode runs: data, model, sizes of every probe and of the comparisons."""

    dry_run: bool
    recipe: dict
    preflight_overrides: list[str]
    throughput_overrides: list[str]
    probe: dict
    concurrent_processes: int
    prac_levels: int  # 20% per level
    cts_ltr_levels: int
    cts_ltr_fraction: float
    cts_levels: list[int]  # LTR levels whose densities CTS searches
    epochs_range: tuple[int, int]
    steps_per_epoch: int  # nominal, for the rewind step when no stage measured it
    retrain_levels: list[int] = field(default_factory=list)


def gpu_plan(data: Path) -> Plan:
    recipe = yaml.safe_load((ROOT / "recipes" / "cifar10_resnet20_ltr.yaml").read_text())
    recipe["data"]["data_files"] = {"train": str(data / "train.parquet"), "test": str(data / "test.parquet")}
    recipe["run"] = {"tracker": "none", "checkpoint_every": "none"}
    return Plan(
        dry_run=False, recipe=recipe,
        preflight_overrides=["data.train_split=train[:2560]", "data.test_split=test[:1024]", "train.epochs=1", "train.milestones=[]"],
        throughput_overrides=["train.mixed_precision=bf16", "data.in_memory=true"],
        probe={"warmup_steps": 20, "timed_epochs": 2, "cost_steps": 100, "cost_rounds": 3, "profile_steps": 20, "compiled_steps": 300,
               "dataloader_workers": 8, "compile_backend": "true", "concurrent_steps": 352, "barrier_timeout_s": 40},
        concurrent_processes=5, prac_levels=10, cts_ltr_levels=7, cts_ltr_fraction=0.51, cts_levels=[5, 6, 7],
        epochs_range=(2, 60), steps_per_epoch=352, retrain_levels=[10],
    )


def dry_plan(data: Optional[Path]) -> Plan:
    """Tiny sizes on a CPU: scikit-learn's digits, or (``data`` given) a slice of the CIFAR-10 copy."""
    if data is not None:
        recipe = gpu_plan(data).recipe
        recipe["data"].update(train_split="train[:1280]", test_split="test[:256]")
        recipe["train"].update(batch_size=64, epochs=1, milestones=[])
    else:
        recipe = {
            "model": {"name": "cifar_resnet20"},
            "data": {"path": "builtin:digits", "val_fraction": 0.1, "split_seed": 0, "augment": {"random_crop_padding": 1}},
            "train": {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
                      "schedule": "step", "milestones": [], "seed": 0},
            "ticket": {"strategy": "ltr", "levels": 1, "fraction": 0.2, "rewind": "0it"},
            "data_selection": {"strategy": "full"},
            "run": {"tracker": "none", "checkpoint_every": "none"},
        }
    return Plan(
        dry_run=True, recipe=recipe,
        preflight_overrides=["data.train_split=train[:256]", "data.test_split=test[:128]"],
        throughput_overrides=["train.mixed_precision=bf16", "data.in_memory=true"],
        probe={"warmup_steps": 2, "timed_epochs": 1, "cost_steps": 3, "cost_rounds": 1, "profile_steps": 3, "compiled_steps": 3,
               "dataloader_workers": 1, "compile_backend": "aot_eager", "concurrent_steps": 5, "barrier_timeout_s": 30},
        concurrent_processes=2, prac_levels=1, cts_ltr_levels=1, cts_ltr_fraction=0.51, cts_levels=[1],
        epochs_range=(1, 1), steps_per_epoch=21 if data is None else 18, retrain_levels=[1],
    )


class Campaign:
    """The budget clock, the output folder and the record every stage writes into."""

    def __init__(self, args: argparse.Namespace, plan: Plan):
        self.started = time.time()
        self.budget = args.budget
        self.plan = plan
        self.out = Path(args.output)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.workdir)
        marker = self.work / ".gpu_campaign_scratch"
        if self.work.exists() and any(self.work.iterdir()) and not marker.is_file():
            raise SystemExit(f"gpu_campaign: --workdir {self.work} holds files this script did not write; choose an empty or new folder")
        if self.work.exists():
            shutil.rmtree(self.work)  # an earlier campaign's scratch: runs must start afresh
        (self.work / "logs").mkdir(parents=True)
        marker.touch()
        self.log_file = (self.out / "campaign.log").open("a")
        self.record: dict = {"budget_s": self.budget, "dry_run": plan.dry_run, "command": " ".join(sys.argv), "stages": {},
                             "model": plan.recipe["model"]["name"], "data": plan.recipe["data"]}
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
                    "PRAC_CACHE": str(self.work / "prac_cache"), "HF_DATASETS_CACHE": str(self.work / "hf_cache"),
                    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        if plan.dry_run:
            self.env["OMP_NUM_THREADS"] = "1"  # several tiny processes share a small CPU
        self.config_path = self.work / "probe_config.json"
        self.config_path.write_text(json.dumps({
            **plan.probe, "recipe": plan.recipe, "preflight_overrides": plan.preflight_overrides,
            "throughput_overrides": plan.throughput_overrides, "dry_run": plan.dry_run, "workdir": str(self.work),
            "profile_file": str(self.out / "profile.txt"),
        }))

    # -- clock and files
    def elapsed(self) -> float:
        return time.time() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()

    def log(self, message: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def write(self, name: str, text: str | bytes) -> None:
        """Replace one output file whole (a kill mid-write leaves the previous version)."""
        partial = self.out / f".partial-{name}"
        partial.write_bytes(text if isinstance(text, bytes) else text.encode())
        os.replace(partial, self.out / name)

    def save(self) -> None:
        self.record["elapsed_s"] = self.elapsed()
        self.write("campaign.json", json.dumps(self.record, indent=1, default=str))
        self.write("campaign.md", markdown(self.record))

    # -- subprocesses
    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.work / "logs" / f"{name}.log").open("w")
        self.log(f"start {name}: {' '.join(args)}")
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def kill(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()

    def run_until(self, name: str, args: list[str], deadline: float) -> dict:
        """Run a subprocess to its end or to ``deadline`` (seconds since start); how it ended."""
        started = self.elapsed()
        process = self.start(name, args)
        while process.poll() is None and self.elapsed() < deadline:
            time.sleep(0.2)
        timed_out = process.poll() is None
        self.kill(process)
        outcome = {"seconds": self.elapsed() - started, "returncode": process.returncode, "timed_out": timed_out}
        if timed_out or process.returncode != 0:
            outcome["log_tail"] = self.tail(name)
        self.log(f"end {name}: {outcome['seconds']:.1f} s, " + ("killed at its deadline" if timed_out else f"exit {process.returncode}"))
        return outcome

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.work / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""

    def probe(self, probe: str, deadline: float, out: Path, extra: Optional[list[str]] = None, name: Optional[str] = None) -> dict:
        return self.run_until(name or probe, [str(PROBES), probe, "--config", str(self.config_path), "--out", str(out), *(extra or [])], deadline)


def read_lines(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a kill
            continue
        entries[entry["name"]] = entry
    return entries


# -- stage 0 and 1 -------------------------------------------------------------------------------------
def stage_preflight(c: Campaign) -> None:
    deadline = c.elapsed() + LIMITS["preflight"] * c.budget
    out = c.work / "preflight.jsonl"
    runs = []
    while c.elapsed() < deadline - 5:
        runs.append(c.probe("preflight", deadline, out, name=f"preflight_{len(runs)}"))
        if runs[-1]["returncode"] == 0 or runs[-1]["timed_out"]:
            break
        c.log("preflight process died; starting it again for the checks it had not reached")
    checks = read_lines(out)
    c.record["environment"] = checks.pop("environment", {})
    planned = checks.pop("plan", {}).get("checks", [])
    for name in planned:
        checks.setdefault(name, {"status": "not reached", "error": "the preflight process ended (deadline or crash) before this check"})
    c.record["stages"]["preflight"] = {"limit_s": LIMITS["preflight"] * c.budget, "processes": runs, "checks": checks}
    c.save()


def stage_throughput(c: Campaign) -> None:
    out = c.work / "throughput.jsonl"
    stage = c.record["stages"]["throughput"] = {"limits_s": {k: LIMITS[k] * c.budget for k in ("eager", "extra", "concurrent")}}
    stage["eager_process"] = c.probe("eager", c.elapsed() + LIMITS["eager"] * c.budget, out)
    stage["figures"] = read_lines(out)
    c.save()
    stage["extra_process"] = c.probe("extra", c.elapsed() + LIMITS["extra"] * c.budget, out)
    stage["figures"] = read_lines(out)
    c.save()
    stage["concurrent"] = concurrency(c, c.elapsed() + LIMITS["concurrent"] * c.budget)
    c.save()


def concurrency(c: Campaign, deadline: float) -> dict:
    """K probe processes that wait for each other, then train the same steps at once."""
    count = c.plan.concurrent_processes
    barrier = c.work / "barrier"
    barrier.mkdir()
    processes = [c.start(f"concurrent_{i}", [str(PROBES), "concurrent", "--config", str(c.config_path), "--out",
                                             str(c.work / f"concurrent_{i}.jsonl"), "--index", str(i), "--count", str(count), "--barrier", str(barrier)])
                 for i in range(count)]
    while any(p.poll() is None for p in processes) and c.elapsed() < deadline:
        time.sleep(0.2)
    timed_out = any(p.poll() is None for p in processes)
    for p in processes:
        c.kill(p)
    rows = [row for i in range(count) for row in read_lines(c.work / f"concurrent_{i}.jsonl").values()]
    result: dict = {"processes": count, "timed_out": timed_out, "per_process": rows}
    single = c.record["stages"]["throughput"]["figures"].get("device_resident_epoch")
    if len(rows) == count and single:
        window = max(r["end"] for r in rows) - min(r["start"] for r in rows)
        images = sum(r["steps_timed"] * r["batch_size"] for r in rows)
        result.update(
            aggregate_images_per_s=images / window, single_images_per_s=single["images_per_s"],
            throughput_ratio=images / window / single["images_per_s"],
            slowdown_per_process=sum(r["ms_per_step"] for r in rows) / count / single["ms_per_step"],
            started_together=min(r["started_together"] for r in rows) == count,
        )
    else:
        result["log_tails"] = {f"concurrent_{i}": c.tail(f"concurrent_{i}") for i in range(count)}
    c.log(f"concurrency: {json.dumps({k: v for k, v in result.items() if k not in ('per_process', 'log_tails')})}")
    return result


# -- stage 2 -------------------------------------------------------------------------------------------
@dataclass
class Schedule:
    epochs: int
    milestones: list[int]
    steps_per_epoch: int
    rewind_step: int
    epoch_s: Optional[float]  # one process alone
    slowdown: float
    basis: str

    def overrides(self) -> list[str]:
        return [f"train.epochs={self.epochs}", f"train.milestones={self.milestones}", "train.mixed_precision=bf16"]


def timing(c: Campaign) -> tuple[Optional[float], Optional[int], float, str]:
    """One process's seconds per epoch, steps per epoch, the slowdown of each side-by-side process, and their source."""
    throughput = c.record["stages"].get("throughput", {})
    single = throughput.get("figures", {}).get("device_resident_epoch")
    slowdown = throughput.get("concurrent", {}).get("slowdown_per_process")
    if single and slowdown:
        return single["seconds_per_epoch"], single["steps_per_epoch"], slowdown, "measured epoch time x measured slowdown of side-by-side processes"
    if single:
        return single["seconds_per_epoch"], single["steps_per_epoch"], 2.0, "measured epoch time x an assumed slowdown of 2 (the concurrency probe failed)"
    given = c.record.get("given_timing")
    if given:
        return given["epoch_seconds"], None, given["slowdown"], "epoch time and slowdown given on the command line (an earlier campaign's)"
    return None, None, 1.0, "no epoch time was measured: shortest schedule"


def choose_schedule(c: Campaign, seconds: float) -> Schedule:
    """The longest schedule whose critical path fits ``seconds``, from stage 1's measured epoch time.

    Critical path, in epochs of the full training split: the random-subset run waits for PrAC's first round,
    then trains levels as large as PrAC's, then its last ticket trains on the full data. PrAC sets are assumed
    at 85% of the split (conservative; the paper reports 35-78%) and 10% is added for safety.
    """
    plan = c.plan
    epoch_s, steps_per_epoch, slowdown, basis = timing(c)
    slowdown = max(1.0, slowdown)
    levels = plan.prac_levels
    epoch_units = 1.1 * (2 + 0.85 * (levels - 1) + (1 - REWIND_FRACTION) * len(plan.retrain_levels))
    low, high = plan.epochs_range
    epochs = low
    if epoch_s is not None:
        fixed = 3 * PROCESS_START_S + (levels + 2) * LEVEL_OVERHEAD_S
        epochs = max(low, min(high, int((seconds - fixed) / (epoch_units * epoch_s * slowdown))))
    steps_per_epoch = steps_per_epoch or plan.steps_per_epoch
    milestones = sorted({m for m in (round(epochs / 2), round(3 * epochs / 4)) if 0 < m < epochs})
    rewind = max(1, round(REWIND_FRACTION * epochs * steps_per_epoch))
    return Schedule(epochs, milestones, steps_per_epoch, rewind, epoch_s, slowdown, basis)


@dataclass
class Job:
    name: str
    folder: Path
    args: list[str]
    process: Optional[subprocess.Popen] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    returncode: Optional[int] = None
    restarts: int = 0
    note: str = ""


def stage_comparisons(c: Campaign) -> None:
    plan = c.plan
    deadline = c.budget - FINAL_RESERVE_S
    schedule = choose_schedule(c, deadline - c.elapsed())
    stage = c.record["stages"]["comparisons"] = {
        "schedule": schedule.__dict__, "shortened": schedule.epochs < 160, "started_at_s": c.elapsed(), "deadline_s": deadline,
        "rewind": f"{schedule.rewind_step}it ({100 * REWIND_FRACTION:.1f}% of training, as the CTS paper's epoch 9 of 160)",
    }
    c.log(f"schedule: {schedule.epochs} epochs, milestones {schedule.milestones}, rewind {schedule.rewind_step}it ({schedule.basis})")
    runs = c.work / "runs"
    rewind = f"{schedule.rewind_step}it"

    def job(name: str, ticket: dict, selection: dict) -> Job:
        """A `prac run` of the plan's recipe with this schedule, ticket section and data-selection section."""
        raw = json.loads(json.dumps(plan.recipe))
        raw["train"].update(epochs=schedule.epochs, milestones=schedule.milestones, mixed_precision="bf16")
        raw["ticket"], raw["data_selection"] = ticket, selection
        recipe = c.work / "recipes" / f"{name}.yaml"
        recipe.parent.mkdir(exist_ok=True)
        recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
        folder = runs / name
        return Job(name, folder, ["-m", "prac_plugin", "run", str(recipe), "--output", str(folder)])

    prac_ticket = {"strategy": "ltr", "levels": plan.prac_levels, "fraction": 0.2, "scope": "global", "ignore": [], "rewind": rewind}
    remaining = [(1 - plan.cts_ltr_fraction) ** level for level in plan.cts_levels]
    search_epochs = max(schedule.epochs / 8, 0.05)  # the paper: 20 search epochs against 160 of training
    full = {"strategy": "full"}
    jobs = {
        "ltr": job("ltr", prac_ticket, full),
        "prac": job("prac", prac_ticket, {"strategy": "prac"}),
        "random": job("random", prac_ticket, {"strategy": "random", "seed": 0, "sizes_from": str(runs / "prac")}),
        "ltr_cts": job("ltr_cts", {**prac_ticket, "levels": plan.cts_ltr_levels, "fraction": plan.cts_ltr_fraction}, full),
        "cts": job("cts", {"strategy": "cts", "densities": remaining, "ignore": [], "rewind": rewind, "search_epochs": search_epochs,
                           "search_batch_size": 512}, full),
    }
    stage["cts_densities"] = remaining
    stage["cts_search_epochs"] = search_epochs
    retrains: dict[str, Job] = {}
    first_round = runs / "prac" / "prac" / "round_00.prac.safetensors"
    last_save = 0.0

    def launch(j: Job) -> None:
        j.process, j.started = c.start(j.name, j.args), c.elapsed()

    for name in ("ltr", "prac", "ltr_cts", "cts"):
        launch(jobs[name])
    while c.elapsed() < deadline:
        for j in list(jobs.values()) + list(retrains.values()):
            if j.process is not None and j.ended is None and j.process.poll() is not None:
                j.ended, j.returncode = c.elapsed(), j.process.returncode
                c.log(f"{j.name} ended after {j.ended - j.started:.0f} s with exit {j.returncode}")
                if j.returncode != 0:
                    j.note = c.tail(j.name)
        random = jobs["random"]
        if random.process is None and first_round.is_file():
            launch(random)
        elif random.ended is not None and random.returncode != 0 and random.restarts < 5:
            # it outran PrAC (level L needs PrAC's round L-1 set): continue it when PrAC has written the next round
            have = len(list((runs / "prac" / "prac").glob("round_*.prac.safetensors")))
            done = len(list(random.folder.glob("level_*/metrics.json")))
            if have > done:
                c.log(f"random restarts at level {done} (PrAC has {have} rounds)")
                random.restarts, random.ended, random.returncode = random.restarts + 1, None, None
                launch(random)
        for name in ("prac", "random"):
            source = jobs[name]
            if source.ended is not None and source.returncode == 0 and name not in retrains:
                retrains[name] = retrain_job(c, schedule, source, deadline)
                if retrains[name].process is None:
                    c.log(f"retrain of {name} skipped: {retrains[name].note}")
        active = [j for j in list(jobs.values()) + list(retrains.values()) if j.process is not None and j.ended is None]
        waiting = jobs["random"].process is None and jobs["prac"].ended is None
        if not active and not waiting:
            break
        if c.elapsed() - last_save > 20:
            stage["progress"] = {j.name: len(list(j.folder.glob("level_*/metrics.json"))) for j in jobs.values()}
            c.save()
            last_save = c.elapsed()
        time.sleep(0.5)
    for j in list(jobs.values()) + list(retrains.values()):
        if j.process is not None and j.ended is None:
            c.kill(j.process)
            j.ended, j.returncode, j.note = c.elapsed(), None, "killed at the stage deadline"
            c.log(f"{j.name} killed at the stage deadline")
    stage["ended_at_s"] = c.elapsed()
    stage["jobs"] = {j.name: {"started_s": j.started, "ended_s": j.ended, "returncode": j.returncode, "restarts": j.restarts,
                              "note": j.note[-2000:]} for j in list(jobs.values()) + list(retrains.values())}
    stage["runs"] = {name: harvest(j.folder) for name, j in jobs.items()}
    stage["prac_table"] = prac_table(stage["runs"], plan.prac_levels)
    stage["cts_table"] = cts_table(stage["runs"], plan.cts_levels)
    stage["side_by_side"] = side_by_side(c, stage)
    c.save()
    reports(c, runs)


def retrain_job(c: Campaign, schedule: Schedule, source: Job, deadline: float) -> Job:
    """``prac retrain`` of the run's last levels, started only when it can finish before the deadline."""
    levels = [level for level in c.plan.retrain_levels if (source.folder / f"level_{level:02d}" / "metrics.json").is_file()]
    j = Job(f"{source.name}_retrain", source.folder, ["-m", "prac_plugin", "retrain", str(source.folder), "--level", *map(str, levels)])
    if not levels:
        j.note = "no level to retrain"
        return j
    epoch_s = (schedule.epoch_s or 0.0) * schedule.slowdown
    needed = PROCESS_START_S + len(levels) * (1 - REWIND_FRACTION) * schedule.epochs * epoch_s
    if c.elapsed() + needed > deadline:
        j.note = f"needs about {needed:.0f} s, {deadline - c.elapsed():.0f} s left"
        return j
    j.process, j.started = c.start(j.name, j.args), c.elapsed()
    return j


def harvest(folder: Path) -> dict:
    """Completed levels of a run (also of one killed mid-way) and its full-data retraining results."""
    levels = []
    for path in sorted(folder.glob("level_*/metrics.json")):
        m = json.loads(path.read_text())
        levels.append({k: m.get(k) for k in (
            "level", "weights_remaining_pct", "sparsity_pct", "test_acc", "val_acc", "train_loss", "optimizer_steps", "examples_seen",
            "train_examples", "wall_time_s", "train_time_s", "prac_set_size", "prac_set_fraction", "cet_count", "cep_count",
            "cts_search_steps", "selected_examples", "mixed_precision", "start_step", "total_steps")})
    retrained = {}
    for path in sorted((folder / "full_data").glob("level_*.json")):
        r = json.loads(path.read_text())
        retrained[r["level"]] = {k: r.get(k) for k in ("accuracy", "mean", "training_steps", "finding_steps", "training_wall_time_s", "split")}
    return {"levels": levels, "full_data": retrained}


def _cumulative(levels: list[dict], key: str, upto: int) -> Optional[float]:
    values = [m[key] for m in levels[: upto + 1]]
    return sum(values) if len(values) == upto + 1 and None not in values else None


def prac_table(runs: dict, depth: int) -> list[dict]:
    rows = []
    for level in range(depth + 1):
        row: dict = {"level": level}
        for name in ("ltr", "prac", "random"):
            levels = runs[name]["levels"]
            if level < len(levels):
                m = levels[level]
                row[f"{name}_sparsity_pct"] = m["sparsity_pct"]
                row[f"{name}_test_acc"] = m["test_acc"]
                row[f"{name}_train_examples"] = m["train_examples"]
                row[f"{name}_steps_cum"] = _cumulative(levels, "optimizer_steps", level)
            full = runs[name]["full_data"].get(level) or runs[name]["full_data"].get(str(level))
            if full:
                row[f"{name}_full_data_acc"] = full["mean"]
                row[f"{name}_full_data_steps"] = full["training_steps"]
        rows.append(row)
    return rows


def cts_table(runs: dict, cts_levels: list[int]) -> list[dict]:
    ltr, cts = runs["ltr_cts"]["levels"], runs["cts"]["levels"]
    rows = []
    for i, level in enumerate(cts_levels):
        row: dict = {"ltr_level": level}
        if level < len(ltr):
            row.update(sparsity_pct=ltr[level]["sparsity_pct"], ltr_test_acc=ltr[level]["test_acc"],
                       ltr_steps=_cumulative(ltr, "optimizer_steps", level), ltr_wall_s=_cumulative(ltr, "wall_time_s", level))
        if i + 1 < len(cts) and cts:
            ticket = cts[i + 1]
            row.update(cts_sparsity_pct=ticket["sparsity_pct"], cts_test_acc=ticket["test_acc"],
                       cts_steps=cts[0]["optimizer_steps"] + ticket["optimizer_steps"], cts_search_steps=ticket.get("cts_search_steps"),
                       cts_wall_s=cts[0]["wall_time_s"] + ticket["wall_time_s"])
            if row.get("ltr_wall_s"):
                row["cts_over_ltr_wall"] = row["cts_wall_s"] / row["ltr_wall_s"]
        rows.append(row)
    return rows


def side_by_side(c: Campaign, stage: dict) -> dict:
    """Training images per second summed over the stage's runs, against one process alone (stage 1)."""
    wall = stage["ended_at_s"] - stage["started_at_s"]
    images = sum(m["examples_seen"] or 0 for run in stage["runs"].values() for m in run["levels"])
    single = c.record["stages"].get("throughput", {}).get("figures", {}).get("device_resident_epoch")
    result = {"wall_s": wall, "training_images": images, "images_per_s": images / wall if wall > 0 else None,
              "note": "training images of completed levels only (no CTS search, CEP or evaluation passes): a lower bound"}
    if single and result["images_per_s"]:
        result["ratio_to_one_process"] = result["images_per_s"] / single["images_per_s"]
    return result


def reports(c: Campaign, runs: Path) -> None:
    """prac report's plots of both comparisons (their tables are in campaign.md already)."""
    for name, members in (("prac", ["ltr", "prac", "random"]), ("cts", ["ltr_cts", "cts"])):
        folders = [str(runs / m) for m in members if list((runs / m).glob("level_*/metrics.json"))]
        if len(folders) < 2 or c.left() < 8:
            continue
        target = c.work / f"report_{name}"
        outcome = c.run_until(f"report_{name}", ["-m", "prac_plugin", "report", *folders, "--output", str(target)], c.elapsed() + min(30, c.left() - 5))
        png = next(target.glob("*.png"), None)
        if png is not None:
            c.write(f"report_{name}.png", png.read_bytes())
        c.record.setdefault("reports", {})[name] = outcome


def pack(c: Campaign) -> None:
    """The runs' metrics, summaries, recipes and every log, as one small archive."""
    partial = c.out / ".partial-runs.tar.gz"
    with tarfile.open(partial, "w:gz") as archive:
        for path in sorted(c.work.rglob("*")):
            relative = path.relative_to(c.work)
            if path.is_file() and (path.suffix in (".json", ".jsonl", ".yaml", ".log", ".md", ".csv") or path.name == "recipe.yaml") \
                    and "cache" not in relative.parts[0]:
                archive.add(path, arcname=str(relative))
    os.replace(partial, c.out / "runs.tar.gz")


# -- markdown ------------------------------------------------------------------------------------------
def _fmt(value, digits: int = 2, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value * scale:.{digits}f}"
    return str(value)


def markdown(record: dict) -> str:
    env = record.get("environment", {})
    lines = [f"# GPU campaign{' (DRY RUN: CPU, tiny data, numbers meaningless)' if record['dry_run'] else ''}", "",
             f"Device: {env.get('device', '?')}, {env.get('device_memory_gib', '?')} GiB; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"timm {env.get('timm')}, accelerate {env.get('accelerate')}, datasets {env.get('datasets')}, torch-pruning {env.get('torch_pruning')}; "
             f"budget {record['budget_s']} s, elapsed {_fmt(record.get('elapsed_s'), 0)} s.", ""]
    pre = record["stages"].get("preflight")
    if pre:
        lines += ["## Stage 0: preflight", "", "| check | status | seconds | details |", "|---|---|---:|---|"]
        for name, check in pre["checks"].items():
            details = check.get("error") or ", ".join(f"{k}={_fmt(v, 4) if isinstance(v, float) else v}" for k, v in check.items()
                                                    if k not in ("name", "time", "status", "seconds", "wall_s", "traceback"))
            lines.append(f"| {name} | {check['status']} | {_fmt(check.get('wall_s', check.get('seconds')), 1)} | {details[:300]} |")
        lines.append("")
    thr = record["stages"].get("throughput")
    if thr:
        figures = thr.get("figures", {})
        first = figures.get("device_resident_epoch", {})
        lines += [f"## Stage 1: throughput ({record.get('model')}, {first.get('train_examples', '?')} training images, "
                  f"batch {first.get('batch_size', '?')}, bf16 unless named)", "",
                  "| path | seconds per epoch | images/s | ms per step | measured | ratio to device-resident eager |", "|---|---:|---:|---:|---|---:|"]
        base = figures.get("device_resident_epoch", {}).get("images_per_s")
        for name in ("device_resident_epoch", "device_resident_epoch_no_autotune", "model_only_step", "compiled_epoch", "dataloader_epoch",
                     "fp32_epoch", "channels_last_epoch"):
            f = figures.get(name)
            if not f:
                continue
            if f.get("status") != "ok":
                lines.append(f"| {name} | failed: {f.get('error', '')[:200]} | | | | |")
                continue
            ratio = f["images_per_s"] / base if base else None
            lines.append(f"| {name} | {f['seconds_per_epoch']:.2f} | {f['images_per_s']:,.0f} | {f['ms_per_step']:.2f} | {f['measured']} | {_fmt(ratio)} |")
        dev = figures.get("device_resident_epoch")
        if dev and dev.get("status") == "ok":
            seconds = dev["seconds_per_epoch"]
            verdict = "met" if seconds <= 1 else f"{seconds:.2f}x the target"
            lines += ["", f"Target: an epoch in 1 s or less. Measured {seconds:.2f} s ({verdict})."]
        costs = figures.get("per_step_costs")
        if costs and costs.get("status") == "ok":
            ms = costs["ms_per_step"]
            lines += ["", f"Per step (median of {costs['rounds']} rounds of {costs['steps_per_round']} steps): no mask {ms['no_mask']:.3f} ms, "
                          f"mask {ms['mask']:.3f} ms (+{costs['masking_ms']:.3f} ms, {costs['masking_pct']:+.1f}%), "
                          f"mask + forgetting tracker {ms['mask_and_tracker']:.3f} ms (+{costs['tracker_ms']:.3f} ms, {costs['tracker_pct']:+.1f}%)."]
        for key in ("profile_no_autotune", "profile"):
            prof = figures.get(key)
            if prof and prof.get("status") == "ok":
                lines += ["", f"Profile, cudnn.benchmark {prof.get('cudnn_benchmark')} ({prof['steps']} steps): wall {prof['wall_ms_per_step']:.2f} ms/step "
                              f"with the profiler on, device busy {_fmt(prof['device_busy_ms_per_step'])} ms/step, "
                              f"{_fmt(prof['kernel_launches_per_step'], 0)} kernel launches per step taking {_fmt(prof['launch_cpu_ms_per_step'])} ms of CPU. "
                              "Top by device time: " + "; ".join(f"{t['name'][:60]} {t['ms_per_step']:.3f} ms" for t in prof["top"][:5]) + ". "
                              "Top by CPU time: " + "; ".join(f"{t['name'][:60]} {t['ms_per_step']:.3f} ms" for t in prof.get("top_cpu", [])[:5]) + "."]
        conc = thr.get("concurrent", {})
        if "throughput_ratio" in conc:
            lines += ["", f"{conc['processes']} processes side by side: {conc['aggregate_images_per_s']:,.0f} images/s in all against "
                          f"{conc['single_images_per_s']:,.0f} for one alone ({conc['throughput_ratio']:.2f}x); each process "
                          f"{conc['slowdown_per_process']:.2f}x slower; started together: {conc['started_together']}."]
        lines.append("")
    cmp_ = record["stages"].get("comparisons")
    if cmp_:
        s = cmp_["schedule"]
        lines += ["## Stage 2: the paper's comparisons", "",
                  f"Schedule: {s['epochs']} epochs per level{' (SHORTENED from 160)' if cmp_['shortened'] else ''}, x0.1 at epochs {s['milestones']}, "
                  f"rewind {cmp_['rewind']}, bf16, device-resident data; chosen from {s['basis']}. "
                  f"Stage wall time {_fmt(cmp_.get('ended_at_s', 0) - cmp_['started_at_s'], 0)} s.", "",
                  "### Full-data LTR vs PrAC-LTR vs random subsets of PrAC's sizes (20% per level)", "",
                  "| level | sparsity % | LTR acc | PrAC acc | PrAC ticket, full data | random acc | random ticket, full data | PrAC set % | LTR steps | PrAC steps | random steps |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in cmp_.get("prac_table", []):
            examples = r.get("prac_train_examples")
            full = r.get("ltr_train_examples")
            lines.append(
                f"| {r['level']} | {_fmt(r.get('ltr_sparsity_pct', r.get('prac_sparsity_pct')))} | {_fmt(r.get('ltr_test_acc'), 2, 100)} | "
                f"{_fmt(r.get('prac_test_acc'), 2, 100)} | {_fmt(r.get('prac_full_data_acc'), 2, 100)} | {_fmt(r.get('random_test_acc'), 2, 100)} | "
                f"{_fmt(r.get('random_full_data_acc'), 2, 100)} | {_fmt(100 * examples / full if examples and full else None, 1)} | "
                f"{_fmt(r.get('ltr_steps_cum'))} | {_fmt(r.get('prac_steps_cum'))} | {_fmt(r.get('random_steps_cum'))} |")
        lines += ["", "### CTS vs LTR near 99.3% sparsity (LTR prunes 51% per level)", "",
                  "| LTR level | sparsity % | LTR acc | CTS sparsity % | CTS acc | LTR steps | CTS steps (+ search steps) | LTR wall s | CTS wall s | CTS / LTR wall |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in cmp_.get("cts_table", []):
            lines.append(
                f"| {r['ltr_level']} | {_fmt(r.get('sparsity_pct'))} | {_fmt(r.get('ltr_test_acc'), 2, 100)} | {_fmt(r.get('cts_sparsity_pct'))} | "
                f"{_fmt(r.get('cts_test_acc'), 2, 100)} | {_fmt(r.get('ltr_steps'))} | {_fmt(r.get('cts_steps'))} (+{_fmt(r.get('cts_search_steps'))}) | "
                f"{_fmt(r.get('ltr_wall_s'), 0)} | {_fmt(r.get('cts_wall_s'), 0)} | {_fmt(r.get('cts_over_ltr_wall'), 3)} |")
        sbs = cmp_.get("side_by_side", {})
        if sbs.get("images_per_s"):
            lines += ["", f"Side by side: {sbs['training_images']:,} training images in {sbs['wall_s']:.0f} s = {sbs['images_per_s']:,.0f} images/s "
                          f"over all runs ({_fmt(sbs.get('ratio_to_one_process'))}x one process alone; {sbs['note']})."]
        lines += ["", "Jobs: " + "; ".join(f"{name} {_fmt(j['started_s'], 0)}-{_fmt(j['ended_s'], 0)} s exit {j['returncode']}"
                                             + (f" ({j['restarts']} restarts)" if j["restarts"] else "") for name, j in cmp_.get("jobs", {}).items()), ""]
    return "\n".join(lines) + "\n"


STAGES = {"preflight": stage_preflight, "throughput": stage_throughput, "comparisons": stage_comparisons}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole campaign (default 480)")
    parser.add_argument("--output", default=os.environ.get("OUT") or "runs/gpu_campaign", help="where the result files go (default: $OUT when set)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "prac_gpu_campaign_work"),
                        help="scratch folder for runs, caches and logs, emptied first (default: %(default)s)")
    parser.add_argument("--data", type=Path, help="folder with CIFAR-10 train.parquet and test.parquet "
                        "(default: .gpu_stage/data; with --dry-run: none, scikit-learn's digits)")
    parser.add_argument("--dry-run", action="store_true", help="the same code path on CPU with tiny data and sizes")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES),
                        help="run only these stages (their time limits grow to share the budget); default: all")
    parser.add_argument("--epoch-seconds", type=float, help="without the throughput stage: one process's seconds per epoch, "
                        "measured earlier (benchmarks/RESULTS.md), to choose stage 2's schedule")
    parser.add_argument("--slowdown", type=float, default=2.3, help="with --epoch-seconds: how much slower each of the "
                        "side-by-side processes runs (default 2.3, measured on an H200)")
    args = parser.parse_args()
    if args.epoch_seconds is not None and not (args.epoch_seconds > 0 and args.slowdown >= 1):
        parser.error(f"--epoch-seconds {args.epoch_seconds} must be positive and --slowdown {args.slowdown} at least 1")
    if not args.budget >= 30:
        parser.error(f"--budget {args.budget} is too short (at least 30 s)")
    if args.data is None and not args.dry_run:
        args.data = ROOT / ".gpu_stage" / "data"
    if args.data is not None and not (args.data / "train.parquet").is_file():
        parser.error(f"--data {args.data}: no train.parquet there (run benchmarks/gpu_prepare.sh first)")
    work, out = Path(args.workdir).resolve(), Path(args.output).resolve()
    if work == out or work in out.parents or out in work.parents:
        parser.error(f"--workdir {args.workdir} and --output {args.output} must not contain each other")
    data = args.data.resolve() if args.data is not None else None
    plan = dry_plan(data) if args.dry_run else gpu_plan(data)
    if "comparisons" not in args.stages:  # stages 0 and 1 share what stage 2 would have had
        shares = {"preflight": ["preflight"], "throughput": ["eager", "extra", "concurrent"]}
        chosen = [key for stage in args.stages for key in shares[stage]]
        scale = (1 - FINAL_RESERVE_S / args.budget) / sum(LIMITS[key] for key in chosen)
        LIMITS.update({key: LIMITS[key] * scale for key in chosen})
    c = Campaign(args, plan)
    if args.epoch_seconds is not None:
        c.record["given_timing"] = {"epoch_seconds": args.epoch_seconds, "slowdown": args.slowdown}
    c.log(f"campaign: budget {args.budget:.0f} s, output {c.out}, scratch {c.work}")
    for stage in (STAGES[name] for name in STAGES if name in args.stages):
        if c.left() < FINAL_RESERVE_S:
            c.log(f"{stage.__name__} skipped: {c.left():.0f} s left")
            continue
        try:
            stage(c)
        except Exception as exc:  # an orchestration bug must not cost the figures already measured
            import traceback

            c.record["stages"].setdefault("errors", {})[stage.__name__] = traceback.format_exc()[-3000:]
            c.log(f"{stage.__name__} failed: {type(exc).__name__}: {exc}")
        c.save()
        pack(c)
    c.log(f"campaign done in {c.elapsed():.0f} s")
    c.save()
    pack(c)


if __name__ == "__main__":
    main()
