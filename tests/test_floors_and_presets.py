"""A per-tensor floor on what pruning keeps (ticket.min_per_layer), module-class patterns (type:GLOB), and the
PrAC reference preset, which the random-subset control shares so both spend the same budget the same way."""

import json

import pytest
import torch

import prac_plugin
from prac_plugin import PracError, TicketMask
from prac_plugin.tickets.masks import keep_largest, keep_largest_per_tensor_floor, prunable_parameter_names

from conftest import quick_recipe


def test_floor_reserves_each_tensors_largest_then_fills_the_budget_globally():
    big, small = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0]), torch.tensor([0.1, 0.3, 0.2])
    assert [f.tolist() for f in keep_largest_per_tensor_floor([big, small], 4)] == [[True] * 4 + [False], [False] * 3]
    kept = keep_largest_per_tensor_floor([big, small], 4, floor=2)
    assert [f.tolist() for f in kept] == [[True, True, False, False, False], [False, True, True]]
    tiny = torch.tensor([1.0])
    assert [f.tolist() for f in keep_largest_per_tensor_floor([big, tiny], 3, floor=2)] == [[True, True, False, False, False], [True]]
    with pytest.raises(PracError, match="ticket.min_per_layer = 3 keeps 6 weights, more than the 4"):
        keep_largest_per_tensor_floor([big, small], 4, floor=3)
    pool = torch.cat([big, small])
    assert torch.equal(torch.cat(keep_largest_per_tensor_floor([big, small], 5, floor=0)), keep_largest(pool, 5))


def test_global_magnitude_pruning_keeps_the_floor_of_a_tensor_it_would_empty():
    weights = {"a.weight": torch.full((10,), 5.0), "b.weight": torch.full((4,), 0.01)}
    dense = TicketMask({n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()})
    plain = dense.prune_weights(weights, 0.5)
    assert [layer.remaining for layer in plain.layers()] == [7, 0]  # b emptied
    floored = dense.prune_weights(weights, 0.5, min_per_layer=2)
    assert [layer.remaining for layer in floored.layers()] == [5, 2] and floored.num_remaining == plain.num_remaining


def test_type_patterns_choose_prunable_weights_by_module_class(tiny_net):
    convs = prunable_parameter_names(tiny_net, include=["type:Conv*"])
    everything = prunable_parameter_names(tiny_net)
    assert convs and set(convs) < set(everything) and all("fc" not in n for n in convs)
    assert prunable_parameter_names(tiny_net, ignore=["type:Linear"]) == convs
    with pytest.raises(PracError, match="ticket.include pattern 'type:LSTM' matches no prunable weight"):
        prunable_parameter_names(tiny_net, include=["type:LSTM"])


def test_cts_and_ltr_refuse_a_floor_larger_than_the_sparsest_level_keeps(tmp_path):
    raw = quick_recipe()
    raw["ticket"] = {"strategy": "cts", "densities": [0.001], "ignore": ["fc"], "min_per_layer": 100}
    with pytest.raises(PracError, match=r"ticket.min_per_layer = 100 reserves 200 weights over 2 prunable tensors, more than the 49 density 0.001 keeps"):
        prac_plugin.run(raw, str(tmp_path / "cts"))
    raw["ticket"] = {"strategy": "ltr", "levels": 20, "ignore": ["fc"], "min_per_layer": 1000}
    with pytest.raises(PracError, match="ticket.min_per_layer = 1000 reserves 2,000 weights over 2 prunable tensors, more than the 565 level 20 keeps"):
        prac_plugin.run(raw, str(tmp_path / "ltr"))
    assert not (tmp_path / "cts").exists() and not (tmp_path / "ltr").exists()


def test_cts_with_a_floor_keeps_the_exact_count_and_every_tensor(tmp_path):
    raw = quick_recipe(train={"epochs": 2})
    raw["ticket"] = {"strategy": "cts", "densities": [0.002], "rewind": "1ep", "search_steps": 5, "min_per_layer": 8}
    prac_plugin.run(raw, str(tmp_path / "run"))
    metrics = json.loads((tmp_path / "run" / "level_01" / "metrics.json").read_text())
    total = 64 * 300 + 300 * 100 + 100 * 10
    assert metrics["remaining_weights"] == round(0.002 * total)
    assert min(layer["remaining"] for layer in metrics["layers"]) >= 8 and metrics["cts_batchnorm"] == "batch"


def test_the_reference_preset_fills_what_the_recipe_leaves_unset():
    raw = quick_recipe()
    raw["ticket"] = {"strategy": "ltr", "levels": 2}
    raw["data_selection"] = {"strategy": "prac", "preset": "reference", "early_bird_window": 3}
    recipe = prac_plugin.parse_recipe(raw)
    selection, ticket = recipe.data_selection, recipe.ticket
    assert (selection.early_bird, selection.early_bird_eps, selection.early_bird_window, selection.budget) == (True, 0.08, 3, "quadratic")
    assert ticket.include == ["type:Conv*"] and ticket.rewind == "3ep"
    raw["data_selection"] = {"strategy": "random", "preset": "reference"}
    control = prac_plugin.parse_recipe(raw).data_selection
    assert (control.early_bird, control.early_bird_eps, control.early_bird_window, control.budget) == (True, 0.08, 5, "quadratic")
    # the resolved recipe records every value, and reads back the same
    again = prac_plugin.parse_recipe(recipe.to_dict())
    assert again.to_dict() == recipe.to_dict()


def test_a_preset_the_strategy_lacks_is_one_error():
    raw = quick_recipe()
    raw["data_selection"] = {"strategy": "full", "preset": "reference"}
    with pytest.raises(PracError, match=r"data_selection.preset = 'reference' is not a preset of data_selection.strategy 'full' \(presets: none\)"):
        prac_plugin.parse_recipe(raw)
    raw["data_selection"] = {"strategy": "prac", "preset": "paper"}
    with pytest.raises(PracError, match="data_selection.preset = 'paper' is not a preset of data_selection.strategy 'prac' \\(presets: 'reference'\\)"):
        prac_plugin.parse_recipe(raw)


def test_prac_and_its_random_control_stop_by_the_same_early_bird_rule(tmp_path):
    """eps 0.99 over a window of 1: every level of both stops at its second epoch end, whatever it trains on
    (level 0 at epoch 2; level 1, rewound to epoch 1, at epoch 3)."""
    stops = {}
    for strategy in ("prac", "random"):
        raw = quick_recipe(train={"epochs": 6})
        raw["data_selection"] = {"strategy": strategy, "early_bird": True, "early_bird_eps": 0.99, "early_bird_window": 1}
        prac_plugin.run(raw, str(tmp_path / strategy))
        last = [json.loads((tmp_path / strategy / f"level_{level:02d}" / "metrics.json").read_text())["history"][-1] for level in (0, 1)]
        assert all(record.get("stopped_early") for record in last), last
        stops[strategy] = [record["epoch"] for record in last]
    assert stops["prac"] == stops["random"] == [2, 3]
