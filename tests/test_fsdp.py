"""FSDP2 runs on two CPU processes (gloo), launched as users launch them: `accelerate launch` with the shipped
FSDP2 config, and torchrun with ``train.sharding: fsdp2``. A sharded run must write the run folder one process
(or DDP) writes: the same masks at every level, the same PrAC sets, pruned weights exactly zero, and a kill -9
of one rank resumed to the uninterrupted run's files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import prac_plugin
from prac_plugin.engine.sharding import effective_sharding
from prac_plugin.errors import PracError

from conftest import quick_recipe
from test_multiprocess import CPU_CONFIG, descendants, free_port, rank_of
from test_resume import RECIPE, assert_same_run, level_checkpoints

pytestmark = pytest.mark.slow  # launched processes

ROOT = Path(__file__).resolve().parents[1]
FSDP_CONFIG = ROOT / "recipes" / "accelerate" / "fsdp2_cpu_2proc.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every run: identical float sums


def launch(config: Path | None, recipe: dict, tmp_path: Path, out: str) -> subprocess.Popen:
    """``prac run`` on two processes: ``accelerate launch`` with ``config``, or torchrun when it is None."""
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    port = str(free_port())
    if config is None:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    else:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port", port]
    return subprocess.Popen([*launcher, "-m", "prac_plugin", "run", str(path), "--output", str(tmp_path / out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def launch_one(recipe: dict, tmp_path: Path, out: str) -> subprocess.Popen:
    """``prac run`` in one process, with the launched processes' thread count."""
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return subprocess.Popen([sys.executable, "-m", "prac_plugin", "run", str(path), "--output", str(tmp_path / out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def finish(process: subprocess.Popen) -> str:
    log, _ = process.communicate(timeout=600)
    assert process.returncode == 0, log[-3000:]
    return log


def metrics(run: Path, level: int) -> dict:
    return json.loads((run / f"level_{level:02d}" / "metrics.json").read_text())


def assert_pruned_weights_zero(run: Path, level: int) -> None:
    mask, weights = (load_file(run / f"level_{level:02d}" / name) for name in ("mask.safetensors", "weights.safetensors"))
    for name, keep in mask.items():
        assert bool((weights[name][~keep.bool()] == 0).all()), (level, name)


def test_fsdp2_ltr_and_prac_run_writes_the_one_process_run_folder(tmp_path):
    """A LeNet for 3 levels under accelerate's FSDP2 config, gradients clipped by their global norm (over the
    shards; a clip that did nothing would leave levels apart: unclipped weights move by far more): sharded (each process held half the parameters),
    every level's mask identical to one process's, accuracies and weights within float rounding, pruned weights
    exactly zero, and each PrAC round's set as one process selects it (where the level's batches split evenly)."""
    recipe = quick_recipe(ticket={"levels": 3}, train={"epochs": 3, "grad_clip": 0.5}, data_selection={"strategy": "prac"})
    process, single = launch(FSDP_CONFIG, recipe, tmp_path, "fsdp"), launch_one(recipe, tmp_path, "one")
    finish(process), finish(single)
    fsdp, one = tmp_path / "fsdp", tmp_path / "one"
    assert sorted(p.name for p in fsdp.rglob("*") if p.is_file()) == sorted(p.name for p in one.rglob("*") if p.is_file())
    for level in range(4):
        sharded, single = metrics(fsdp, level), metrics(one, level)
        assert sharded["num_processes"] == 2 and sharded["sharding"]["mode"] == "fsdp2" and single["sharding"] == "none"
        assert 0.45 < sharded["sharding"]["local_fraction"] < 0.55  # rank 0 held about half of every parameter
        left, right = (load_file(d / f"level_{level:02d}" / "mask.safetensors") for d in (fsdp, one))
        assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left), level
        left, right = (load_file(d / f"level_{level:02d}" / "weights.safetensors") for d in (fsdp, one))
        # within rounding, and the one real difference: a last batch split unevenly over two processes is the
        # mean of their two means (Accelerate's sharded batches), not of its examples
        assert all(torch.allclose(left[k], right[k], rtol=0, atol=1e-3) for k in left), level
        assert abs(sharded["test_acc"] - single["test_acc"]) <= 1 / 359  # one test image at most
        assert sharded["examples_seen"] == single["examples_seen"]
        assert_pruned_weights_zero(fsdp, level)
        rows = [set(load_file(d / "prac" / f"round_{level:02d}.prac.safetensors")["rows"].tolist()) for d in (fsdp, one)]
        if single["train_examples"] % recipe["train"]["batch_size"] % 2 == 0:  # every batch split evenly
            assert rows[0] == rows[1], level
        else:  # an uneven last batch (the mean of two means) trains slightly different weights
            assert len(rows[0] & rows[1]) / len(rows[0] | rows[1]) >= 0.9, level


def test_fsdp2_timm_cnn_with_batchnorm_matches_ddp(tmp_path):
    """A timm CNN with BatchNorm (each process normalizes its half batch, as under DDP), pruned layer by layer for
    3 levels on PrAC sets with early-bird stopping: the FSDP2 run and the DDP run of the same two processes give the same masks, and weights and BatchNorm buffers within float rounding
    (FSDP2 keeps process 0's buffers, as DDP's broadcast does)."""
    recipe = quick_recipe(model={"name": "cifar_resnet20", "kwargs": {"width": 4}}, ticket={"levels": 3, "scope": "layer", "ignore": ["fc", "conv1"]},
                          train={"epochs": 4}, data_selection={"strategy": "prac", "early_bird": True, "early_bird_window": 1, "early_bird_eps": 0.3})
    fsdp = launch(FSDP_CONFIG, recipe, tmp_path, "fsdp")
    finish(fsdp)
    finish(launch(CPU_CONFIG, recipe, tmp_path, "ddp"))
    for level in range(4):
        assert metrics(tmp_path / "fsdp", level)["sharding"]["mode"] == "fsdp2" and metrics(tmp_path / "ddp", level)["sharding"] == "none"
        for name in ("mask.safetensors", "weights.safetensors"):
            left, right = (load_file(tmp_path / d / f"level_{level:02d}" / name) for d in ("fsdp", "ddp"))
            assert left.keys() == right.keys()
            for key in left:
                if left[key].is_floating_point():
                    assert torch.allclose(left[key], right[key], rtol=1e-5, atol=1e-6), (level, key)
                else:
                    assert torch.equal(left[key], right[key]), (level, key)
        assert_pruned_weights_zero(tmp_path / "fsdp", level)
        # PrAC's early-bird hook saw the plain model refreshed from the shards: it stopped where DDP's stopped
        history = [metrics(tmp_path / d, level)["history"] for d in ("fsdp", "ddp")]
        assert history[0] == history[1], level
    assert any(record.get("stopped_early") for level in range(1, 4) for record in metrics(tmp_path / "fsdp", level)["history"])


def test_fsdp2_rank_killed_mid_level_resumes_to_the_uninterrupted_run(tmp_path):
    """SIGKILL to rank 1 inside level 1 of an accelerate-launched FSDP2 run: the launch fails, and the same
    command resumes from the checkpoint (weights and optimizer state gathered whole, then sharded again) to the
    files of an uninterrupted run launched by torchrun with ``train.sharding: fsdp2``."""
    reference = launch(None, {**RECIPE, "train": {**RECIPE["train"], "sharding": "fsdp2"}}, tmp_path, "reference")
    finish(reference)
    process = launch(FSDP_CONFIG, RECIPE, tmp_path, "killed")
    deadline = time.monotonic() + 900  # a hang guard, far out of reach of a slow machine
    while not any((c / "meta.json").is_file() for c in level_checkpoints(tmp_path / "killed", 1)):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(next(pid for pid in descendants(process.pid) if rank_of(pid) == 1), signal.SIGKILL)
    log, _ = process.communicate(timeout=600)
    assert process.returncode != 0 and "exitcode  : -9" in log
    assert not (tmp_path / "killed" / "level_01" / "metrics.json").exists()
    assert "Resuming level 1 at step" in finish(launch(FSDP_CONFIG, RECIPE, tmp_path, "killed"))
    assert_same_run(tmp_path / "reference", tmp_path / "killed", levels=2)
    for level in range(3):
        assert_pruned_weights_zero(tmp_path / "killed", level)


def test_what_sharding_cannot_honour_is_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(PracError, match="needs several processes"):
        prac_plugin.run(quick_recipe(train={"sharding": "fsdp2"}), str(tmp_path / "one"))
    assert not (tmp_path / "one").exists() or not any((tmp_path / "one").glob("level_*"))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(PracError, match="FSDP version 1"):
        effective_sharding("none")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert effective_sharding("none") == "fsdp2"
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert effective_sharding("none") == "none" and effective_sharding("fsdp2") == "fsdp2"
    with pytest.raises(PracError, match="train.sharding"):
        prac_plugin.run(quick_recipe(train={"sharding": "zero3"}), str(tmp_path / "bad"))


def _cts_recipe() -> dict:
    recipe = quick_recipe()
    recipe["ticket"] = {"strategy": "cts", "densities": [0.05, 0.02], "ignore": ["fc"], "rewind": "1ep", "search_steps": 10,
                        "search_batch_size": 256}
    return recipe


def _structured_recipe() -> dict:
    recipe = quick_recipe(model={"name": "cifar_resnet20", "kwargs": {"width": 4}})
    recipe["ticket"] = {"strategy": "structured", "levels": 2, "fraction": 0.2, "scope": "global", "min_keep": 0.1, "rewind": "1ep"}
    return recipe


@pytest.mark.parametrize("make_recipe", [_cts_recipe, _structured_recipe], ids=["cts", "structured"])
def test_searched_and_rebuilt_tickets_under_fsdp2_match_ddp(tmp_path, make_recipe):
    """CTS searches its masks on the plain model (the mask logits' gradients averaged over the processes, as in
    DDP) and structured rebuilds a smaller model each level; either way the engine shards each level's copy, and
    the run folder is the DDP run's: the same masks, the same weights to the bit."""
    recipe = make_recipe()
    fsdp, ddp = launch(FSDP_CONFIG, recipe, tmp_path, "fsdp"), launch(CPU_CONFIG, recipe, tmp_path, "ddp")
    finish(fsdp), finish(ddp)
    for level in range(3):
        assert metrics(tmp_path / "fsdp", level)["sharding"]["mode"] == "fsdp2"
        for name in ("mask.safetensors", "weights.safetensors"):
            left, right = (load_file(tmp_path / d / f"level_{level:02d}" / name) for d in ("fsdp", "ddp"))
            assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left), (level, name)


BF16_CHECK = """
import os, torch, torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from prac_plugin.engine.sharding import Sharding
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"])
dist.init_process_group("gloo", rank=0, world_size=1)
torch.manual_seed(0)
plain = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
sharding = Sharding("bf16")
sharded = sharding.shard(plain)
seen = []
sharded[0].register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))  # after FSDP2's gather
sharded[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
loss = sharded(torch.randn(5, 8)).float().square().mean()
loss.backward()
assert seen == [torch.bfloat16, torch.bfloat16], seen  # computed in bf16
assert all(isinstance(p, DTensor) and p.to_local().dtype == torch.float32 for p in sharded.parameters())  # fp32 master weights
assert all(p.grad.to_local().dtype == torch.float32 for p in sharded.parameters())
before = [p.detach().clone() for p in plain.parameters()]
with torch.no_grad():
    for p in sharded.parameters():
        p.to_local().add_(1.0)
sharding.gather(sharded, plain)
assert all(p.dtype == torch.float32 and torch.equal(p, b + 1.0) for p, b in zip(plain.parameters(), before))
dist.destroy_process_group()
print("bf16 sharding ok")
"""


def test_bf16_sharding_computes_in_bf16_and_keeps_fp32_weights():
    """FSDP2's mixed-precision policy as `Sharding` sets it for train.mixed_precision: bf16: the forward pass runs
    in bf16 on the gathered parameters, the shards and their gradients stay fp32, and the plain model gathered
    from them is fp32 (what the run folder saves)."""
    result = subprocess.run([sys.executable, "-c", BF16_CHECK], capture_output=True, text=True, timeout=300,
                            env={**ENV, "PORT": str(free_port())})
    assert result.returncode == 0 and "bf16 sharding ok" in result.stdout, result.stderr[-3000:]


OPTIMIZER_STATE_CHECK = """
import torch, torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from prac_plugin.engine.sharding import Sharding
dist.init_process_group("gloo")
torch.manual_seed(0)
plain = nn.Sequential(nn.Linear(8, 15), nn.ReLU(), nn.Linear(15, 3))  # 15 and 3 rows: shards of unequal size
sharding = Sharding()
x = torch.randn(6, 8)

def trained(model, optimizer, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()

a = sharding.shard(plain)
opt_a = torch.optim.AdamW(a.parameters(), lr=0.01)
trained(a, opt_a, 3)
full = Sharding.full_optimizer_state(opt_a)  # what a checkpoint keeps
for state in full["state"].values():
    assert not any(isinstance(v, DTensor) for v in state.values())
assert full["state"][0]["exp_avg"].shape == (15, 8)
b = sharding.shard(plain)
with torch.no_grad():
    for pa, pb in zip(a.parameters(), b.parameters()):
        pb.copy_(pa)
opt_b = torch.optim.AdamW(b.parameters(), lr=0.01)
opt_b.load_state_dict(Sharding.local_optimizer_state(full, opt_b))  # what a resume loads
trained(a, opt_a, 2), trained(b, opt_b, 2)
assert all(torch.equal(pa.to_local(), pb.to_local()) for pa, pb in zip(a.parameters(), b.parameters()))
print(f"optimizer state ok on rank {dist.get_rank()}")
dist.destroy_process_group()
"""


def test_optimizer_state_saved_whole_and_sharded_again_continues_exactly(tmp_path):
    """AdamW on two processes with unevenly sharded parameters: the state gathered whole (a checkpoint's) and
    split again (a resume's) continues the training to the same shards, bit for bit, while the first optimizer
    trains on (the snapshot shares no tensor with it: Adam's ``step`` counters once did)."""
    script = tmp_path / "check.py"
    script.write_text(OPTIMIZER_STATE_CHECK)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                             str(script)], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0 and result.stdout.count("optimizer state ok") == 2, result.stderr[-3000:]
