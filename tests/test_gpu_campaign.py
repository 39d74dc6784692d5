"""The GPU campaign (benchmarks/gpu_campaign.py): its dry run takes the whole code path on a CPU, and every
stage stops at its deadline. GPU time comes rarely and briefly, so the campaign must not first fail there."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_campaign  # noqa: E402

FILES = {"campaign.json", "campaign.md", "campaign.log", "profile.txt", "runs.tar.gz", "report_prac.png", "report_cts.png"}


def dry_run(tmp_path: Path, budget: float) -> tuple[subprocess.CompletedProcess, Path, float]:
    out = tmp_path / "out"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_campaign.py"), "--dry-run", "--budget", str(budget),
         "--output", str(out), "--workdir", str(tmp_path / "work")],
        cwd=tmp_path, capture_output=True, text=True, timeout=budget + 120,
    )
    return result, out, time.perf_counter() - started


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("campaign")
    result, out, seconds = dry_run(tmp, 600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "campaign.json").read_text()), seconds


@pytest.mark.slow
def test_dry_run_returns_what_the_device_tool_can_bring_back(campaign):
    out, record, _ = campaign
    files = list(out.iterdir())
    assert {f.name for f in files} == FILES  # no partial files, at most 8, flat
    assert all(f.is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", f.name) and f.stat().st_size < 16 << 20 for f in files)
    assert record["dry_run"] is True and "DRY RUN" in (out / "campaign.md").read_text()
    with tarfile.open(out / "runs.tar.gz") as archive:
        names = archive.getnames()
    assert "runs/prac/level_01/metrics.json" in names and "logs/prac.log" in names
    assert not any("cache" in name for name in names)


@pytest.mark.slow
def test_dry_run_preflight_passes_every_check(campaign):
    _, record, _ = campaign
    checks = record["stages"]["preflight"]["checks"]
    assert set(checks) == {"data_to_device", "ltr_fp32", "ltr_bf16", "prac_cet_cep", "cts", "structured", "channels_last", "compile"}
    assert {name: c["status"] for name, c in checks.items()} == {name: "ok" for name in checks}
    assert checks["ltr_bf16"]["mixed_precision"] == "bf16" and checks["compile"]["compiled"] is True
    assert checks["channels_last"]["channels_last"] is True
    assert checks["prac_cet_cep"]["prac_set_size"] > 0 and checks["structured"]["macs_remaining_pct"] < 100
    assert record["environment"]["torch"]


@pytest.mark.slow
def test_dry_run_throughput_figures(campaign):
    out, record, _ = campaign
    stage = record["stages"]["throughput"]
    figures = stage["figures"]
    for name in ("device_resident_epoch", "compiled_epoch", "dataloader_epoch", "fp32_epoch", "channels_last_epoch"):
        assert figures[name]["status"] == "ok" and figures[name]["seconds_per_epoch"] > 0, name
    epoch = figures["device_resident_epoch"]
    assert epoch["steps_per_epoch"] == -(-epoch["train_examples"] // epoch["batch_size"])
    assert set(figures["per_step_costs"]["ms_per_step"]) == {"no_mask", "mask", "mask_and_tracker"}
    assert figures["profile"]["top"] and "Self CPU" in (out / "profile.txt").read_text()
    concurrent = stage["concurrent"]
    assert concurrent["started_together"] and concurrent["throughput_ratio"] > 0 and len(concurrent["per_process"]) == 2


@pytest.mark.slow
def test_dry_run_comparisons(campaign):
    _, record, _ = campaign
    stage = record["stages"]["comparisons"]
    assert stage["schedule"]["epochs"] == 1 and stage["shortened"]
    assert {name: job["returncode"] for name, job in stage["jobs"].items()} == {
        "ltr": 0, "prac": 0, "random": 0, "ltr_cts": 0, "cts": 0, "prac_retrain": 0, "random_retrain": 0}
    runs = stage["runs"]
    assert all(len(runs[name]["levels"]) == 2 for name in ("ltr", "prac", "random", "ltr_cts", "cts"))
    last = stage["prac_table"][1]
    # the random subsets have PrAC's sizes, the PrAC set is a subset, and both last tickets were trained on the full data
    assert last["random_train_examples"] == last["prac_train_examples"] < last["ltr_train_examples"]
    assert last["prac_full_data_acc"] is not None and last["random_full_data_acc"] is not None
    assert runs["prac"]["full_data"]["1"]["training_steps"] > runs["prac"]["levels"][1]["optimizer_steps"]
    cts = stage["cts_table"][0]
    assert cts["cts_sparsity_pct"] == pytest.approx(cts["sparsity_pct"], abs=0.1) and cts["cts_search_steps"] >= 1


@pytest.mark.slow
def test_every_stage_stops_at_its_deadline(tmp_path):
    """With too little budget for any stage to finish, the campaign still ends on time and records what happened."""
    budget = 45
    result, out, seconds = dry_run(tmp_path, budget)
    assert result.returncode == 0, result.stderr[-3000:]
    assert seconds < budget + 10
    record = json.loads((out / "campaign.json").read_text())
    assert record["elapsed_s"] < budget + 3
    preflight = record["stages"]["preflight"]
    assert preflight["processes"][-1]["timed_out"]  # 6.75 s: not enough for the preflight
    assert {check["status"] for check in preflight["checks"].values()} <= {"ok", "not reached"}
    comparisons = record["stages"]["comparisons"]
    assert comparisons["ended_at_s"] <= comparisons["deadline_s"] + 2
    assert "killed at the stage deadline" in {job["note"] for job in comparisons["jobs"].values()}


def _record(epoch_s: float, slowdown: float) -> dict:
    figures = {"device_resident_epoch": {"status": "ok", "seconds_per_epoch": epoch_s, "steps_per_epoch": 352}}
    return {"stages": {"throughput": {"figures": figures, "concurrent": {"slowdown_per_process": slowdown}}}}


class _Clock:
    def __init__(self, record: dict, plan):
        self.record, self.plan = record, plan


def test_schedule_fits_the_time_left_and_scales_milestones_and_rewind():
    plan = gpu_campaign.gpu_plan(Path("/data"))
    schedule = gpu_campaign.choose_schedule(_Clock(_record(1.0, 1.5), plan), 300.0)
    units = 1.1 * (2 + 0.85 * 9 + (1 - 9 / 160))
    fixed = 3 * gpu_campaign.PROCESS_START_S + 12 * gpu_campaign.LEVEL_OVERHEAD_S
    assert schedule.epochs == int((300 - fixed) / (units * 1.5))
    assert schedule.epochs * units * 1.5 + fixed <= 300  # the critical path fits
    assert schedule.milestones == [round(schedule.epochs / 2), round(3 * schedule.epochs / 4)]
    assert schedule.rewind_step == round(9 / 160 * schedule.epochs * 352)
    # twice as slow: about half the epochs; far too slow: the shortest schedule, never zero
    assert gpu_campaign.choose_schedule(_Clock(_record(2.0, 1.5), plan), 300.0).epochs == int((300 - fixed) / (units * 3))
    assert gpu_campaign.choose_schedule(_Clock(_record(60.0, 3.0), plan), 300.0).epochs == plan.epochs_range[0]
    # no measured slowdown: an assumed one, said so
    record = _record(1.0, 1.5)
    del record["stages"]["throughput"]["concurrent"]["slowdown_per_process"]
    assumed = gpu_campaign.choose_schedule(_Clock(record, plan), 300.0)
    assert assumed.slowdown == 2.0 and "assumed" in assumed.basis
    # stage 1 skipped: an earlier campaign's figures from the command line, else the shortest schedule
    given = gpu_campaign.choose_schedule(_Clock({"stages": {}, "given_timing": {"epoch_seconds": 1.0, "slowdown": 1.5}}, plan), 300.0)
    assert (given.epochs, given.steps_per_epoch) == (schedule.epochs, 352) and "command line" in given.basis
    blind = gpu_campaign.choose_schedule(_Clock({"stages": {}}, plan), 300.0)
    assert blind.epochs == plan.epochs_range[0] and blind.epoch_s is None


def test_refuses_a_scratch_folder_it_did_not_make(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "precious.txt").write_text("keep me")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_campaign.py"), "--dry-run", "--output", str(tmp_path / "out"),
                             "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "did not write" in result.stderr
    assert (tmp_path / "work" / "precious.txt").read_text() == "keep me"
