import json
import sys

import pytest

import prac_plugin
from prac_plugin import PracError, parse_recipe
from prac_plugin.config.recipes import apply_overrides, dump_recipe, load_recipe
from prac_plugin import registry

from conftest import install_strategy_package, quick_recipe


def test_defaults_fill_a_minimal_recipe():
    recipe = parse_recipe({})
    assert recipe.model.name == "lenet_300_100"
    assert recipe.ticket.strategy == "ltr" and recipe.ticket.fraction == 0.2 and recipe.ticket.rewind == "0it"
    assert recipe.data_selection.strategy == "full"
    assert parse_recipe(recipe.to_dict()).to_dict() == recipe.to_dict()  # a resolved recipe re-validates


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trian": {}}, "unknown recipe section 'trian'; allowed sections: model, data, train"),
        ({"train": {"epoch": 3}}, "unknown key train.epoch; allowed keys: epochs, batch_size"),
        ({"train": {"epochs": "three"}}, "train.epochs = 'three' should be int"),
        ({"train": {"epochs": 2.5}}, "train.epochs = 2.5 should be int"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer = 'lion' is not allowed; choose one of 'sgd', 'adam', 'adamw'"),
        ({"train": {"milestones": [5, 50], "epochs": 10}}, "train.milestones entry 50 is outside 1..10"),
        ({"ticket": {"fraction": 1.2}}, "prune fraction 1.2 is outside (0, 1)"),
        ({"ticket": {"fraction": 0}}, "prune fraction 0.0 is outside (0, 1)"),
        ({"ticket": {"rewind": "2 epochs"}}, "rewind point '2 epochs' is not understood"),
        ({"ticket": {"strategy": "magic"}}, "unknown ticket.strategy 'magic'; available: cts, ltr"),
        ({"ticket": {"levels": 3, "fractoin": 0.2}}, "unknown key ticket.fractoin; allowed keys: levels, fraction"),
        ({"data_selection": {"strategy": "random", "fraction": 2}}, "data_selection.fraction = 2.0 must be in (0, 1]"),
        ({"data": {"augment": {"flip": True}}}, "unknown key data.augment.flip; allowed keys: random_crop_padding, hflip"),
        ({"model": "resnet18"}, "model should be a mapping"),
        ({"train": {"mixed_precision": True}}, "train.mixed_precision = true is ambiguous"),
        ({"train": {"nesterov": True, "momentum": 0.0}}, "train.nesterov needs a positive train.momentum"),
    ],
)
def test_recipe_errors_name_the_key_and_the_allowed_values(raw, message):
    with pytest.raises(PracError) as info:
        parse_recipe(raw)
    assert message in str(info.value)


def test_overrides_are_parsed_as_yaml_and_validated():
    raw = apply_overrides(quick_recipe(), ["train.epochs=3", "ticket.ignore=[fc, fc2]", "data.augment.hflip=true"])
    recipe = parse_recipe(raw)
    assert recipe.train.epochs == 3 and recipe.ticket.ignore == ["fc", "fc2"] and recipe.data.augment.hflip is True
    with pytest.raises(PracError, match="unknown key train.epohcs"):
        parse_recipe(apply_overrides(quick_recipe(), ["train.epohcs=3"]))
    with pytest.raises(PracError, match="should look like section.key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(PracError, match="should name a section and a key"):
        apply_overrides({}, ["epochs=3"])


def test_recipe_files_round_trip_and_broken_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(dump_recipe(parse_recipe(quick_recipe())))
    assert load_recipe(path).to_dict() == parse_recipe(quick_recipe()).to_dict()
    path.write_text("train:\n  epochs: [1\n")
    with pytest.raises(PracError, match="is not valid YAML at line"):
        load_recipe(path)
    with pytest.raises(PracError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_registry_lists_builtins_and_rejects_unknown_names():
    assert registry.get("ticket", "ltr").name == "ltr"
    assert {"full", "random"} <= set(registry.available("data_selection"))
    with pytest.raises(PracError, match="unknown data_selection.strategy 'prac2'; available: .*full"):
        registry.get("data_selection", "prac2")


def test_strategy_from_an_installed_package_entry_point(tmp_path, monkeypatch):
    """A third-party package advertises a strategy in the entry-point group; recipes find it by name."""
    install_strategy_package(tmp_path, monkeypatch, "thirdparty_sel", '''
        from dataclasses import dataclass
        import torch
        from prac_plugin.strategies import DataSelectionStrategy, StrategyOptions

        @dataclass
        class EvenOptions(StrategyOptions):
            stride: int = 2

        class EvenRows(DataSelectionStrategy):
            kind = "data_selection"
            name = "even_rows"
            Options = EvenOptions

            def positions_for_level(self, level):
                return torch.arange(0, self.context.train_size, self.options.stride)
    ''', "even_rows = thirdparty_sel:EvenRows", "data_selection")
    recipe = parse_recipe(quick_recipe(data_selection={"strategy": "even_rows", "stride": 3}))
    assert type(recipe.data_selection).__name__ == "EvenOptions" and recipe.data_selection.stride == 3
    assert "even_rows" in registry.available("data_selection")
    rows = prac_plugin.run(quick_recipe(data_selection={"strategy": "even_rows", "stride": 3}, ticket={"levels": 1}), str(tmp_path / "run"))
    assert len(rows) == 2
    metrics = json.loads((tmp_path / "run" / "level_01" / "metrics.json").read_text())
    assert metrics["train_examples"] == len(range(0, metrics["data"]["sizes"]["train"], 3))
    sys.modules.pop("thirdparty_sel", None)


def test_yaml_no_is_read_as_no_mixed_precision():
    assert parse_recipe({"train": {"mixed_precision": False}}).train.mixed_precision == "no"
    assert parse_recipe(apply_overrides({}, ["train.mixed_precision=no"])).train.mixed_precision == "no"
