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
                 and of the forgetting tracker; a profiler table; K runs side by side against one; and, when
                 benchmarks/gpu_step.py exists, its eager vs captured-step figures (optional, see `step_probe`).
                 Not in the default stages: RESULTS.md holds its last figures; ask for it with --stages.
  2. cells       the papers' comparisons on the converged schedule of recipes/campaign/, one cell (a level of
                 one experiment at one seed) at a time: the pending cells of the ledger
                 (benchmarks/results/cells/, see campaign_ledger.py) that fit the time left run side by side,
                 and each one that finishes is written to the ledger. campaign_table.py turns the ledger into
                 RESULTS.md's campaign section.

Outputs (at most 7 files, flat, as the device tool returns them): campaign.json (every figure), campaign.md
(tables), campaign.log, profile.txt (throughput stage), runs.tar.gz (logs and small JSON of every stage),
cells.tar.gz (this call's new ledger entries: extract into benchmarks/results/cells and commit).

    # here: stage the wheels and the data, print the command for the GPU machine
    bash benchmarks/gpu_prepare.sh
    # there (what gpu_prepare.sh prints):
    python3 benchmarks/gpu_campaign.py --budget 490 --data .gpu_stage/data
    # back here: the new cells into the ledger, then the table
    tar -xzf FILES_AT/cells.tar.gz -C benchmarks/results/cells && python benchmarks/campaign_ledger.py tidy
    python benchmarks/campaign_table.py --write
    # anywhere, on a CPU: the same code path on scikit-learn's digits, numbers meaningless
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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_cells import DRY_SCALE  # noqa: E402
from campaign_ledger import LEDGER  # noqa: E402
from campaign_run import stage_cells  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROBES = Path(__file__).resolve().parent / "gpu_probes.py"
STEP_PROBE = Path(__file__).resolve().parent / "gpu_step.py"  # another engineer's; optional

# stage limits as fractions of the budget; the cells stage gets what is left less FINAL_RESERVE_S for the last writes
# measured on the H200 (2026-11-29): preflight 69 s, eager 65 s, extra 45-80 s (compile cached by preflight or cold),
# concurrency 32 s; the step probe has no measurement yet
LIMITS = {"preflight": 0.15, "eager": 0.14, "extra": 0.12, "concurrent": 0.07, "step": 0.08}
THROUGHPUT_PARTS = ("eager", "extra", "concurrent", "step")
FINAL_RESERVE_S = 20.0
DEFAULT_STAGES = ("preflight", "cells")
# the preflight's checks, in gpu_probes.py's order (it refuses a name it does not know); the dry run has no fp16
# (the plugin refuses fp16 on a CPU). The campaign names them so that a process killed before it wrote anything
# still leaves every check recorded, as "not reached".
PREFLIGHT_CHECKS = ("data_to_device", "ltr_fp32", "ltr_bf16", "ltr_fp16_grad_scaler", "prac_cet_cep", "cts", "structured",
                    "channels_last", "compile")


def preflight_names(dry_run: bool, chosen: Optional[list[str]] = None) -> list[str]:
    names = [n for n in PREFLIGHT_CHECKS if not (dry_run and n == "ltr_fp16_grad_scaler")]
    return [n for n in names if n in chosen] if chosen else names


@dataclass
class Plan:
    """What a mode runs: data, model and the sizes of every probe; the cells' scale (None: the campaign's own)."""

    dry_run: bool
    recipe: dict
    preflight_overrides: list[str]
    throughput_overrides: list[str]
    probe: dict
    concurrent_processes: int
    cell_scale: Optional[dict]
    cell_slots: int  # most cells side by side


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
        concurrent_processes=5, cell_scale=None, cell_slots=4,
    )


def dry_plan(data: Optional[Path]) -> Plan:
    """Tiny sizes on a CPU: scikit-learn's digits, or (``data`` given) a slice of the CIFAR-10 copy for the probes."""
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
        concurrent_processes=2, cell_scale=DRY_SCALE, cell_slots=2,
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
        self.final_reserve_s = FINAL_RESERVE_S
        self.data: Optional[Path] = None  # the CIFAR-10 folder the cells read (None: the dry run's digits)
        self.ledger: Path = LEDGER
        self.slots = plan.cell_slots
        self.only_cells: Optional[list[str]] = None
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
    while not runs or c.elapsed() < deadline - 5:  # a restart only with 5 s left for it
        runs.append(c.probe("preflight", deadline, out, name=f"preflight_{len(runs)}"))
        if runs[-1]["returncode"] == 0 or runs[-1]["timed_out"]:
            break
        c.log("preflight process died; starting it again for the checks it had not reached")
    checks = read_lines(out)
    c.record["environment"] = checks.pop("environment", {})
    checks.pop("plan", None)
    planned = c.plan.probe["checks"]
    for name in planned:
        checks.setdefault(name, {"status": "not reached", "error": "the preflight process ended (deadline or crash) before this check"})
    c.record["stages"]["preflight"] = {"limit_s": LIMITS["preflight"] * c.budget, "processes": runs, "checks": checks}
    c.save()


