"""The GPU campaign (benchmarks/gpu_campaign.py): its dry run takes the code path on a CPU, every stage stops at
its deadline, and one real campaign cell runs end to end. GPU time comes rarely and briefly, so the campaign must
not first fail there.

No test here depends on the machine's speed (issue 29): a test that wants every check to pass gives the stage a
deadline far out of reach, and a test of the deadline sets one no machine can meet. The whole dry run (every
preflight check, the throughput stage, two chains of dry cells) takes minutes on a small CPU; it runs only when
asked for:

    PRAC_FULL_DRY_RUN=1 python -m pytest -q tests/test_gpu_campaign.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import campaign_run  # noqa: E402
import gpu_campaign  # noqa: E402

OUT_OF_REACH = 100_000  # seconds: a budget whose stage deadlines no test run comes near
CHECKS = ["data_to_device", "ltr_fp32", "ltr_bf16", "prac_cet_cep", "cts", "structured", "channels_last", "compile"]
full_dry_run = pytest.mark.skipif(not os.environ.get("PRAC_FULL_DRY_RUN"), reason="the whole dry run takes minutes: PRAC_FULL_DRY_RUN=1")


def dry_run(tmp_path: Path, *args: str, budget: float = OUT_OF_REACH) -> tuple[subprocess.CompletedProcess, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_campaign.py"), "--dry-run", "--budget", str(budget),
         "--output", str(out), "--workdir", str(tmp_path / "work"), *args],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, out


def record(out: Path) -> dict:
    return json.loads((out / "campaign.json").read_text())


def assert_returnable(out: Path) -> None:
    """What the device tool can bring back: at most 8 plain files, flat, plainly named, under 16 MiB each."""
    files = list(out.iterdir())
    assert 0 < len(files) <= 8 and not any(f.name.startswith(".partial") for f in files)
    assert all(f.is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", f.name) and f.stat().st_size < 16 << 20 for f in files)


def test_dry_run_preflight_passes_every_check_it_runs(tmp_path):
    """Every check but the compiled model (inductor's cold compile is minutes on a small CPU; test_pipeline tests
    train.compile), with a deadline out of reach: all pass, whatever the machine's speed."""
    checks = [c for c in CHECKS if c != "compile"]
    _, out = dry_run(tmp_path, "--stages", "preflight", "--checks", *checks)
    r = record(out)
    found = r["stages"]["preflight"]["checks"]
    assert set(found) == set(checks)
    assert {name: c["status"] for name, c in found.items()} == {name: "ok" for name in checks}
    assert found["ltr_bf16"]["mixed_precision"] == "bf16" and found["channels_last"]["channels_last"] is True
    assert found["prac_cet_cep"]["prac_set_size"] > 0 and found["structured"]["macs_remaining_pct"] < 100
    assert r["environment"]["torch"] and "DRY RUN" in (out / "campaign.md").read_text()
    assert_returnable(out)


def test_a_stage_stops_at_its_deadline_and_records_what_it_reached(tmp_path):
    """A 2-second preflight: too short for any machine to import torch and run every check. The process is
    killed, the campaign still ends and records each check as passed or not reached."""
    _, out = dry_run(tmp_path, "--stages", "preflight", "--limit", "preflight=2")
    preflight = record(out)["stages"]["preflight"]
    assert preflight["limit_s"] == pytest.approx(2.0)
    assert preflight["processes"][-1]["timed_out"] and preflight["processes"][-1]["seconds"] < 60
    assert set(preflight["checks"]) == set(CHECKS)  # every planned check is recorded, reached or not
    statuses = {check["status"] for check in preflight["checks"].values()}
    assert statuses <= {"ok", "not reached"} and "not reached" in statuses
    assert_returnable(out)


@pytest.fixture(scope="module")
def first_cell(tmp_path_factory):
    """One call that runs E2's level 0 (digits, one epoch, PrAC's statistics recorded): its output folder and ledger.
    The chain test below continues that ledger in a second call, instead of running the same cell again."""
    tmp = tmp_path_factory.mktemp("first_cell")
    _, out = dry_run(tmp, "--stages", "cells", "--cells", "E2-s0-L00", "--ledger", str(tmp / "cells"))
    return out, tmp / "cells"


