"""Faults a careless or unlucky user meets (issue 27): damaged or edited run-folder files, dangling links, full
disks, read-only mounts, damaged inputs to analyses. Each is one `prac: error:` line with exit status 2 (no
traceback), and nothing the user had is lost or rewritten (content and mtime)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import prac_plugin
from prac_plugin.engine.checkpoint import LevelCheckpoints
from prac_plugin.cli import main as prac_cli
from prac_plugin.rundir.lock import LOCK_NAME

from conftest import quick_recipe

RECIPE = quick_recipe(ticket={"levels": 1})
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(RECIPE))
    prac_plugin.run(RECIPE, str(folder / "run"))
    return recipe_path, folder / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run[1], copy)
    return copy


def snapshot(folder: Path) -> dict:
    """Every file's bytes and mtime (the lock file aside: taking the lock rewrites it)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def one_error_line(capsys, argv) -> str:
    capsys.readouterr()
    assert prac_cli(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("prac: error:") and "Traceback" not in err, err
    return lines[-1]


def stop_inside_level_one(monkeypatch, recipe: dict, run: Path, checkpoints: int = 2) -> list:
    """Run ``recipe`` into ``run`` and stop it once level 1 has ``checkpoints`` checkpoints; the steps saved."""
    saved, real_save = [], LevelCheckpoints.save

    class Stop(Exception):
        pass

    def save_then_stop(self, level, step, *args, **kwargs):
        real_save(self, level, step, *args, **kwargs)
        saved.append((level, step))
        if level == 1 and sum(1 for lv, _ in saved if lv == 1) == checkpoints:
            raise Stop

    monkeypatch.setattr(LevelCheckpoints, "save", save_then_stop)
    with pytest.raises(Stop):
        prac_plugin.run(recipe, str(run))
    monkeypatch.setattr(LevelCheckpoints, "save", real_save)
    return [step for level, step in saved if level == 1]


# 1 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, expected", [
    (b"model: [unclosed\n", "is not valid YAML at line"),
    (b"\x00\xff\xfe binary", "is not UTF-8 text"),
    (b"- model\n- train\n", "holds a list, not a mapping of sections"),
])
def test_a_damaged_recipe_in_the_run_folder_is_one_line_and_nothing_changes(finished_run, run_copy, capsys, damage, expected):
    (run_copy / "recipe.yaml").write_bytes(damage)
    before = snapshot(run_copy)
    for argv in (["run", str(finished_run[0]), "-o", str(run_copy)], ["report", str(run_copy)],
                 ["report", str(run_copy), "-o", str(run_copy.parent / "cmp")], ["sanity", str(run_copy), "--seeds", "1"]):
        line = one_error_line(capsys, argv)
        assert expected in line and "the file is damaged" in line and ".recipe_started.yaml" in line, line
    assert snapshot(run_copy) == before and not (run_copy.parent / "cmp").exists()


