"""Mid-level checkpoints: a run killed with SIGKILL inside a level resumes to the same masks and metrics."""

import json
import os
import shutil
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
from prac_plugin.config.recipes import CheckpointPolicy
from prac_plugin.errors import PracError

from conftest import quick_recipe

pytestmark = pytest.mark.slow  # runs killed and relaunched in subprocesses

# PrAC (forgetting tracker state), augmentation (its random numbers), cosine schedule and a checkpoint every
# 7 steps: 21 steps per epoch, so checkpoints fall inside epochs as well as at their ends
RECIPE = quick_recipe(
    data={"augment": {"random_crop_padding": 1, "hflip": True}},
    train={"epochs": 6},
    ticket={"levels": 2},
    data_selection={"strategy": "prac"},
    run={"tracker": "none", "checkpoint_every": "7it", "checkpoint_keep": 2},
)


def prac_run(recipe_path: Path, out: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every run: identical float sums
    return subprocess.Popen([sys.executable, "-m", "prac_plugin", "run", str(recipe_path), "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def level_checkpoints(out: Path, level: int) -> list[Path]:
    # the run removes checkpoints/ whenever a level completes, so it can vanish between any two looks at it
    try:
        return sorted((out / "checkpoints").glob(f"level_{level:02d}-step_*"))
    except FileNotFoundError:
        return []


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("step_")[1])


def kill_inside_level(recipe_path: Path, out: Path, level: int, checkpoints_wanted: int) -> None:
    """Start a run and SIGKILL it as soon as ``level`` has ``checkpoints_wanted`` complete checkpoints."""
    process = prac_run(recipe_path, out)
    deadline = time.monotonic() + 900  # a hang guard, far out of reach of a slow machine
    while len([p for p in level_checkpoints(out, level) if (p / "meta.json").is_file()]) < checkpoints_wanted:
        assert process.poll() is None, "the run ended before it could be killed:\n" + process.stdout.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / f"level_{level:02d}" / "metrics.json").exists(), "killed too late: the level completed"


def finish(recipe_path: Path, out: Path) -> str:
    process = prac_run(recipe_path, out)
    log, _ = process.communicate(timeout=300)
    assert process.returncode == 0, log[-3000:]
    return log


def assert_same_run(a: Path, b: Path, levels: int) -> None:
    for level in range(levels + 1):
        for name in ("mask.safetensors", "weights.safetensors"):
            left, right = load_file(a / f"level_{level:02d}" / name), load_file(b / f"level_{level:02d}" / name)
            assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left), (level, name)
        left, right = (json.loads((d / f"level_{level:02d}" / "metrics.json").read_text()) for d in (a, b))
        for timing in ("wall_time_s", "train_time_s"):
            left.pop(timing), right.pop(timing)
        assert left == right, level
        prac_a, prac_b = (load_file(d / "prac" / f"round_{level:02d}.prac.safetensors") for d in (a, b))
        # forgetting scores are NaN for set members not trained this round: compare NaN as equal
        assert all(torch.allclose(prac_a[k], prac_b[k], rtol=0, atol=0, equal_nan=True) for k in prac_a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in a subprocess like the killed ones."""
    folder = tmp_path_factory.mktemp("reference")
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(RECIPE))
    finish(recipe_path, folder / "run")
    assert not (folder / "run" / "checkpoints").exists()  # cleared, folder and all, once the run is complete
    return recipe_path, folder / "run"


@pytest.fixture(scope="module")
def killed(reference, tmp_path_factory):
    """The same run SIGKILLed inside level 1 once it had written two complete checkpoints (each start of a run is
    seconds of imports: the tests below share this kill and each works on its own copy of the folder)."""
    recipe_path, _ = reference
    out = tmp_path_factory.mktemp("killed") / "run"
    kill_inside_level(recipe_path, out, level=1, checkpoints_wanted=2)
    return out


def copy_of(killed: Path, tmp_path: Path) -> Path:
    shutil.copytree(killed, tmp_path / "run")
    return tmp_path / "run"


def test_sigkill_inside_a_level_then_rerun_gives_the_uninterrupted_result(reference, killed, tmp_path):
    recipe_path, expected = reference
    out = copy_of(killed, tmp_path)
    newest = level_checkpoints(out, 1)[-1]
    step = checkpoint_step(newest)
    log = finish(recipe_path, out)
    assert f"Resuming level 1 at step {step}" in log
    assert_same_run(expected, out, levels=2)


def test_truncated_checkpoint_falls_back_to_the_previous_one(reference, killed, tmp_path):
    recipe_path, expected = reference
    out = copy_of(killed, tmp_path)
    older, newest = level_checkpoints(out, 1)[-2:]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk that filled up
    log = finish(recipe_path, out)
    assert f"checkpoint {newest.name} is unreadable" in log and "falling back" in log
    assert f"Resuming level 1 at step {checkpoint_step(older)}" in log
    assert_same_run(expected, out, levels=2)


def test_checkpoint_from_another_world_size_is_refused_with_the_reason(reference, killed, tmp_path):
    recipe_path, _ = reference
    out = copy_of(killed, tmp_path)
    meta_path = level_checkpoints(out, 1)[-1] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "num_processes": 2}))
    with pytest.raises(PracError, match="written by 2 processes and this run has 1: relaunch with 2 processes"):
        prac_plugin.run(yaml.safe_load(recipe_path.read_text()), str(out))
    assert meta_path.is_file()  # nothing the user has is removed


def test_a_half_written_checkpoint_is_never_used(tmp_path):
    """A kill during a checkpoint write leaves a hidden partial folder: ignored, then cleaned up."""
    recipe = quick_recipe(ticket={"levels": 1}, run={"tracker": "none", "checkpoint_every": "1ep"})
    partial = tmp_path / "run" / "checkpoints" / ".partial-level_00-step_00000021"
    partial.mkdir(parents=True)
    (partial / "rank_0.pt").write_bytes(b"half")
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump(prac_plugin.parse_recipe(recipe).to_dict(), sort_keys=False))
    prac_plugin.run(recipe, str(tmp_path / "run"))
    assert (tmp_path / "run" / "level_01" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "checkpoints").exists()  # the partial folder and the emptied folder are gone


def test_checkpoint_policy_parsing_and_timing():
    policy = CheckpointPolicy.parse("7it")
    assert policy.due_inside_epoch(14, 21, 100) and not policy.due_inside_epoch(21, 21, 100)  # epoch ends wait
    assert policy.due_at_epoch_end(3, 21) and not policy.due_at_epoch_end(2, 22)
    assert CheckpointPolicy.parse("2ep").due_at_epoch_end(4, 5) and not CheckpointPolicy.parse("2ep").due_at_epoch_end(3, 5)
    assert not CheckpointPolicy.parse("none").enabled
    for bad in ("0ep", "ep", "5 minutes"):
        with pytest.raises(PracError, match=f"run.checkpoint_every = {bad!r}"):
            CheckpointPolicy.parse(bad)
    with pytest.raises(PracError, match="run.checkpoint_keep = 0"):
        prac_plugin.parse_recipe(quick_recipe(run={"checkpoint_keep": 0}))


def test_structured_run_killed_inside_a_level_resumes_into_the_smaller_model(tmp_path):
    """A structured level trains a rebuilt, smaller model: the checkpoint restores into the replayed architecture."""
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "structured_quickstart.yaml").read_text())
    # half the quickstart's channels and three epochs: level 2 (two replayed levels) trains 42 steps from its rewind
    # point, with checkpoints at steps 28, 35 and 42
    recipe["model"]["kwargs"] = {"width": 8}
    recipe["ticket"]["levels"], recipe["train"]["epochs"] = 2, 3
    recipe["run"] = {"tracker": "none", "checkpoint_every": "7it"}
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    finish(recipe_path, tmp_path / "reference")
    kill_inside_level(recipe_path, tmp_path / "killed", level=2, checkpoints_wanted=1)
    assert "Resuming level 2 at step" in finish(recipe_path, tmp_path / "killed")
    for level in range(3):
        left, right = (load_file(d / f"level_{level:02d}" / "weights.safetensors") for d in (tmp_path / "reference", tmp_path / "killed"))
        assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left), level