def stage_throughput(c: Campaign) -> None:
    out = c.work / "throughput.jsonl"
    stage = c.record["stages"]["throughput"] = {"limits_s": {k: LIMITS[k] * c.budget for k in THROUGHPUT_PARTS}}
    stage["eager_process"] = c.probe("eager", c.elapsed() + LIMITS["eager"] * c.budget, out)
    stage["figures"] = read_lines(out)
    c.save()
    stage["extra_process"] = c.probe("extra", c.elapsed() + LIMITS["extra"] * c.budget, out)
    stage["figures"] = read_lines(out)
    c.save()
    stage["concurrent"] = concurrency(c, c.elapsed() + LIMITS["concurrent"] * c.budget)
    c.save()
    stage["step_probe"] = step_probe(c, c.elapsed() + LIMITS["step"] * c.budget)
    c.save()


def step_probe(c: Campaign, deadline: float) -> dict:
    """Optional hook: benchmarks/gpu_step.py (eager vs captured CUDA-graph step throughput), when that file exists.

    Contract: run as ``python benchmarks/gpu_step.py --out FILE`` (plus ``--dry-run`` in a dry run), in its own
    process, killed at the deadline like every probe; it writes JSON to FILE (one object, or one object per
    line). Whatever FILE holds at the end is recorded as it is; nothing else in the campaign depends on it.
    """
    if not STEP_PROBE.is_file():
        return {"status": "absent", "note": f"{STEP_PROBE.name} does not exist: nothing run"}
    out = c.work / "step.json"
    out.unlink(missing_ok=True)
    outcome = c.run_until("step", [str(STEP_PROBE), "--out", str(out), *(["--dry-run"] if c.plan.dry_run else [])], deadline)
    figures = None
    if out.is_file():
        text = out.read_text(errors="replace")
        try:
            figures = json.loads(text)
        except ValueError:
            figures = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{") and _parses(line)]
    return {"status": "ran", "process": outcome, "figures": figures}


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


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
    lines += cells_markdown(record["stages"].get("cells"))
    return "\n".join(lines) + "\n"


def stage_cells_here(c: Campaign) -> None:
    stage_cells(c, c.plan.cell_scale, c.data, c.ledger, c.slots, only=c.only_cells)


def cells_markdown(stage: Optional[dict]) -> list[str]:
    if not stage:
        return []
    t = stage["timing"]
    lines = ["## Stage 2: campaign cells", "",
             f"Ledger {stage['ledger']}: {len(stage['done_before'])} cells done before this call; {stage['slots']} side by side; "
             f"{t['epoch_s']:.2f} s per epoch alone ({t['basis']}). New this call: {', '.join(stage.get('new', [])) or 'none'}; "
             f"{stage.get('pending', '?')} still pending." + (f" {stage['why_none']}." if stage.get("why_none") else ""), "",
             "| cell | outcome | seconds | estimate s | side by side |", "|---|---|---:|---:|---:|"]
    for cell_id, note in stage["cells"].items():
        lines.append(f"| {cell_id} | {note['outcome'][:120]} | {_fmt(note.get('seconds'), 0)} | {_fmt(note.get('estimate_s'), 0)} | "
                     f"{note.get('side_by_side', '-')} |")
    return lines + [""]


STAGES = {"preflight": stage_preflight, "throughput": stage_throughput, "cells": stage_cells_here}


def parse_limits(items: list[str]) -> dict[str, float]:
    limits = {}
    for item in items:
        name, _, seconds = item.partition("=")
        if name not in LIMITS or not seconds:
            raise ValueError(f"--limit {item!r}: write PART=SECONDS, PART one of {', '.join(LIMITS)}")
        limits[name] = float(seconds)
    return limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole campaign (default 480)")
    parser.add_argument("--output", default=os.environ.get("OUT") or "runs/gpu_campaign", help="where the result files go (default: $OUT when set)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "prac_gpu_campaign_work"),
                        help="scratch folder for runs, caches and logs, emptied first (default: %(default)s)")
    parser.add_argument("--data", type=Path, help="folder with CIFAR-10 train.parquet and test.parquet "
                        "(default: .gpu_stage/data; with --dry-run: none, scikit-learn's digits)")
    parser.add_argument("--dry-run", action="store_true", help="the same code path on CPU with tiny data and sizes")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(DEFAULT_STAGES),
                        help=f"run only these stages, in this script's order (default: {' '.join(DEFAULT_STAGES)})")
    parser.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                        help=f"a stage part's time limit in seconds instead of its share of the budget ({', '.join(LIMITS)}); repeatable")
    parser.add_argument("--checks", nargs="+", help="preflight: only these checks (default: all)")
    parser.add_argument("--ledger", type=Path, help=f"the cells' ledger (default: {LEDGER.relative_to(ROOT)}; "
                        "with --dry-run: a folder in the scratch folder, emptied with it)")
    parser.add_argument("--cells", nargs="+", metavar="CELL", help="only these cells (ids as E1-s0-L00), when pending and ready")
    parser.add_argument("--slots", type=int, help="most cells side by side (default 4 on a GPU, 2 in a dry run)")
    parser.add_argument("--epoch-seconds", type=float, help="without the throughput stage: one process's seconds per epoch, "
                        "measured earlier (benchmarks/RESULTS.md), to size the cells (default: the slowest measured, 4.8)")
    parser.add_argument("--slowdown", type=float, default=2.3, help="with --epoch-seconds: how much slower each of 5 "
                        "side-by-side processes runs (default 2.3, measured on an H200)")
    args = parser.parse_args()
    if args.epoch_seconds is not None and not (args.epoch_seconds > 0 and args.slowdown >= 1):
        parser.error(f"--epoch-seconds {args.epoch_seconds} must be positive and --slowdown {args.slowdown} at least 1")
    if not args.budget >= 30:
        parser.error(f"--budget {args.budget} is too short (at least 30 s)")
    try:
        fixed = parse_limits(args.limit)
    except ValueError as exc:
        parser.error(str(exc))
    if args.data is None and not args.dry_run:
        args.data = ROOT / ".gpu_stage" / "data"
    if args.data is not None and not (args.data / "train.parquet").is_file():
        parser.error(f"--data {args.data}: no train.parquet there (run benchmarks/gpu_prepare.sh first)")
    work, out = Path(args.workdir).resolve(), Path(args.output).resolve()
    if work == out or work in out.parents or out in work.parents:
        parser.error(f"--workdir {args.workdir} and --output {args.output} must not contain each other")
    data = args.data.resolve() if args.data is not None else None
    plan = dry_plan(data) if args.dry_run else gpu_plan(data)
    unknown = set(args.checks or []) - set(PREFLIGHT_CHECKS)
    if unknown:
        parser.error(f"--checks: unknown {', '.join(sorted(unknown))}; known: {', '.join(PREFLIGHT_CHECKS)}")
    plan.probe["checks"] = preflight_names(plan.dry_run, args.checks)
    stages = [name for name in STAGES if name in args.stages]
    if "cells" not in stages:  # the other stages share what the cells would have had
        parts = {"preflight": ["preflight"], "throughput": list(THROUGHPUT_PARTS)}
        chosen = [key for stage in stages for key in parts[stage] if key not in fixed]
        if chosen:
            scale = (1 - FINAL_RESERVE_S / args.budget) / sum(LIMITS[key] for key in chosen)
            LIMITS.update({key: LIMITS[key] * scale for key in chosen})
    LIMITS.update({key: seconds / args.budget for key, seconds in fixed.items()})
    c = Campaign(args, plan)
    c.data = data
    c.ledger = (args.ledger or (work / "ledger" if args.dry_run else LEDGER)).resolve()
    c.slots = args.slots or plan.cell_slots
    c.only_cells = args.cells
    if args.epoch_seconds is not None:
        c.record["given_timing"] = {"epoch_seconds": args.epoch_seconds, "slowdown": args.slowdown}
    c.record["limits_s"] = {key: LIMITS[key] * args.budget for key in LIMITS}
    c.log(f"campaign: budget {args.budget:.0f} s, stages {' '.join(stages)}, output {c.out}, scratch {c.work}")
    for stage in (STAGES[name] for name in stages):
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
