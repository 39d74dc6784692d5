"""Two "machines" on this one: the shipped multi-node config run as two `accelerate launch --num_machines 2
--machine_rank 0|1 --main_process_ip 127.0.0.1` commands, a real two-node rendezvous over the loopback (one
process per node on a CPU). The run folder must be one process's; losing a node mid-level must end the other
in one line, and the same two commands must resume."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import quick_recipe
from test_fsdp import ENV, finish, launch, launch_one
from test_multiprocess import CPU_CONFIG, descendants, free_port
from test_resume import RECIPE, assert_same_run, level_checkpoints

pytestmark = pytest.mark.slow  # launched processes

ROOT = Path(__file__).resolve().parents[1]
MULTINODE_CONFIG = ROOT / "recipes" / "accelerate" / "multinode_2x8_bf16.yaml"


def launch_nodes(recipe: dict, tmp_path: Path, out: str) -> list[subprocess.Popen]:
    """The config's two machines, one process each on the CPU, fp32 (the config's bf16 overridden)."""
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    port = str(free_port())
    return [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(MULTINODE_CONFIG), "--num_machines", "2",
         "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port,
         "--mixed_precision", "no", "-m", "prac_plugin", "run", str(path), "--output", str(tmp_path / out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV) for rank in (0, 1)]


def test_two_nodes_over_the_loopback_give_one_process_masks(tmp_path):
    recipe = quick_recipe(ticket={"levels": 3})
    nodes, single = launch_nodes(recipe, tmp_path, "nodes"), launch_one(recipe, tmp_path, "one")
    logs = [finish(node) for node in nodes]
    finish(single)
    assert sum(log.count("Run directory:") for log in logs) == 1  # one process of the two reports
    assert sorted(p.name for p in (tmp_path / "nodes").rglob("*") if p.is_file()) == sorted(p.name for p in (tmp_path / "one").rglob("*") if p.is_file())
    for level in range(4):
        left, right = (load_file(tmp_path / d / f"level_{level:02d}" / "mask.safetensors") for d in ("nodes", "one"))
        assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left), level


def test_a_node_lost_mid_level_ends_the_other_in_one_line_and_the_same_commands_resume(tmp_path):
    """Node 1 (its launcher and its process) killed inside level 1: node 0 stops with one line naming the lost
    connection (the transport's reset, not a collective's timeout) and exit code 75; the same two commands resume to the files of an uninterrupted
    two-process run."""
    reference = launch(CPU_CONFIG, RECIPE, tmp_path, "reference")
    nodes = launch_nodes(RECIPE, tmp_path, "killed")
    deadline = time.monotonic() + 900  # a hang guard, far out of reach of a slow machine
    while not any((c / "meta.json").is_file() for c in level_checkpoints(tmp_path / "killed", 1)):
        assert all(node.poll() is None for node in nodes) and time.monotonic() < deadline
        time.sleep(0.002)
    for pid in [nodes[1].pid, *descendants(nodes[1].pid)]:
        os.kill(pid, 9)
    log, _ = nodes[0].communicate(timeout=600)  # a hang guard: gloo's own collective timeout is 30 minutes
    nodes[1].communicate(timeout=60)
    lines = [line for line in log.splitlines() if line.startswith("prac: error:")]
    assert len(lines) == 1 and "lost another process of this run" in lines[0] and "Run the same command again" in lines[0], log[-3000:]
    assert "[rank0]: Traceback" not in log and "exitcode  : 75" in log
    assert not (tmp_path / "killed" / "level_01" / "metrics.json").exists()
    logs = [finish(node) for node in launch_nodes(RECIPE, tmp_path, "killed")]
    assert any("Resuming level 1 at step" in log for log in logs)
    finish(reference)
    assert_same_run(tmp_path / "reference", tmp_path / "killed", levels=2)
