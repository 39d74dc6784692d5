"""`prac recipe`: every key documented from the schema and the strategies (third-party ones too), starter recipes
that run as printed, and the README's key table kept in step with the schema."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

import prac_plugin
from prac_plugin.cli import main as prac_cli
from prac_plugin.config.docs import SECTION_HELP, describe, example, examples, section_class
from prac_plugin.config.recipes import apply_overrides, parse_recipe
from prac_plugin import registry
from prac_plugin.strategies.base import StrategyOptions, TicketStrategy

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = [(section, "") for section in ("model", "data", "augment", "train", "run")] + [
    ("ticket", name) for name in ("ltr", "cts", "structured")] + [("data_selection", name) for name in ("full", "random", "prac", "index")]


@pytest.mark.parametrize("section,strategy", BUILT_IN)
def test_every_built_in_key_has_a_line_of_help_and_no_stale_help(section, strategy):
    docs = describe(section, strategy or None)
    assert all(d.help for d in docs), [d.key for d in docs if not d.help]
    cls, _ = section_class(section, strategy or None)
    keys = {f.name for f in dataclasses.fields(cls) if f.init}
    if strategy:  # a strategy's help is beside each of its fields, so none can go stale
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls) if f.init)
        assert registry.spec(section, strategy).description  # the line under its table
    else:
        assert set(SECTION_HELP[section]) == keys


def test_types_defaults_and_allowed_values_come_from_the_schema(capsys):
    train = {d.key: d for d in describe("train")}
    assert train["optimizer"].type == "'sgd' | 'adam' | 'adamw'" and train["optimizer"].default == "sgd"
    assert train["grad_clip"].type == "float | null" and train["grad_clip"].default is None
    cts = {d.key: d for d in describe("ticket", "cts")}
    assert cts["densities"].default == [0.05, 0.02, 0.01, 0.005]
    assert prac_cli(["recipe", "ticket.strategy=cts"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## ticket (strategy: cts)") and "| `concrete_form` | 'paper' \\| 'reference_code' | `paper` |" in out
    assert prac_cli(["recipe"]) == 0
    everything = capsys.readouterr().out
    assert all(f"## {title}" in everything for title in ("model", "train", "run", "ticket (strategy: structured)", "data_selection (strategy: prac)"))


@pytest.mark.parametrize("bad", ["bogus", "ticket.levels=3", "train.strategy=x"])
def test_bad_requests_are_one_line(bad, capsys):
    assert prac_cli(["recipe", bad]) == 2
    assert capsys.readouterr().err.startswith("prac: error:")


def test_a_third_party_strategy_is_documented_from_its_own_fields(capsys):
    @dataclasses.dataclass
    class GreedyOptions(StrategyOptions):
        levels: int = 3
        temperature: float = dataclasses.field(default=1.5, metadata={"help": "softness of the greedy choice"})
        HELP = {"levels": "rounds of the greedy search"}

    class Greedy(TicketStrategy):
        name, Options = "greedy_test_only", GreedyOptions

    registry.register(Greedy)
    try:
        assert prac_cli(["recipe", "ticket.strategy=greedy_test_only"]) == 0
        out = capsys.readouterr().out
        assert "| `levels` | int | `3` | rounds of the greedy search |" in out
        assert "| `temperature` | float | `1.5` | softness of the greedy choice |" in out
    finally:
        registry._registry["ticket"].pop("greedy_test_only")


SHORT = {"ltr": ["ticket.levels=1"], "prac": ["ticket.levels=1"], "structured": ["ticket.levels=1"],
         "cts": ["ticket.densities=[0.1]", "ticket.search_steps=3"]}


@pytest.mark.parametrize("name", ["ltr", "prac", "cts", "structured"])
def test_starter_recipes_run_as_printed(name, tmp_path, capsys):
    assert prac_cli(["recipe", "--example", name]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text) == examples()[name]  # the comments change nothing
    assert all("#" in line for line in text.splitlines() if line.startswith("  "))  # every key explained
    (tmp_path / "recipe.yaml").write_text(text)
    recipe = parse_recipe(apply_overrides(yaml.safe_load(text), ["train.epochs=1", "ticket.rewind=2it", "run.tracker=none", *SHORT[name]]))
    rows = prac_plugin.run(recipe, str(tmp_path / "run"))
    assert len(rows) == 2 and rows[-1]["test_acc"] > 0


@pytest.mark.parametrize("name,path", [("ltr", "quickstart.yaml"), ("cts", "quickstart_cts.yaml"), ("structured", "structured_quickstart.yaml")])
def test_starter_recipes_are_the_shipped_recipe_files(name, path):
    assert yaml.safe_load((ROOT / "recipes" / path).read_text()) == examples()[name]


def test_unknown_example_is_refused():
    with pytest.raises(prac_plugin.PracError, match="--example 'nope' is not one of"):
        example("nope")


def test_the_readme_key_table_names_exactly_the_schemas_keys():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| section | keys (defaults) |"):]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.*) \|$", table.split("\n\n")[0], re.M)}
    assert set(rows) == {"model", "data", "train", "ticket", "data_selection", "run"}
    for section, row in rows.items():
        named = set(re.findall(r"`(\w+)`", row))
        keys = {d.key for s, strategy in BUILT_IN if s == section for d in describe(s, strategy or None)}
        if section == "data":
            keys |= {d.key for d in describe("augment")}
        strategies = set(registry.available(section)) if section in ("ticket", "data_selection") else set()
        assert keys <= named, f"{section}: the README does not name {sorted(keys - named)}"
        values = {"strategy", "auto", "none", "no", "global", "layer", "image", "img", "label", "labels", "fine_label"}  # quoted values
        assert named <= keys | strategies | values | {k for k in named if re.fullmatch(r"\d+\w*", k)}, sorted(named - keys - strategies - values)
    assert "prac recipe" in readme
