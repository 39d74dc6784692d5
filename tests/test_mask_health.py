"""The engine looks at every pruned level's mask before training: emptied tensors and the ticket's accuracy at
its start point are recorded in the level's metrics, with a loud warning when the mask may cut the network."""

import json

import torch

import prac_plugin
from prac_plugin.engine.health import MaskHealth, chance_ceiling

from conftest import install_strategy_package, quick_recipe

CUTTING = '''
from dataclasses import dataclass
from prac_plugin.tickets.masks import TicketMask
from prac_plugin.strategies import LevelPlan, StrategyOptions, TicketStrategy

class CutFirstLayer(TicketStrategy):
    """Level 1 keeps no weight of the first layer (fc1); level 2 keeps everything."""
    kind = "ticket"
    name = "cut_first_layer_test"
    Options = StrategyOptions

    @property
    def num_levels(self):
        return 2

    def rewind_point(self):
        return "1ep"

    def plan(self, level, previous, start, resumed_mask=None):
        masks = {n: m.clone().fill_(True) for n, m in previous.mask.masks.items()}
        if level == 1:
            masks["fc1.weight"].fill_(False)
        return LevelPlan(TicketMask(masks), start.step, weights=start.weights)
'''


def test_a_mask_that_empties_the_first_layer_is_flagged_and_recorded(tmp_path, monkeypatch, capsys):
    install_strategy_package(tmp_path, monkeypatch, "cut_strategy_test", CUTTING, "cut_first_layer_test = cut_strategy_test:CutFirstLayer", "ticket")
    raw = quick_recipe(train={"epochs": 3})
    raw["ticket"] = {"strategy": "cut_first_layer_test"}
    prac_plugin.run(raw, str(tmp_path / "run"))
    cut = json.loads((tmp_path / "run" / "level_01" / "metrics.json").read_text())["mask_health"]
    healthy = json.loads((tmp_path / "run" / "level_02" / "metrics.json").read_text())["mask_health"]
    assert cut["empty_layers"] == ["fc1.weight"] and cut["at_chance"] is True
    assert cut["start_point_acc"] <= cut["chance_ceiling"] < cut["dense_start_point_acc"]
    assert "level 1: the mask keeps no weight of fc1.weight" in cut["warning"] and "classifies at chance" in cut["warning"]
    assert healthy["empty_layers"] == [] and healthy["at_chance"] is False and healthy["warning"] is None
    assert healthy["start_point_acc"] == healthy["dense_start_point_acc"]  # a dense mask changes nothing
    assert cut["warning"] in capsys.readouterr().out  # said in the run's log, not only recorded
    level0 = json.loads((tmp_path / "run" / "level_00" / "metrics.json").read_text())
    assert "mask_health" not in level0  # the dense level has no mask to check


def test_the_look_does_not_change_training(tmp_path, monkeypatch):
    """The check evaluates with batch statistics and restores random state and buffers: a run's numbers are the
    ones it would have without it (its weights are compared with a run whose check is switched off)."""
    from safetensors.torch import load_file

    from prac_plugin.engine import level as level_module

    raw = quick_recipe(train={"epochs": 2})
    prac_plugin.run(raw, str(tmp_path / "checked"))
    monkeypatch.setattr(level_module, "start_point_accuracy", lambda *args: 0.5)
    monkeypatch.setattr(level_module.LevelLifecycle, "_record_health", lambda *args: None)
    prac_plugin.run(raw, str(tmp_path / "unchecked"))

    for level in (1, 2):
        a = load_file(tmp_path / "checked" / f"level_{level:02d}" / "weights.safetensors")
        b = load_file(tmp_path / "unchecked" / f"level_{level:02d}" / "weights.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), level


def test_chance_ceiling_is_the_majority_share_plus_three_standard_errors():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    assert abs(chance_ceiling(labels) - (0.5 + 3 * (0.25 / 100) ** 0.5)) < 1e-9
    assert chance_ceiling(torch.zeros(10, dtype=torch.long)) == 1.0


def test_without_a_dense_reference_only_the_ticket_itself_is_judged():
    health = MaskHealth("val", [], start_point_acc=0.1, dense_start_point_acc=None, chance_ceiling=0.2)
    assert health.at_chance and "classifies at chance (10.0% on val; chance up to 20.0%)" in health.warning(3)
    # a start point that knows nothing unmasked (initialization) is no reason to blame the mask
    at_init = MaskHealth("val", [], start_point_acc=0.1, dense_start_point_acc=0.12, chance_ceiling=0.2)
    assert not at_init.at_chance and at_init.warning(1) is None