# 2 -------------------------------------------------------------------------------------------------------------
def test_an_output_that_is_a_dangling_link_is_one_line(finished_run, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    for argv in (["run", str(finished_run[0]), "-o", str(link)], ["run", str(finished_run[0]), "-o", str(link / "sub")],
                 ["report", str(finished_run[1]), "-o", str(link)]):
        assert "is a symbolic link to" in one_error_line(capsys, argv)
    assert link.is_symlink() and not (tmp_path / "missing").exists()


# 3 -------------------------------------------------------------------------------------------------------------
class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written, as a full disk's do."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")  # write() knows no file name
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_a_full_disk_under_torch_save_is_one_line_naming_the_file(finished_run, tmp_path, monkeypatch, capsys):
    """torch's writer turns ENOSPC into an inline_container RuntimeError; the line names the file and the cause."""
    import prac_plugin.rundir.files as io_module

    monkeypatch.setattr(io_module, "open", lambda path, mode: _FullDisk(open(path, mode), 2000), raising=False)
    run = tmp_path / "run"
    line = one_error_line(capsys, ["run", str(finished_run[0]), "-o", str(run), "--set", "run.checkpoint_every=5it"])
    assert "cannot write" in line and "No space left on device" in line and "free some space" in line, line
    assert "level_00-step_00000005" in line and "None" not in line
    monkeypatch.undo()  # room again: the same command finishes with the uninterrupted run's result
    assert prac_cli(["run", str(finished_run[0]), "-o", str(run), "--set", "run.checkpoint_every=5it"]) == 0
    for level in (0, 1):
        mine, reference = (load_file(f / f"level_{level:02d}" / "weights.safetensors") for f in (run, finished_run[1]))
        assert all(torch.equal(mine[k], reference[k]) for k in reference)


def test_a_full_disk_under_safetensors_is_one_line_naming_the_file(finished_run, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    def full(*args, **kwargs):  # the error safetensors' Rust writer raises on a full disk (seen on a small tmpfs)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)  # the writer prac_plugin.rundir.files calls
    line = one_error_line(capsys, ["run", str(finished_run[0]), "-o", str(tmp_path / "run")])
    assert f"cannot write {str(tmp_path / 'run' / 'init.safetensors')!r}: No space left on device" in line, line


@pytest.mark.parametrize("target", ["text", "lock"])
def test_a_write_that_fails_without_a_file_name_names_the_file(finished_run, tmp_path, monkeypatch, capsys, target):
    """On a disk of a few KB the first small writes fail; the line named the path as None."""
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(*(("pathlib.Path.write_text", no_space) if target == "text" else ("prac_plugin.rundir.lock.os.pwrite", no_space)))
    line = one_error_line(capsys, ["run", str(finished_run[0]), "-o", str(tmp_path / "run")])
    name = "recipe.yaml" if target == "text" else LOCK_NAME
    assert f"cannot write {str(tmp_path / 'run' / name)!r}: No space left on device" in line, line


@pytest.mark.slow
def test_a_real_small_disk(finished_run, tmp_path, capsys):
    """A 300 KB tmpfs, where the machine lets the tests mount one (root): one line, then the same command on a
    bigger disk gives the uninterrupted result."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        line = one_error_line(capsys, ["run", str(finished_run[0]), "-o", str(disk / "run"), "--set", "run.checkpoint_every=5it"])
        assert "No space left on device" in line and str(disk / "run") in line, line
        shutil.copytree(disk / "run", tmp_path / "run", symlinks=True)
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert prac_cli(["run", str(finished_run[0]), "-o", str(tmp_path / "run"), "--set", "run.checkpoint_every=5it"]) == 0
    mine, reference = (load_file(f / "level_01" / "weights.safetensors") for f in (tmp_path / "run", finished_run[1]))
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


# 4 -------------------------------------------------------------------------------------------------------------
def test_a_recipe_edited_mid_level_with_the_command_to_match_is_refused_naming_the_key(tmp_path, monkeypatch, capsys):
    recipe = quick_recipe(ticket={"levels": 1}, run={"tracker": "none", "checkpoint_every": "5it"})
    run = tmp_path / "run"
    stop_inside_level_one(monkeypatch, recipe, run)
    (run / "recipe.yaml").write_text((run / "recipe.yaml").read_text().replace("lr: 0.05", "lr: 0.01"))
    edited = {**recipe, "train": {**recipe["train"], "lr": 0.01}}
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(edited))
    before = snapshot(run)
    line = one_error_line(capsys, ["run", str(tmp_path / "edited.yaml"), "-o", str(run)])
    assert "recipe.yaml' was changed after the run started (train.lr: 0.05 when it started, 0.01 in the file)" in line, line
    assert snapshot(run) == before  # the checkpoints made with lr 0.05 are kept, nothing is recorded as 0.01


def test_reports_refuse_a_finished_runs_recipe_edited_by_hand(run_copy, capsys):
    (run_copy / "recipe.yaml").write_text((run_copy / "recipe.yaml").read_text().replace("lr: 0.05", "lr: 0.01"))
    before = snapshot(run_copy)
    assert "train.lr: 0.05 when it started, 0.01 in the file" in one_error_line(capsys, ["report", str(run_copy)])
    assert snapshot(run_copy) == before  # summary.json still says 0.05


# 5 -------------------------------------------------------------------------------------------------------------
def test_a_level_with_weights_but_no_metrics_is_incomplete_and_the_summary_stays(finished_run, run_copy, capsys):
    (run_copy / "level_01" / "metrics.json").unlink()
    before = snapshot(run_copy)
    for argv in (["report", str(run_copy)], ["report", str(run_copy), str(finished_run[1]), "-o", str(run_copy.parent / "cmp")]):
        line = one_error_line(capsys, argv)
        assert "level 1 of" in line and "is incomplete: level_01 holds results but no level_01/metrics.json" in line, line
    assert snapshot(run_copy) == before and not (run_copy.parent / "cmp").exists()


def test_a_summary_is_never_replaced_by_a_shorter_one(run_copy, capsys):
    shutil.rmtree(run_copy / "level_01")
    before = snapshot(run_copy)
    line = one_error_line(capsys, ["report", str(run_copy)])
    assert "summary.json' lists 2 levels, the run folder now has 1 complete" in line, line
    assert snapshot(run_copy) == before


# 6 and 8 -------------------------------------------------------------------------------------------------------
def _poison(path: Path, value: float) -> None:
    tensors = load_file(path)
    name = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 2)
    tensors[name][0, 0] = value
    save_file(tensors, path)


def test_sanity_refuses_weights_holding_nan_as_a_damaged_file(run_copy, capsys):
    _poison(run_copy / "level_00" / "weights.safetensors", float("nan"))
    line = one_error_line(capsys, ["sanity", str(run_copy), "--seeds", "1"])
    assert "level 0 weights" in line and "holds NaN or infinite values, which a run never saves: the file is damaged" in line
    assert not (run_copy / "sanity").exists()


def test_nan_in_the_rewind_point_is_a_damaged_file_not_a_diverging_run(finished_run, run_copy, capsys):
    _poison(run_copy / "rewind.safetensors", float("nan"))
    line = one_error_line(capsys, ["retrain", str(run_copy)])
    assert "rewind weights" in line and "the file is damaged" in line and "diverged" not in line, line
    shutil.rmtree(run_copy / "level_01")  # the run trains level 1 again, from the rewind point
    line = one_error_line(capsys, ["run", str(finished_run[0]), "-o", str(run_copy)])
    assert "rewind weights" in line and "the file is damaged" in line and "diverged" not in line and "train.lr" not in line, line
    assert not (run_copy / "level_01").exists() and not (run_copy / "full_data").exists()


# 7 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["run", "PATH"], ["index", "inspect", "PATH"],
                                     ["prune", "PATH", "--model", "lenet_300_100", "-o", "new.safetensors"]])
def test_a_directory_or_a_device_given_as_a_file_says_what_it_is(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    for path, what in ((tmp_path, "is a directory, not a file"), ("/dev/null", "is a device, not a regular file")):
        line = one_error_line(capsys, [str(path) if a == "PATH" else a for a in command])
        assert what in line and "does not exist" not in line, line


# 9 -------------------------------------------------------------------------------------------------------------
def test_after_sigint_the_line_says_the_level_resumes_from_its_checkpoint(finished_run, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("prac_plugin.engine.run_loop.run_recipe", interrupted)
    assert prac_cli(["run", str(finished_run[0]), "-o", "unused"]) == 130
    err = capsys.readouterr().err.strip()
    assert "running level resumes from its newest checkpoint" in err and "after the last completed level" not in err, err


# 10 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["x" * 20_000, "[" + ",".join(["1"] * 1000) + "]", "{" + ",".join(f"k{i}: 1" for i in range(300)) + "}"])
def test_a_refused_set_value_is_cut_in_the_message(finished_run, tmp_path, capsys, value):
    for key in ("train.lr", "ticket.strategy", "model.num_classes"):
        line = one_error_line(capsys, ["run", str(finished_run[0]), "-o", str(tmp_path / "run"), "--set", f"{key}={value}"])
        assert len(line) < 600 and "characters)" in line, (key, len(line))
    assert not (tmp_path / "run").exists()


# 11 ------------------------------------------------------------------------------------------------------------
def test_an_fp16_mask_in_the_newest_checkpoint_falls_back_to_the_one_before(tmp_path, monkeypatch):
    recipe = quick_recipe(ticket={"levels": 1}, run={"tracker": "none", "checkpoint_every": "5it"})
    run = tmp_path / "run"
    steps = stop_inside_level_one(monkeypatch, recipe, run)
    newest = sorted((run / "checkpoints").iterdir())[-1]
    mask = load_file(newest / "mask.safetensors")
    save_file({k: v.half() for k, v in mask.items()}, newest / "mask.safetensors")
    messages = []
    from prac_plugin.engine.run_loop import run_recipe
    from prac_plugin.config.recipes import parse_recipe

    run_recipe(parse_recipe(recipe), str(run), log=messages.append)
    assert any(f"checkpoint {newest.name} is unreadable" in m and "float16" in m for m in messages), messages
    assert any(f"Resuming level 1 at step {steps[0]} " in m for m in messages), messages
    assert json.loads((run / "level_01" / "metrics.json").read_text())["level"] == 1


# 12 ------------------------------------------------------------------------------------------------------------
def test_report_reads_a_run_it_cannot_write(run_copy, monkeypatch, capsys):
    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr("prac_plugin.rundir.lock._open_locked", read_only)
    before = snapshot(run_copy)
    capsys.readouterr()
    assert prac_cli(["report", str(run_copy)]) == 0
    out, err = capsys.readouterr()
    assert "| 1 | 80.00 |" in out and "cannot be written: the table is printed" in err and "Traceback" not in err
    assert snapshot(run_copy) == before
    assert "Read-only file system" in one_error_line(capsys, ["sanity", str(run_copy)])  # analyses write: refused


# 13 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["run", "RECIPE", "-o", ""], ["select", "RECIPE", "-o", ""], ["report", "RUN", "-o", ""],
                                  ["report", ""], ["export", "RUN", "-o", ""], ["run", ""], ["quickstart", "-o", ""]])
def test_an_empty_path_is_refused(finished_run, tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    argv = [{"RECIPE": str(finished_run[0]), "RUN": str(finished_run[1])}.get(a, a) for a in argv]
    assert "is an empty path ''" in one_error_line(capsys, argv)
    assert list(tmp_path.iterdir()) == []


# also ----------------------------------------------------------------------------------------------------------
def test_comparing_run_folders_reads_the_recorded_recipes(run_copy, tmp_path):
    """The run of item 4 (tensors of lr 0.05, recipe.yaml and summary.json saying 0.01) is not the reference."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_run_folders", REPO / "benchmarks" / "compare_run_folders.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    assert script.compare(run_copy, other) == []
    (other / "recipe.yaml").write_text((other / "recipe.yaml").read_text().replace("lr: 0.05", "lr: 0.01"))
    summary = json.loads((other / "summary.json").read_text())
    summary["recipe"]["train"]["lr"] = 0.01
    (other / "summary.json").write_text(json.dumps(summary))
    assert script.compare(run_copy, other) == ["recipe differs: recipe.yaml", "JSON differs: summary.json"]
    metrics = json.loads((other / "level_01" / "metrics.json").read_text())
    (other / "level_01" / "metrics.json").write_text(json.dumps({**metrics, "optimizer_steps": 1}))  # not a timing
    assert "JSON differs: level_01/metrics.json" in script.compare(run_copy, other)
    # a key a change added to the record (absent from an older run's) is left out only when named, and only it
    older = {k: v for k, v in metrics.items() if k != "sharding"}
    assert "sharding" in metrics
    (other / "level_01" / "metrics.json").write_text(json.dumps(older))
    assert "JSON differs: level_01/metrics.json" in script.compare(run_copy, other)
    assert "JSON differs: level_01/metrics.json" not in script.compare(run_copy, other, ("sharding",))
    (other / "level_01" / "metrics.json").write_text(json.dumps({**older, "optimizer_steps": 1}))
    assert "JSON differs: level_01/metrics.json" in script.compare(run_copy, other, ("sharding",))