def test_dry_run_runs_one_real_cell_end_to_end(first_cell):
    """The smallest cell of a chain: a real `prac run`, its ledger entry and the archive the GPU machine sends back."""
    out, ledger = first_cell
    stage = record(out)["stages"]["cells"]
    assert stage["new"] == ["E2-s0-L00"] and stage["cells"]["E2-s0-L00"]["outcome"] == "done"
    entry = json.loads((ledger / "E2-s0-L00" / "cell.json").read_text())
    figures = entry["figures"]
    assert entry["experiment"] == "E2" and entry["seed"] == 0 and entry["dry_run"] is True
    assert entry["environment"]["torch"] and entry["environment"]["device"].startswith("CPU") and entry["cell_wall_s"] > 0
    assert figures["level"] == 0 and figures["sparsity_pct"] == 0 and 0 <= figures["test_acc"] <= 1 and figures["optimizer_steps"] > 0
    assert entry["recipe"]["train"]["seed"] == 0 and entry["recipe"]["ticket"]["include"] == ["type:Conv*"]
    assert entry["recipe"]["data_selection"]["strategy"] == "prac"
    with tarfile.open(ledger / "E2-s0-L00" / "state.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"recipe.yaml", "level_00/mask.safetensors", "level_00/weights.safetensors"} <= names
    assert not any(n.startswith(("level_01", "checkpoints", "rewind")) for n in names)
    with tarfile.open(ledger / "E2-s0-L00" / "rewind.tar.gz") as archive:
        assert {"rewind.safetensors", "rewind.json"} <= set(archive.getnames())
    with tarfile.open(out / "cells.tar.gz") as archive:
        assert "E2-s0-L00/cell.json" in archive.getnames()
    assert_returnable(out)
    assert "| E2-s0-L00 | done |" in (out / "campaign.md").read_text()


@pytest.mark.slow
def test_a_chain_continues_from_the_ledger_in_a_later_call(first_cell, tmp_path):
    """Two calls: the first (the fixture's) ran E2's level 0, the second continues E2 from the ledger's state, retrains
    its last ticket on the full data and starts the random control that waited for it."""
    ledger = tmp_path / "cells"
    shutil.copytree(first_cell[1], ledger)  # the second call tidies the ledger: a copy, the fixture's stays as it was
    _, out = dry_run(tmp_path / "second", "--stages", "cells", "--cells", "E2-s0-L00", "E2-s0-L01", "E2-s0-L02", "E2-s0-R02",
                     "E3-s0-L00", "--ledger", str(ledger))
    stage = record(out)["stages"]["cells"]
    assert stage["done_before"] == ["E2-s0-L00"]  # not run again
    assert set(stage["new"]) == {"E2-s0-L01", "E2-s0-L02", "E2-s0-R02", "E3-s0-L00"}, stage["cells"]
    entries = {p.parent.name: json.loads(p.read_text()) for p in ledger.glob("*/cell.json")}
    sparsity = [entries[f"E2-s0-L0{level}"]["figures"]["sparsity_pct"] for level in range(3)]
    assert sparsity == pytest.approx([0, 20, 36], abs=0.01)
    assert entries["E2-s0-L01"]["restored_from"] == ["E2-s0-L00/rewind.tar.gz", "E2-s0-L00/state.tar.gz"]
    assert entries["E2-s0-L01"]["figures"]["train_examples"] < entries["E2-s0-L00"]["figures"]["train_examples"]  # a PrAC set
    assert entries["E2-s0-R02"]["figures"]["training_steps"] > entries["E2-s0-L02"]["figures"]["optimizer_steps"]
    # the finished chain keeps its small artifacts only; the superseded states are gone
    assert (ledger / "E2-s0-L02" / "artifacts.tar.gz").is_file() and not list(ledger.glob("E2-s0-L0[01]/state.tar.gz"))
    assert not (ledger / "E2-s0-L00" / "rewind.tar.gz").exists()


def test_the_campaign_names_the_checks_the_probe_runs():
    import gpu_probes

    for dry in (True, False):
        assert gpu_campaign.preflight_names(dry) == ["data_to_device", *gpu_probes.preflight_checks(dry)]
    assert gpu_campaign.preflight_names(True) == CHECKS


def test_timing_of_the_cells_is_measured_or_given_or_the_slowest_known():
    class C:
        def __init__(self, record):
            self.record = record

    measured = {"stages": {"throughput": {"figures": {"device_resident_epoch": {"status": "ok", "seconds_per_epoch": 3.0}},
                                          "concurrent": {"slowdown_per_process": 2.0, "processes": 5}}}}
    t = campaign_run.timing(C(measured), dry_run=False)
    assert (t.epoch_s, t.slowdown(1), t.slowdown(3), t.slowdown(5)) == (3.0, 1.0, 1.5, 2.0)
    measured["stages"]["throughput"]["concurrent"]["processes"] = 2  # the dry run measures 2 side by side
    assert campaign_run.timing(C(measured), dry_run=False).slowdown(2) == 2.0
    given = campaign_run.timing(C({"stages": {}, "given_timing": {"epoch_seconds": 4.0, "slowdown": 2.5}}), dry_run=False)
    assert (given.epoch_s, given.slowdown(5)) == (4.0, 2.5) and "command line" in given.basis
    blind = campaign_run.timing(C({"stages": {}}), dry_run=False)
    assert blind.epoch_s == campaign_run.SLOWEST_EPOCH_S and "slowest" in blind.basis


def test_the_step_probe_hook_runs_the_script_when_it_exists(tmp_path, monkeypatch):
    import argparse

    c = gpu_campaign.Campaign(argparse.Namespace(budget=60.0, output=str(tmp_path / "out"), workdir=str(tmp_path / "work")),
                              gpu_campaign.dry_plan(None))
    monkeypatch.setattr(gpu_campaign, "STEP_PROBE", tmp_path / "absent.py")
    assert gpu_campaign.step_probe(c, c.elapsed() + 30)["status"] == "absent"
    script = tmp_path / "gpu_step.py"
    script.write_text("import json, sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
                      "open(out, 'w').write(json.dumps({'eager_ms': 1.5, 'dry': '--dry-run' in sys.argv}))\n")
    monkeypatch.setattr(gpu_campaign, "STEP_PROBE", script)
    result = gpu_campaign.step_probe(c, c.elapsed() + 600)
    assert result["status"] == "ran" and result["figures"] == {"eager_ms": 1.5, "dry": True}
    script.write_text("import time\ntime.sleep(600)\n")  # one that never ends is killed at its deadline
    result = gpu_campaign.step_probe(c, c.elapsed() + 1)
    assert result["process"]["timed_out"] and result["figures"] is None


def test_refuses_a_scratch_folder_it_did_not_make(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "precious.txt").write_text("keep me")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_campaign.py"), "--dry-run", "--output", str(tmp_path / "out"),
                             "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "did not write" in result.stderr
    assert (tmp_path / "work" / "precious.txt").read_text() == "keep me"


# -- the whole dry run, on request ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("campaign")
    cells = ["E1-s0-L00", "E1-s0-L01", "E1-s0-L02", "E4-s0-L00", "E4-s0-L01"]  # two chains; test_a_chain_... covers PrAC's
    _, out = dry_run(tmp, "--stages", "preflight", "throughput", "cells", "--cells", *cells, "--ledger", str(tmp / "cells"))
    return out, record(out), tmp / "cells"


@full_dry_run
@pytest.mark.slow
def test_full_dry_run_preflight_passes_every_check(full_campaign):
    _, r, _ = full_campaign
    checks = r["stages"]["preflight"]["checks"]
    assert set(checks) == set(CHECKS)
    assert {name: c["status"] for name, c in checks.items()} == {name: "ok" for name in checks}
    assert checks["compile"]["compiled"] is True


@full_dry_run
@pytest.mark.slow
def test_full_dry_run_throughput_figures(full_campaign):
    out, r, _ = full_campaign
    stage = r["stages"]["throughput"]
    figures = stage["figures"]
    for name in ("device_resident_epoch", "compiled_epoch", "dataloader_epoch", "fp32_epoch", "channels_last_epoch"):
        assert figures[name]["status"] == "ok" and figures[name]["seconds_per_epoch"] > 0, name
    epoch = figures["device_resident_epoch"]
    assert epoch["steps_per_epoch"] == -(-epoch["train_examples"] // epoch["batch_size"])
    assert set(figures["per_step_costs"]["ms_per_step"]) == {"no_mask", "mask", "mask_and_tracker"}
    assert figures["profile"]["top"] and "Self CPU" in (out / "profile.txt").read_text()
    concurrent = stage["concurrent"]
    assert concurrent["started_together"] and concurrent["throughput_ratio"] > 0 and len(concurrent["per_process"]) == 2
    assert stage["step_probe"]["status"] in ("absent", "ran")


@full_dry_run
@pytest.mark.slow
def test_full_dry_run_cells(full_campaign):
    out, r, ledger = full_campaign
    stage = r["stages"]["cells"]
    assert stage["new"] and all(note["outcome"] == "done" for note in stage["cells"].values()), stage["cells"]
    assert_returnable(out)
    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "campaign_table.py"), "--dry-run", "--ledger", str(ledger)],
                           capture_output=True, text=True, check=True).stdout
    assert "DRY-RUN CELLS" in table and "| 0 | 0.00 |" in table


CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg"


@full_dry_run
@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR / "train.parquet").is_file() or not (ROOT.parent / "shared" / "timm").is_dir(),
                    reason="needs ../shared/data/cifar10-jpeg and ../shared/timm")
def test_dry_run_e7_timm_script_keeps_pruned_weights_zero(tmp_path):
    """E7 on a CPU (--light: no bf16, channels_last or compile; 512 images, 2 epochs): timm's real script, patched,
    one ticket round; about a minute."""
    ledger = tmp_path / "cells"
    dry_run(tmp_path, "--stages", "cells", "--cells", "E7-s0-T00", "--data", str(CIFAR), "--ledger", str(ledger))
    figures = json.loads((ledger / "E7-s0-T00" / "cell.json").read_text())["figures"]
    assert figures["passed"] and figures["rewind_saved"] and figures["checkpoints"] >= 1
    assert figures["pruned_weights"] > 0 and set(figures["pruned_nonzero"].values()) == {0}
