"""A real two-process CPU run (torchrun, gloo): the processes join, and PrAC selects what one process would."""

import json
import subprocess
import sys

import yaml

import prac_plugin
from prac_plugin.selection import PracIndex

from conftest import quick_recipe


def run_two_processes(recipe: dict, tmp_path, port: int) -> None:
    """``prac run`` under torchrun with two CPU processes (gloo), into ``tmp_path / "two"``."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "prac_plugin", "run", str(path), "--output", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_two_process_prac_run_matches_one_process(tmp_path):
    recipe = quick_recipe(data_selection={"strategy": "prac"}, ticket={"levels": 1}, train={"epochs": 4})
    run_two_processes(recipe, tmp_path, port=29533)
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
    run_two_processes(recipe, tmp_path, port=29534)
    metrics = json.loads((tmp_path / "two" / "level_01" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["remaining_weights"] == round(0.05 * (64 * 300 + 300 * 100))
    assert metrics["cts_search_steps"] == 10 and metrics["test_acc"] > 0.3
