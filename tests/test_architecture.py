"""The engine owns the level; strategies plan and declare what they are; analyses read the declarations.

Covers: a third-party strategy (entry-point group) declaring independent levels gets the matching cost
accounting in `prac report` and the analyses it declares; a resumed CTS level reuses its checkpoint's mask
instead of searching again; retraining analyses release every optimizer they prepare; an analysis that does
not apply to a strategy says so in one line.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

import prac_plugin
from prac_plugin.engine import retrain as retrain_module
from prac_plugin.analysis.compare import write_comparison
from prac_plugin.analysis.sanity import run_sanity
from prac_plugin.engine.checkpoint import LevelCheckpoints
from prac_plugin.cli import main as prac_cli
from prac_plugin.compat.accelerate_private import prepared_optimizers
from prac_plugin.strategies.cts import strategy as cts_module

from conftest import install_strategy_package, quick_recipe

THIRD_PARTY = '''
from dataclasses import dataclass, field
import torch
from prac_plugin.tickets.masks import TicketMask
from prac_plugin.strategies import StrategyOptions, TicketStrategy, LevelPlan
from prac_plugin.strategies.base import TicketTraits

@dataclass
class RandomTicketOptions(StrategyOptions):
    densities: list[float] = field(default_factory=lambda: [0.5, 0.2])

class RandomTicket(TicketStrategy):
    """Each level: a fresh random mask of its density at the rewind point (levels independent of each other)."""
    kind = "ticket"
    name = "random_ticket_test"
    Options = RandomTicketOptions
    traits = TicketTraits(levels_option=None, independent_levels=True, analyses=frozenset({"retrain"}),
                          not_applicable="its masks are random draws")

    @property
    def num_levels(self):
        return len(self.options.densities)

    def rewind_point(self):
        return "1ep"

    def plan(self, level, previous, start, resumed_mask=None):
        generator = torch.Generator().manual_seed(level)
        masks = {}
        for name, flags in previous.mask.masks.items():
            keep = torch.rand(flags.shape, generator=generator) < self.options.densities[level - 1]
            masks[name] = keep
        return LevelPlan(TicketMask(masks), start.step, weights=start.weights)
'''


@pytest.fixture
def third_party_strategy(tmp_path, monkeypatch):
    """A ticket strategy installed through the entry-point group, as another package would ship it."""
    install_strategy_package(tmp_path, monkeypatch, "thirdparty_ticket", THIRD_PARTY,
                             "random_ticket_test = thirdparty_ticket:RandomTicket", "ticket")
    return "random_ticket_test"


def test_a_third_party_strategy_gets_the_behaviour_it_declares(third_party_strategy, tmp_path, capsys):
    run = tmp_path / "run"
    recipe = quick_recipe(ticket={"strategy": third_party_strategy, "densities": [0.5, 0.2]})
    del recipe["ticket"]["levels"], recipe["ticket"]["fraction"], recipe["ticket"]["ignore"], recipe["ticket"]["rewind"]
    prac_plugin.run(recipe, str(run))
    levels = [json.loads((run / f"level_{i:02d}" / "metrics.json").read_text()) for i in range(3)]
    assert [round(m["weights_remaining_pct"]) for m in levels] == [100, 50, 20]

    # independent levels: level 2's ticket costs level 0 and level 2, not level 1 in between
    rows, _ = write_comparison([str(run)], str(tmp_path / "report"))
    steps = [m["optimizer_steps"] for m in levels]
    assert [r["cumulative_steps_mean"] for r in rows] == [steps[0], steps[0] + steps[1], steps[0] + steps[2]]

    # declared: full-data retraining applies (and trains the level's own mask); sanity checks do not
    assert prac_cli(["retrain", str(run), "--level", "2"]) == 0
    result = json.loads((run / "full_data" / "level_02.json").read_text())
    mask = load_file(str(run / "level_02" / "mask.safetensors"))
    kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert result["weights_remaining_pct"] == pytest.approx(100 * kept)
    assert result["finding_steps"] == steps[0]  # the same cost rule as the report's: level 1 did not find level 2's mask
    capsys.readouterr()
    assert prac_cli(["sanity", str(run), "--level", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ticket.strategy 'random_ticket_test'" in err[0] and "its masks are random draws" in err[0]


class _Stop(Exception):
    pass


def test_a_resumed_cts_level_reuses_its_mask_instead_of_searching_again(tmp_path, monkeypatch):
    recipe = quick_recipe(
        train={"epochs": 3},
        ticket={"strategy": "cts", "densities": [0.2, 0.05], "search_steps": 12, "rewind": "1ep"},
        run={"tracker": "none", "checkpoint_every": "5it", "checkpoint_keep": 1},
    )
    for key in ("levels", "fraction", "ignore"):
        del recipe["ticket"][key]
    searches = []
    real_search = cts_module.concrete_ticket_search

    def counting_search(model, names, batches, cfg, reduce):
        searches.append(cfg.steps)
        return real_search(model, names, batches, cfg, reduce)

    monkeypatch.setattr(cts_module, "concrete_ticket_search", counting_search)
    whole = tmp_path / "whole"
    prac_plugin.run(recipe, str(whole))
    assert len(searches) == 2

    real_save = LevelCheckpoints.save

    def save_then_stop(self, level, step, *args, **kwargs):
        real_save(self, level, step, *args, **kwargs)
        if level == 1:
            raise _Stop  # as if killed right after level 1's first checkpoint

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(LevelCheckpoints, "save", save_then_stop)
    searches.clear()
    with pytest.raises(_Stop):
        prac_plugin.run(recipe, str(interrupted))
    assert len(searches) == 1  # level 1 searched once before it was stopped
    monkeypatch.setattr(LevelCheckpoints, "save", real_save)
    searches.clear()
    prac_plugin.run(recipe, str(interrupted))
    assert len(searches) == 1  # only level 2: the resumed level 1 took its checkpoint's mask

    for level in (1, 2):
        first = load_file(str(whole / f"level_{level:02d}" / "mask.safetensors"))
        second = load_file(str(interrupted / f"level_{level:02d}" / "mask.safetensors"))
        assert all(torch.equal(first[k], second[k]) for k in first)
        a = json.loads((whole / f"level_{level:02d}" / "metrics.json").read_text())
        b = json.loads((interrupted / f"level_{level:02d}" / "metrics.json").read_text())
        for key in ("test_acc", "cts_expected_density", "cts_search_steps", "cts_search_history", "optimizer_steps"):
            assert a[key] == b[key], key


def test_retraining_analyses_release_their_optimizers(tmp_path, monkeypatch):
    run = tmp_path / "run"
    prac_plugin.run(quick_recipe(ticket={"levels": 1}), str(run))
    engines = []
    real_build = retrain_module.build_engine

    def keep_engine(recipe, path):
        engines.append(real_build(recipe, path))
        return engines[-1]

    monkeypatch.setattr(retrain_module, "build_engine", keep_engine)
    result = run_sanity(str(run), 1, seeds=1)
    assert set(result["variants"]) == {"ticket", "random", "shuffle", "reinit", "inverted"}  # five levels trained
    assert prepared_optimizers(engines[0].accelerator) == []


def test_analyses_that_do_not_apply_to_structured_tickets_say_so_in_one_line(tmp_path, capsys):
    run = tmp_path / "structured"
    prac_plugin.run(quick_recipe(ticket={"strategy": "structured", "levels": 1}), str(run))
    for command in (["sanity", str(run)], ["stability", str(run)], ["retrain", str(run)]):
        capsys.readouterr()
        assert prac_cli(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "ticket.strategy 'structured'" in err[0] and "smaller architectures" in err[0], err
