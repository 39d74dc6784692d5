"""A strategy is one folder and one entry point: everything else reads its declarations.

Covers: a toy built-in-style ticket strategy (random pruning at initialization) added as one package folder
(``options.py`` with its options and spec, ``strategy.py`` with the class) and one entry-point line, run through
``prac recipe``, ``prac run``, ``prac report`` and ``prac sanity`` with nothing else changed; ``prac recipe``
and reading recipes import neither torch nor timm (a strategy's declarations are read without its module);
the plugin contract is exported from the package root without importing torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import prac_plugin
from prac_plugin import registry
from prac_plugin.cli import main as prac_cli

from conftest import install_strategy_package, quick_recipe

ROOT = Path(__file__).resolve().parents[1]
TOY = "random_init_test"

TOY_OPTIONS = '''
"""Random pruning at initialization: each level keeps a seeded random share of every prunable tensor."""

from dataclasses import dataclass, field

from prac_plugin import Column, PracError, Starter, StrategyOptions, StrategySpec, TicketTraits, option


@dataclass
class RandomInitOptions(StrategyOptions):
    levels: int = option(2, help="pruned levels after the dense one")
    fraction: float = option(0.5, help="share of the remaining weights each level removes")
    seed: int = option(0, help="seed of the random masks")
    ignore: list[str] = option(default_factory=list, help="glob patterns of weights never pruned")

    def __post_init__(self):
        if not 0.0 < self.fraction < 1.0:
            raise PracError(f"ticket.fraction = {self.fraction!r} is outside (0, 1)")


SPEC = StrategySpec(
    "ticket", "random_init_test", RandomInitOptions, "toy_random_init.strategy:RandomInit",
    traits=TicketTraits(independent_levels=True, analyses=frozenset({"sanity"}),
                        not_applicable="its masks are random draws at initialization"),
    description="random pruning at initialization: a seeded random mask of each level's density",
    starter=Starter({"levels": 1, "fraction": 0.5, "ignore": ["fc"]}, title="random pruning at initialization"),
    summary_columns=(Column("random_init_density", "target density", "{:.3f}"),),
)
'''

TOY_STRATEGY = '''
import torch

from prac_plugin import LevelPlan, TicketMask, TicketStrategy

from .options import SPEC


class RandomInit(TicketStrategy):
    spec = SPEC

    @property
    def num_levels(self):
        return self.options.levels

    def prunable_patterns(self):
        return [], list(self.options.ignore)

    def start_point(self):
        return "init"

    def plan(self, level, previous, start, resumed_mask=None):
        density = (1 - self.options.fraction) ** level
        generator = torch.Generator().manual_seed(self.options.seed * 1000 + level)
        masks = {}
        for name, flags in previous.mask.masks.items():
            keep = torch.zeros(flags.numel(), dtype=torch.bool)
            keep[torch.randperm(flags.numel(), generator=generator)[: max(1, round(density * flags.numel()))]] = True
            masks[name] = keep.view(flags.shape)
        return LevelPlan(TicketMask(masks), start.step, weights=start.weights, info={"random_init_density": density})
'''


@pytest.fixture
def toy_strategy(tmp_path, monkeypatch):
    """The toy strategy installed as a package folder with one entry point naming its spec."""
    install_strategy_package(tmp_path, monkeypatch, "toy_random_init",
                             {"__init__.py": "", "options.py": TOY_OPTIONS, "strategy.py": TOY_STRATEGY},
                             f"{TOY} = toy_random_init.options:SPEC", "ticket")
    yield TOY
    for name in [m for m in sys.modules if m.startswith("toy_random_init")]:
        sys.modules.pop(name)


def test_a_strategy_added_as_one_folder_runs_through_every_command(toy_strategy, tmp_path, capsys):
    assert prac_cli(["recipe", f"ticket.strategy={toy_strategy}"]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"## ticket (strategy: {toy_strategy})\n\nrandom pruning at initialization: a seeded random mask")
    assert "| `seed` | int | `0` | seed of the random masks |" in table
    assert prac_cli(["recipe"]) == 0 and f"## ticket (strategy: {toy_strategy})" in capsys.readouterr().out
    assert prac_cli(["recipe", "--example", toy_strategy]) == 0
    starter = yaml.safe_load(capsys.readouterr().out)
    assert starter["ticket"] == {"strategy": toy_strategy, "levels": 1, "fraction": 0.5, "ignore": ["fc"]}
    assert "toy_random_init.strategy" not in sys.modules  # documenting it read the declarations alone

    recipe = quick_recipe(ticket={"strategy": toy_strategy, "levels": 2, "fraction": 0.5, "ignore": ["fc"]})
    del recipe["ticket"]["rewind"]
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert prac_cli(["run", str(tmp_path / "toy.yaml"), "-o", str(run)]) == 0
    assert "toy_random_init.strategy" in sys.modules
    levels = [json.loads((run / f"level_{i:02d}" / "metrics.json").read_text()) for i in range(3)]
    assert [round(m["weights_remaining_pct"]) for m in levels] == [100, 50, 25]

    capsys.readouterr()
    assert prac_cli(["report", str(run)]) == 0
    report = capsys.readouterr().out
    assert "| target density |" in report and "| 0.250 |" in report  # the column the strategy declares
    assert "target density" in (run / "summary.md").read_text()

    assert prac_cli(["sanity", str(run), "--level", "1", "--seeds", "1"]) == 0
    result = json.loads((run / "sanity" / "level_01.json").read_text())
    assert result["start"] == "init" and set(result["variants"]) == {"ticket", "random", "shuffle", "reinit"}
    assert "inverted" in result["skipped"]  # no magnitude masks declared: nothing to invert
    capsys.readouterr()
    assert prac_cli(["stability", str(run)]) == 2  # not declared applicable: said in one line
    assert "its masks are random draws at initialization" in capsys.readouterr().err


LIGHT = '''
import contextlib, io, sys
{body}
heavy = sorted(name for name in ("torch", "timm", "torch_pruning") if name in sys.modules)
assert not heavy, heavy
'''


def _run_light(body: str) -> None:
    done = subprocess.run([sys.executable, "-c", LIGHT.format(body=body)], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr


def test_prac_recipe_imports_neither_torch_nor_timm():
    _run_light('''
from prac_plugin.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    assert main(["recipe"]) == 0
    for name in ("ltr", "prac", "cts", "structured"):
        assert main(["recipe", "--example", name]) == 0
assert "## ticket (strategy: structured)" in out.getvalue()
''')


def test_reading_every_starter_recipe_imports_neither_torch_nor_torch_pruning():
    _run_light('''
from prac_plugin.config.docs import examples
from prac_plugin.config.recipes import parse_recipe
for name, raw in examples().items():
    assert parse_recipe(raw).ticket.strategy == raw["ticket"]["strategy"]
parse_recipe({"data_selection": {"strategy": "random", "preset": "reference"}})
''')


def test_the_plugin_contract_is_exported_from_the_package_root():
    _run_light('''
import prac_plugin
from prac_plugin import Column, Starter, StrategyOptions, StrategySpec, TicketTraits, option, register
''')
    from prac_plugin.strategies import base, declarations

    for name in ("LevelPlan", "TicketContext", "SelectionContext", "StartPoint", "PreviousLevel", "TicketStrategy",
                 "DataSelectionStrategy"):
        assert getattr(prac_plugin, name) is getattr(base, name) and name in prac_plugin.__all__
    for name in ("TicketTraits", "StrategyOptions", "StrategySpec"):
        assert getattr(prac_plugin, name) is getattr(declarations, name) and name in prac_plugin.__all__
    assert prac_plugin.register is registry.register


def test_a_built_in_class_and_its_spec_never_disagree():
    for kind, name in [(kind, name) for kind in registry.KINDS for name in registry.built_in(kind)]:
        spec, cls = registry.spec(kind, name), registry.get(kind, name)
        assert cls.spec is spec and (cls.kind, cls.name, cls.Options, cls.traits) == (spec.kind, spec.name, spec.Options, spec.traits)
