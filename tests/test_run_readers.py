"""Readers of run folders name the file and field that is wrong: no traceback, no summary that counts a missing
field as zero, no silently shorter run, and a damaged checkpoint is fallen back from."""

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prac_plugin
from prac_plugin.engine.checkpoint import LevelCheckpoints
from prac_plugin.cli import main as prac_cli
from prac_plugin.errors import PracError
from prac_plugin.rundir.folder import METRIC_FIELDS, check_level_metrics

from conftest import quick_recipe


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("readers") / "run"
    prac_plugin.run(quick_recipe(ticket={"levels": 2}), str(run))
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def one_error_line(capsys, argv) -> str:
    capsys.readouterr()
    assert prac_cli(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prac: error:") and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize("damage, expected", [
    (lambda m: b"\x00\xff\xfe binary", "level_01/metrics.json' cannot be read (UnicodeDecodeError)"),
    (lambda m: b"[1, 2]", "hold list, not a JSON object"),
    (lambda m: json.dumps({**m, "optimizer_steps": "12"}).encode(), "optimizer_steps = '12' should be int"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "optimizer_steps"}).encode(), "have no 'optimizer_steps'"),
    (lambda m: json.dumps({**m, "wall_time_s": -3}).encode(), "wall_time_s = -3 should be at least 0"),
    (lambda m: json.dumps({**m, "level": 2}).encode(), "say level 2, not 1"),
    (lambda m: json.dumps({**m, "test_acc": True}).encode(), "test_acc = True should be"),
])
def test_a_damaged_metrics_file_is_one_line_naming_the_file_and_field(run_copy, capsys, damage, expected):
    path = run_copy / "level_01" / "metrics.json"
    path.write_bytes(damage(json.loads(path.read_text())))
    summary_before = (run_copy / "summary.json").read_bytes()
    for argv in (["report", str(run_copy)], ["report", str(run_copy), "--output", str(run_copy.parent / "cmp")]):
        assert expected in one_error_line(capsys, argv)
    assert (run_copy / "summary.json").read_bytes() == summary_before  # nothing rewritten from a damaged run


def test_a_level_deleted_from_the_middle_is_an_error_not_a_shorter_summary(run_copy, capsys):
    shutil.rmtree(run_copy / "level_01")
    line = one_error_line(capsys, ["report", str(run_copy)])
    assert "has level_02/metrics.json but no readable level_01/metrics.json" in line
    assert len(json.loads((run_copy / "summary.json").read_text())["levels"]) == 3  # the old summary stands


def test_a_damaged_rewind_point_is_one_line(run_copy, capsys):
    (run_copy / "rewind.json").write_text('{"step": "ten"}')
    assert "rewind.json' should hold the integer fields step and total_steps" in one_error_line(capsys, ["retrain", str(run_copy), "--level", "1"])


class _Stop(Exception):
    pass


def test_a_damaged_meta_json_in_the_newest_checkpoint_falls_back_to_the_one_before(tmp_path, monkeypatch, capsys):
    recipe = quick_recipe(train={"epochs": 4}, ticket={"levels": 1}, run={"tracker": "none", "checkpoint_every": "5it", "checkpoint_keep": 2})
    saved = []
    real_save = LevelCheckpoints.save

    def save_then_stop(self, level, step, *args, **kwargs):
        real_save(self, level, step, *args, **kwargs)
        saved.append((level, step))
        if level == 1 and sum(1 for lv, _ in saved if lv == 1) == 2:
            raise _Stop

    monkeypatch.setattr(LevelCheckpoints, "save", save_then_stop)
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        prac_plugin.run(recipe, str(run))
    newest = sorted((run / "checkpoints").iterdir())[-1]
    (newest / "meta.json").write_bytes(b"\xff\x00 not json")
    monkeypatch.setattr(LevelCheckpoints, "save", real_save)
    messages = []
    from prac_plugin.engine.run_loop import run_recipe
    from prac_plugin.config.recipes import parse_recipe

    run_recipe(parse_recipe(recipe), str(run), log=messages.append)
    assert any(f"checkpoint {newest.name} is unreadable (its meta.json is damaged)" in m for m in messages), messages
    older_step = int(sorted((p for p in saved if p[0] == 1))[0][1])
    assert any(f"Resuming level 1 at step {older_step} " in m for m in messages), messages
    assert json.loads((run / "level_01" / "metrics.json").read_text())["level"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(sorted(METRIC_FIELDS) + ["other"]), json_values), level=st.integers(0, 3))
def test_the_metrics_reader_returns_checked_metrics_or_one_error(fields, level, tmp_path_factory):
    """Any JSON object: either every required field is there with its type (and the level matches), or PracError."""
    try:
        metrics = check_level_metrics(fields, tmp_path_factory.getbasetemp() / "metrics.json", level)
    except PracError as exc:
        assert "\n" not in str(exc)
        return
    for name, (types, required, lowest) in METRIC_FIELDS.items():
        assert name in metrics or not required
        if name in metrics:
            assert isinstance(metrics[name], types) and not isinstance(metrics[name], bool)
    assert metrics["level"] == level
