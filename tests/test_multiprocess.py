"""Real two-process CPU runs through `accelerate launch` (gloo): the processes join, statistics are gathered
exactly once, masks agree, and PrAC selects what one process would."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import prac_plugin
from prac_plugin.index_files.format import PracIndex

from conftest import quick_recipe

pytestmark = pytest.mark.slow  # launched processes

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"


def free_port() -> int:
    """A port nothing listens on now (fixed ports collide when several test sessions share a machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(args: list[str], port: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
               "--main_process_port", str(port or free_port()), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_two_processes(recipe: dict, tmp_path) -> subprocess.CompletedProcess:
    """``prac run`` with the repository's two-process CPU accelerate config, into ``tmp_path / "two"``."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return accelerate_launch(["-m", "prac_plugin", "run", str(path), "--output", str(tmp_path / "two")])


def test_gathered_statistics_and_mask_agreement_under_two_processes():
    result = accelerate_launch([str(ROOT / "tests" / "distributed_checks.py")])
    assert "passed on rank 0 of 2" in result.stdout and "passed on rank 1 of 2" in result.stdout


def test_two_process_prac_run_matches_one_process(tmp_path):
    recipe = quick_recipe(data_selection={"strategy": "prac"}, ticket={"levels": 1}, train={"epochs": 4})
    result = run_two_processes(recipe, tmp_path)
    assert result.stdout.count("Run directory:") == 1  # one process reports
    prac_plugin.run(recipe, str(tmp_path / "one"))
    for level in (0, 1):
        two = json.loads((tmp_path / "two" / f"level_{level:02d}" / "metrics.json").read_text())
        one = json.loads((tmp_path / "one" / f"level_{level:02d}" / "metrics.json").read_text())
        assert two["num_processes"] == 2 and one["num_processes"] == 1
        assert two["examples_seen"] == one["examples_seen"]  # every example once per epoch, summed over processes
        assert two["remaining_weights"] == one["remaining_weights"]
    for level in (0, 1):
        a = PracIndex.load(tmp_path / "one" / "prac" / f"round_{level:02d}.prac.safetensors")
        b = PracIndex.load(tmp_path / "two" / "prac" / f"round_{level:02d}.prac.safetensors")
        overlap = len(set(a.rows.tolist()) & set(b.rows.tolist()))
        # DDP averages two half-batch gradients: the same math as one process up to float rounding
        assert overlap / len(set(a.rows.tolist()) | set(b.rows.tolist())) >= 0.95


def test_two_process_cts_search(tmp_path):
    """The mask logits' gradient is averaged over processes; the ticket keeps exactly round(density * d)."""
    recipe = quick_recipe(train={"epochs": 2})
    recipe["ticket"] = {"strategy": "cts", "densities": [0.05], "ignore": ["fc"], "rewind": "1ep", "search_steps": 10, "search_batch_size": 256}
    run_two_processes(recipe, tmp_path)
    metrics = json.loads((tmp_path / "two" / "level_01" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["remaining_weights"] == round(0.05 * (64 * 300 + 300 * 100))
    assert metrics["cts_search_steps"] == 10 and metrics["test_acc"] > 0.3


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return found


def rank_of(pid: int) -> int | None:
    try:
        variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in variables if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def test_a_worker_killed_inside_a_level_fails_the_launch_and_the_relaunch_resumes_exactly(tmp_path):
    """SIGKILL to rank 1 mid-level: the launcher stops the other rank and reports the failure; the relaunch
    resumes every rank from its own checkpointed state to the result of an uninterrupted run."""
    from test_resume import RECIPE, assert_same_run, level_checkpoints

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))

    def launch(out):
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG), "--main_process_port", str(free_port()),
                   "-m", "prac_plugin", "run", str(recipe), "--output", str(out)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})

    def finish(out):
        process = launch(out)
        log, _ = process.communicate(timeout=300)
        assert process.returncode == 0, log[-3000:]
        return log

    finish(tmp_path / "reference")
    process = launch(tmp_path / "killed")
    deadline = time.monotonic() + 900  # a hang guard, far out of reach of a slow machine
    while not any((c / "meta.json").is_file() for c in level_checkpoints(tmp_path / "killed", 1)):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    worker = next(pid for pid in descendants(process.pid) if rank_of(pid) == 1)
    os.kill(worker, signal.SIGKILL)
    log, _ = process.communicate(timeout=600)
    assert process.returncode != 0 and "exitcode  : -9" in log  # torchrun's failure report names the signal
    assert not (tmp_path / "killed" / "level_01" / "metrics.json").exists()
    assert "Resuming level 1 at step" in finish(tmp_path / "killed")
    assert_same_run(tmp_path / "reference", tmp_path / "killed", levels=2)
