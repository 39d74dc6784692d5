"""One process per run folder: a second run is refused naming the holder, a killed holder blocks nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from prac_plugin.rundir import lock as runlock
from prac_plugin.cli import main
from prac_plugin.errors import PracError
from prac_plugin.rundir.folder import RunDirectory
from prac_plugin.rundir.lock import LOCK_NAME, run_lock

from conftest import quick_recipe

# the lock module alone, without the package's torch imports: a holder that starts in milliseconds
FAST_IMPORT = textwrap.dedent(f"""
    import sys, time, types
    package = types.ModuleType("prac_plugin")
    package.__path__ = [{str(Path(runlock.__file__).parent.parent)!r}]  # the package folder, not its __init__: no torch, no timm hook
    sys.modules["prac_plugin"] = package
    from prac_plugin.rundir.lock import run_lock
""")
HOLDER = FAST_IMPORT + textwrap.dedent("""
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
""")


def launch_env() -> dict:
    """The test's environment without a launcher's rank variables (each test process runs alone)."""
    return {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")}


@pytest.fixture
def holder():
    """Start a process that takes the lock of a folder and sleeps; SIGKILL it at the end."""
    started = []

    def start(folder: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=launch_env())
        started.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(name, raising=False)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def test_prac_run_is_refused_while_another_process_holds_the_folder_and_runs_after_it_is_killed(tmp_path, holder, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(quick_recipe(ticket={"levels": 1})))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "-o", str(out)]) == 0
    (out / "level_01" / "metrics.json").unlink()  # level 1 is to be trained again by the next run
    capsys.readouterr()
    before = snapshot(out)

    process = holder(out)
    assert main(["run", str(recipe), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prac: error: run folder ")
    assert f"in use by process {process.pid} on host {socket.gethostname()} (started " in err[0]
    assert f": {sys.executable} -c " in err[0]  # its command, on one line
    assert snapshot(out) == before  # nothing read into a checkpoint, nothing written or removed

    process.send_signal(signal.SIGKILL)
    process.wait()
    assert main(["run", str(recipe), "-o", str(out)]) == 0
    assert (out / "level_01" / "metrics.json").is_file()
    lock = json.loads((out / LOCK_NAME).read_text())  # the lock file stays, naming its last holder
    assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()


def test_analysis_commands_are_refused_on_a_held_folder(tmp_path, holder, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text("{}")
    process = holder(out)
    for command in (["report", str(out)], ["sanity", str(out)], ["retrain", str(out)], ["stability", str(out)]):
        assert main(command) == 2, command
        assert f"in use by process {process.pid}" in capsys.readouterr().err, command


def test_a_second_lock_in_one_process(tmp_path, holder):
    """Nested locks of one folder in one process pass (a command that calls another); the folder stays locked
    against other processes until the outer one ends; other folders lock independently."""
    a, b = tmp_path / "a", tmp_path / "b"
    probe = [sys.executable, "-c", FAST_IMPORT + "with run_lock(sys.argv[1]): pass", str(a)]
    with run_lock(a):
        with run_lock(a), run_lock(b):
            assert (b / LOCK_NAME).is_file()
        refused = subprocess.run(probe, capture_output=True, text=True, env=launch_env())
        assert refused.returncode != 0 and f"in use by process {os.getpid()}" in refused.stderr
    assert subprocess.run(probe, capture_output=True, text=True, env=launch_env()).returncode == 0
    holder(b)
    with pytest.raises(PracError, match=f"run folder '{b}' is in use by process"):
        with run_lock(b):
            pass


RACER = FAST_IMPORT + textwrap.dedent("""
    import os
    from prac_plugin.errors import PracError
    folder, held, deadline = sys.argv[1], 0, time.monotonic() + 60  # ends at 30 holds; the deadline only guards a hang
    while held < 30 and time.monotonic() < deadline:
        try:
            with run_lock(folder):
                fd = os.open(os.path.join(folder, "inside"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # two holders: fails
                os.close(fd)
                time.sleep(0.001)
                os.unlink(os.path.join(folder, "inside"))
                held += 1
        except PracError:
            pass
    print(held)
""")


def test_processes_racing_for_a_new_folder_never_hold_it_together(tmp_path):
    """Holders remove the new folder they leave empty while others open its lock file: still one holder at a
    time, and no process dies of a vanished file or folder."""
    folder = tmp_path / "race" / "run"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=launch_env()) for _ in range(4)]
    results = [racer.communicate(timeout=600) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err[-1500:] for _, err in results]
    assert sum(int(out) for out, _ in results) > 0


def test_a_lock_file_removed_by_its_last_holder_is_not_locked_in_its_place(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder removed it (with the new folder it left empty)
    must lock the file the path names now, not the removed one nobody else can see."""
    folder = tmp_path / "new" / "run"
    with run_lock(folder):
        stale = os.open(folder / LOCK_NAME, os.O_RDWR)  # opened while the holder still had it
    assert not (tmp_path / "new").exists()
    real_open, opened = os.open, []

    def open_stale_first(path, flags, mode=0o777, **kwargs):
        if not opened and str(path).endswith(LOCK_NAME):
            opened.append(path)
            return stale
        return real_open(path, flags, mode, **kwargs)

    probe = [sys.executable, "-c", FAST_IMPORT + "with run_lock(sys.argv[1]): pass", str(folder)]
    monkeypatch.setattr(os, "open", open_stale_first)
    with run_lock(folder):
        monkeypatch.setattr(os, "open", real_open)
        assert opened and (folder / LOCK_NAME).is_file()
        refused = subprocess.run(probe, capture_output=True, text=True, env=launch_env())
        assert refused.returncode != 0 and f"in use by process {os.getpid()}" in refused.stderr


def test_lock_and_run_directory_on_a_new_folder(tmp_path):
    """The lock file is not content; a new folder (parents too) that the run left empty is removed again; a run
    folder keeps its lock file, a folder that is not one is left as it was."""
    recipe = quick_recipe()
    folder = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(PracError, match="validation failed"):
        with run_lock(folder):
            assert (folder / LOCK_NAME).is_file()
            RunDirectory.open(folder, recipe)  # only the lock in it: a free folder
            raise PracError("validation failed")
    assert not (tmp_path / "new").exists()
    with run_lock(folder):
        run = RunDirectory.open(folder, recipe)
        run.create()
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME, ".recipe_started.yaml", "recipe.yaml"]
    existing = tmp_path / "mine"  # the user's own folder stays as it was
    existing.mkdir()
    with run_lock(existing):
        RunDirectory.open(existing, recipe)  # empty but for the lock: free
        (existing / "notes.txt").write_text("mine")
        with pytest.raises(PracError, match="is not a prac run directory"):
            RunDirectory.open(existing, recipe)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]  # not a run folder: the lock file went too


def test_prac_run_failing_validation_leaves_no_folder(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(quick_recipe(train={"epochs": 1})))  # rewind 1ep = the end of training
    out = tmp_path / "runs" / "bad"
    assert main(["run", str(recipe), "-o", str(out)]) == 2
    assert "beyond the training length" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "file").write_text("x")
    assert main(["run", str(recipe), "-o", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("env", [{"RANK": "1", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "4", "LOCAL_RANK": "3"}, {"OMPI_COMM_WORLD_RANK": "2"}])
def test_ranks_above_zero_do_not_lock(tmp_path, holder, monkeypatch, env):
    folder = tmp_path / "run"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with run_lock(tmp_path / "untouched"):
        pass
    assert not (tmp_path / "untouched").exists()  # not even created: rank 0 does that
    holder(folder)
    with run_lock(folder):  # part of the run rank 0 holds
        pass
    monkeypatch.setenv("RANK", "0")  # rank 0 of another launch: refused
    with pytest.raises(PracError, match="in use by process"):
        with run_lock(folder):
            pass


def test_without_fcntl_the_lock_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "fcntl", None)  # as on Windows
    with run_lock(tmp_path / "run"):
        pass
    assert not (tmp_path / "run").exists()
