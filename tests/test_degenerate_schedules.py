"""Degenerate schedules and batch sizes are refused before the run folder exists (issue 16 hardening, parts 1 and 2):
levels that prune nothing or leave nothing, CTS densities that keep no weight or all of them, structured levels past
the channel floor, a batch no process can use. The counting is checked against what pruning actually does."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prac_plugin import PracError
from prac_plugin.cli import main as prac_cli
from prac_plugin.tickets.masks import TicketMask, count_to_prune
from prac_plugin.engine.schedule import check_batch_size
from prac_plugin.strategies.cts.checks import check_cts_densities, cts_keep_count
from prac_plugin.strategies.ltr.checks import check_ltr_schedule, ltr_counts
from prac_plugin.tickets.checks import prunable_sizes

from conftest import quick_recipe

fractions = st.one_of(st.floats(0.01, 0.99), st.sampled_from([0.2, 0.5, 1 / 3, 0.999, 1e-7]))
widths = st.lists(st.integers(1, 9), min_size=2, max_size=5)


def _model(widths: list[int]) -> nn.Module:
    return nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths, widths[1:])])


@settings(max_examples=60, deadline=None)
@given(widths=widths, fraction=fractions, scope=st.sampled_from(["global", "layer"]), levels=st.integers(1, 6), seed=st.integers(0, 99))
def test_simulated_counts_are_what_magnitude_pruning_does(widths, fraction, scope, levels, seed):
    """The check's counts come from sizes alone; they must match prune_magnitude on real weights, level by level."""
    torch.manual_seed(seed)
    model = _model(widths)
    mask = TicketMask.dense(model)
    sizes = prunable_sizes(model)
    assert list(sizes) == list(mask.masks)
    for count in ltr_counts(list(sizes.values()), fraction, scope, levels):
        with torch.no_grad():  # the magnitudes change between levels, as training changes them
            for p in model.parameters():
                p.normal_()
        mask = mask.prune_magnitude(model, fraction, scope)
        per_tensor = tuple(int(m.sum()) for m in mask.masks.values())
        assert count.remaining == ((sum(per_tensor),) if scope == "global" else per_tensor)


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 400), min_size=1, max_size=4), fraction=fractions,
       scope=st.sampled_from(["global", "layer"]), levels=st.integers(0, 60))
def test_a_schedule_is_refused_exactly_at_its_first_degenerate_level(sizes, fraction, scope, levels):
    named = {f"l{i}.weight": s for i, s in enumerate(sizes)}
    bad = None
    for count in ltr_counts(sizes, fraction, scope, levels):
        if sum(count.pruned) == 0 or 0 in count.remaining:
            bad = count.level
            break
    if bad is None:
        check_ltr_schedule(named, fraction, scope, levels)
    else:
        with pytest.raises(PracError, match=rf"level {bad} |at level {bad} "):
            check_ltr_schedule(named, fraction, scope, levels)


def test_the_messages_name_the_level_and_what_is_allowed():
    with pytest.raises(PracError, match=r"ticket.levels = 1000: level 3 would leave no prunable weight .* at most 2 levels are possible"):
        check_ltr_schedule({"w": 3}, 0.2, "global", 1000)  # 3 -> 2 -> 1 -> 0
    with pytest.raises(PracError, match=r"ticket.fraction = 1e-12 prunes no weight at level 1 .* at least 1/100"):
        check_ltr_schedule({"a": 100, "b": 10}, 1e-12, "layer", 3)
    with pytest.raises(PracError, match=r"level 2 would empty b \(ticket.scope = layer .*at most 1 level is possible"):
        check_ltr_schedule({"a": 100, "b": 2}, 0.4, "layer", 5)  # b: 2 -> 1 -> 0
    check_ltr_schedule({"w": 3}, 0.2, "global", 2)
    check_ltr_schedule({"w": 1}, 0.2, "global", 0)  # no level, nothing to prune


@settings(max_examples=200, deadline=None)
@given(density=st.floats(1e-9, 1 - 1e-9), total=st.integers(1, 10**7))
def test_cts_densities_are_refused_exactly_when_the_ticket_keeps_none_or_all(density, total):
    keep = cts_keep_count(density, total)
    assert keep == round(density * total)
    if 0 < keep < total:
        check_cts_densities([density], total)
    else:
        with pytest.raises(PracError, match=rf"ticket.densities entry {density!r} keeps .* allowed: densities keeping 1 to"):
            check_cts_densities([density], total)


def test_batch_sizes_no_process_can_use_are_refused():
    check_batch_size(1294, 1294)
    check_batch_size(64, 1294, 2)  # last batch 14: both processes get 7
    with pytest.raises(PracError, match=r"train.batch_size = 100,000,000 is larger than the 1,294 training examples .* allowed: 1 to 1,294"):
        check_batch_size(100_000_000, 1294)
    with pytest.raises(PracError, match=r"train.batch_size = 1 is smaller than the 2 processes"):
        check_batch_size(1, 1294, 2)
    with pytest.raises(PracError, match=r"leaves a last batch of 1 of the 1,281 training examples for 2 processes"):
        check_batch_size(64, 1281, 2)


def test_count_to_prune_is_the_rounding_the_check_uses():
    assert [c.pruned for c in ltr_counts([10, 3], 0.5, "layer", 2)] == [(count_to_prune(0.5, 10), 2), (3, 1)]


# -- end to end: the CLI refuses in one line and leaves no run folder ------------------------------------------------
STRUCTURED = {"strategy": "structured", "levels": 3, "fraction": 0.5, "scope": "layer", "min_keep": 0.5, "rewind": "1ep", "ignore": ["fc"]}
CTS = {"strategy": "cts", "densities": [0.5, 1e-9], "rewind": "1ep", "search_steps": 2}


@pytest.mark.parametrize("ticket,sets,message", [
    (None, ["ticket.levels=1000"], r"ticket.levels = 1000: level 44 would leave no prunable weight .*at most 43 levels"),
    (None, ["ticket.fraction=1e-12"], r"ticket.fraction = 1e-12 prunes no weight at level 1"),
    (None, ["ticket.levels=1000", "ticket.scope=layer"], r"ticket.levels = 1000: level \d+ would empty fc\d.weight"),
    (None, ["train.batch_size=100000000"], r"train.batch_size = 100,000,000 is larger than the 1,294 training examples"),
    (CTS, [], r"ticket.densities entry 1e-09 keeps round\(1e-09 x 50,200\) = 0 "),
    (STRUCTURED, [], r"ticket.levels = 3: level 2 would remove no channel, every prunable layer being at its ticket.min_keep"),
])
def test_the_cli_refuses_before_the_run_folder_exists(tmp_path, capsys, ticket, sets, message):
    recipe = quick_recipe()
    if ticket is not None:
        recipe["ticket"] = ticket
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    argv = ["run", str(path), "--output", str(out)]
    for item in sets:
        argv += ["--set", item]
    assert prac_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prac: error: ")
    assert re.search(message, err), err
    assert not out.exists()
