"""A diverging run is never saved as a ticket, and the folder it leaves does not block the corrected command
(issue 16, part 1); recipe values that cannot train are refused when the recipe loads."""

from __future__ import annotations

import json

import pytest

import prac_plugin
from prac_plugin import PracError
from prac_plugin.config.recipes import parse_recipe

from conftest import quick_recipe


def test_a_diverging_level_is_refused_and_the_corrected_command_runs_in_the_same_folder(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(PracError, match=r"level 0 diverged: the training loss of epoch 1 \(step \d+\) is (nan|inf)"):
        prac_plugin.run(quick_recipe(train={"lr": 1e6, "momentum": 0.9}, run={"checkpoint_every": "3it"}), str(out))
    assert not list(out.glob("level_*")) and not (out / "checkpoints").exists()  # no ticket, no checkpoint to resume
    rows = prac_plugin.run(quick_recipe(), str(out))  # lr corrected: the folder holds no result, so it takes the new recipe
    assert len(rows) == 3 and all(row["test_acc"] > 0.5 for row in rows)
    assert "lr: 0.05" in (out / "recipe.yaml").read_text()


def test_a_level_that_diverges_after_others_keeps_them_and_the_folder_keeps_its_recipe(tmp_path):
    out = tmp_path / "run"
    prac_plugin.run(quick_recipe(ticket={"levels": 0}), str(out))
    metrics = json.loads((out / "level_00" / "metrics.json").read_text())
    with pytest.raises(PracError, match="holds a different run"):  # completed level 0 was trained with lr 0.05
        prac_plugin.run(quick_recipe(ticket={"levels": 0}, train={"lr": 1e6}), str(out))
    assert json.loads((out / "level_00" / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize("key,value,message", [
    ("lr", float("nan"), "train.lr = nan must be a positive finite number"),
    ("lr", float("inf"), "train.lr = inf must be a positive finite number"),
    ("weight_decay", -5.0, "train.weight_decay = -5.0 must be 0 or a positive finite number"),
    ("grad_clip", -1.0, "train.grad_clip = -1.0 must be a positive finite number"),
    ("momentum", -1.0, r"train.momentum = -1.0 must be in \[0, 1\)"),
    ("momentum", 1.0, r"train.momentum = 1.0 must be in \[0, 1\)"),
    ("eval_batch_size", 0, "train.eval_batch_size = 0 must be at least 1"),
    ("seed", -1, "train.seed = -1 must be 0 or more"),
    ("gamma", 0.0, "train.gamma = 0.0 must be a positive finite number"),
])
def test_train_values_that_cannot_train_are_refused_when_the_recipe_loads(key, value, message):
    with pytest.raises(PracError, match=message):
        parse_recipe(quick_recipe(train={key: value}))


def test_weights_or_buffers_holding_nan_are_never_saved(tiny_net):
    from prac_plugin.engine.level import check_finite

    check_finite(tiny_net, 3)  # finite: passes
    tiny_net.fc.bias.data[0] = float("nan")
    with pytest.raises(PracError, match="level 3 diverged: fc.bias holds NaN or infinite values; nothing of this level is saved"):
        check_finite(tiny_net, 3)
