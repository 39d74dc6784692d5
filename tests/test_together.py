"""``prac run A.yaml B.yaml --together``: one process per recipe, started at once; each run folder is the one the
recipe gives alone, a failing member is named in one line without stopping the others, and nothing starts when
any recipe is wrong."""

import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

import prac_plugin
from prac_plugin.cli import main

from conftest import quick_recipe

pytestmark = pytest.mark.slow  # launched processes


def write(tmp_path, name: str, recipe: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def prac(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prac_plugin", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def same_folder(a, b, levels: int) -> bool:
    for level in range(levels + 1):
        for name in ("mask.safetensors", "weights.safetensors"):
            left, right = (load_file(d / f"level_{level:02d}" / name) for d in (a, b))
            if left.keys() != right.keys() or not all(torch.equal(left[k], right[k]) for k in left):
                return False
    return True


def test_two_recipes_together_give_the_folders_each_gives_alone(tmp_path):
    seeds = {"a": 0, "b": 1}
    paths = [write(tmp_path, name, quick_recipe(train={"seed": seed}, ticket={"levels": 1})) for name, seed in seeds.items()]
    result = prac("run", *paths, "--together", "--output", "joint", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 of 2 runs completed together" in result.stdout
    for name, seed in seeds.items():
        assert (tmp_path / "joint" / f"{name}.log").is_file()
        prac_plugin.run(quick_recipe(train={"seed": seed}, ticket={"levels": 1}), str(tmp_path / f"alone_{name}"))
        assert same_folder(tmp_path / "joint" / name, tmp_path / f"alone_{name}", levels=1), name
    assert not same_folder(tmp_path / "joint" / "a", tmp_path / "joint" / "b", levels=1)  # the seeds differ: a real control


def test_a_member_that_fails_is_named_and_the_others_finish(tmp_path):
    good = write(tmp_path, "good", quick_recipe(ticket={"levels": 1}))
    bad = write(tmp_path, "diverges", quick_recipe(train={"lr": 1e12}, ticket={"levels": 1}))
    result = prac("run", good, bad, "--together", "-o", "joint", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stdout.splitlines() if line.startswith("prac: error:")]
    assert len(errors) == 1 and "diverges.yaml failed" in errors[0] and "diverged" in errors[0], result.stdout
    assert (tmp_path / "joint" / "good" / "level_01" / "metrics.json").is_file()
    assert "1 of 2 runs completed together" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_nothing_starts_when_one_recipe_is_wrong_or_two_share_a_folder(tmp_path, capsys):
    good = write(tmp_path, "good", quick_recipe())
    wrong = write(tmp_path, "wrong", quick_recipe(train={"epochs": 0}))
    assert main(["run", good, wrong, "--together", "-o", str(tmp_path / "joint")]) == 2
    assert "train.epochs = 0" in capsys.readouterr().err and not (tmp_path / "joint").exists()
    (tmp_path / "other").mkdir()
    twin = write(tmp_path / "other", "good", quick_recipe())
    assert main(["run", good, twin, "--together", "-o", str(tmp_path / "joint")]) == 2
    assert "would both run into" in capsys.readouterr().err and not (tmp_path / "joint").exists()


def test_several_recipes_without_together_run_one_after_another(tmp_path):
    paths = [write(tmp_path, name, quick_recipe(train={"seed": seed, "epochs": 2}, ticket={"levels": 1})) for name, seed in (("a", 0), ("b", 1))]
    assert main(["run", *paths, "-o", str(tmp_path / "joint")]) == 0
    prac_plugin.run(quick_recipe(train={"seed": 1, "epochs": 2}, ticket={"levels": 1}), str(tmp_path / "alone_b"))
    assert (tmp_path / "joint" / "a" / "level_01" / "metrics.json").is_file()
    assert same_folder(tmp_path / "joint" / "b", tmp_path / "alone_b", levels=1)


def test_a_members_progress_is_its_bars_last_update(tmp_path):
    from prac_plugin.together import progress

    log = tmp_path / "a.log"
    assert progress(log) == "no log yet"
    log.write_text("")
    assert progress(log) == "starting"
    log.write_text("lenet on digits: 3 levels\nlevel  1 ( 80.00% left):   0%|  | 0/21\rlevel  1 ( 80.00% left):  43%|#  | 9/21\r")
    assert progress(log) == "level  1 ( 80.00% left):  43%|#  | 9/21"
    log.write_text("x" * 10_000 + "\nRun directory: runs/a\n")
    assert progress(log) == "Run directory: runs/a"


def test_a_joint_run_says_where_each_member_stands_while_it_runs(tmp_path):
    from prac_plugin.together import Member, run_together

    said = []
    member = Member(write(tmp_path, "a", quick_recipe(ticket={"levels": 1})), tmp_path / "joint" / "a")
    assert run_together([member], [], say=said.append, status_every=0.01) == 0
    status = [line for line in said if line.startswith(f"  {member.recipe}: ")]
    assert status and said[-1].startswith("1 of 1 runs completed together")  # a process starts slower than 0.2 s


def test_ctrl_c_stops_every_member_resumably(tmp_path):
    """Ctrl-C at a terminal (SIGINT to the whole process group): each member stops on its own, once, the joint
    run says so and exits 130, and the same command then finishes every run."""
    import signal
    import time

    paths = [write(tmp_path, name, quick_recipe(train={"seed": seed, "epochs": 12}, ticket={"levels": 1},
                                                run={"tracker": "none", "checkpoint_every": "5it"}))
             for name, seed in (("a", 0), ("b", 1))]
    command = [sys.executable, "-m", "prac_plugin", "run", *paths, "--together", "-o", "joint"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    joint = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env, start_new_session=True)  # its own group: the terminal's Ctrl-C, not pytest's
    deadline = time.monotonic() + 600  # a hang guard
    while not all(any((tmp_path / "joint" / n / "checkpoints").glob("level_00-step_*/meta.json")) for n in ("a", "b")):
        assert joint.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(joint.pid, signal.SIGINT)
    out, _ = joint.communicate(timeout=600)
    assert joint.returncode == 130 and "prac: interrupted" in out, out
    for name in ("a", "b"):
        log = (tmp_path / "joint" / f"{name}.log").read_text()
        assert "prac: interrupted; re-run the same command" in log and "Traceback" not in log, log[-2000:]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "2 of 2 runs completed together" in result.stdout
    assert all((tmp_path / "joint" / n / "level_01" / "metrics.json").is_file() for n in ("a", "b"))
