"""Recipes that would exhaust the machine or crash late are refused when they load, in one line (issue 16, parts 2,
3 and 9): alias bombs, non-UTF-8 and oversized files, values no run can use, an output location that cannot be written."""

from __future__ import annotations

import errno

import pytest
import yaml

from prac_plugin import PracError
from prac_plugin.cli import main as prac_cli
from prac_plugin.config.recipes import load_recipe, load_recipe_dict, parse_recipe

from conftest import quick_recipe


def test_an_alias_bomb_is_refused_before_it_grows(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 9)]  # 10**9 strings once expanded, 700 bytes of YAML
    bomb = "model:\n  name: lenet_300_100\n  kwargs:\n" + "\n".join("    " + line for line in lines) + "\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    assert path.stat().st_size < 1024
    with pytest.raises(PracError, match=r"is refused: more than 100,000 values once YAML aliases are expanded"):
        load_recipe_dict(path)


def test_a_recipe_with_a_few_aliases_still_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train: &t {epochs: 2, lr: 0.05}\nticket: {strategy: ltr, levels: 1}\n")
    assert load_recipe_dict(path)["train"] == {"epochs": 2, "lr": 0.05}


@pytest.mark.parametrize("content,message", [
    ("model:\n  name: lenet_300_100\n".encode("utf-16"), "is not UTF-8 text"),
    (bytes(range(256)) * 4, "is not UTF-8 text"),
    (b"# " + b"x" * (1 << 20) + b"\n", "a recipe is at most 1,048,576"),
])
def test_files_that_are_not_small_utf8_text_are_refused(tmp_path, content, message):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    with pytest.raises(PracError, match=message):
        load_recipe(path)


@pytest.mark.parametrize("section,values,message", [
    ("data", {"num_workers": -2}, "data.num_workers = -2 must be 0 or more"),
    ("data", {"image_size": 0}, "data.image_size = 0 must be at least 1"),
    ("data", {"val_fraction": 1.0}, r"data.val_fraction = 1.0 must be in \[0, 1\)"),
    ("data", {"crop_pct": 0}, r"data.crop_pct = 0.0 must be in \(0, 1\]"),
    ("ticket", {"strategy": "cts", "densities": [0.1], "search_batch_size": 0}, "ticket.search_batch_size = 0 must be at least 1"),
    ("ticket", {"strategy": "cts", "densities": [0.1], "lr": -1}, "ticket.lr = -1.0 must be a positive finite number"),
    ("ticket", {"strategy": "cts", "densities": [0.1], "temperature": 0}, "ticket.temperature = 0.0 must be a positive finite number"),
    ("ticket", {"strategy": "cts", "densities": [0.1], "search_steps": 0}, "ticket.search_steps = 0 must be at least 1"),
])
def test_values_no_run_can_use_are_refused_at_load(section, values, message):
    recipe = quick_recipe()
    recipe[section] = values if section == "ticket" else {**recipe[section], **values}
    with pytest.raises(PracError, match=message):
        parse_recipe(recipe)


def test_an_output_location_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(quick_recipe()))

    def refuse(self):
        raise OSError(errno.EROFS, "Read-only file system", str(self.path))

    monkeypatch.setattr("prac_plugin.rundir.folder.RunDirectory.create", refuse)
    assert prac_cli(["run", str(path), "--output", str(tmp_path / "ro" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prac: error: cannot write") and "Read-only file system" in err and len(err.strip().splitlines()) == 1
