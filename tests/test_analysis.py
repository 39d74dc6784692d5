"""Ticket analysis on tiny digits runs: sanity-check transforms, linear mode connectivity, multi-run reports,
and the errors for incomplete or old run directories."""

import csv
import json
import math
import shutil

import pytest
import torch
from conftest import TinyNet, quick_recipe
from safetensors.torch import load_file

import prac_plugin
from prac_plugin import PracError, TicketMask
from prac_plugin.analysis.compare import write_comparison
from prac_plugin.engine.retrain import Retrainer
from prac_plugin.analysis.sanity import inverted_mask, random_mask, reinitialized, run_sanity, shuffled_mask
from prac_plugin.analysis.stability import barrier, error_along_path, interpolate, recompute_norm_statistics
from prac_plugin.cli import main
from prac_plugin.rundir.folder import RunDirectory


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of one LTR recipe (levels 0..2) and a random-subset run (levels 0..1)."""
    root = tmp_path_factory.mktemp("analysis")
    recipes = {
        "ltr_seed0": quick_recipe(),
        "ltr_seed1": quick_recipe(train={"seed": 1}),
        "random_seed0": quick_recipe(ticket={"levels": 1}, data_selection={"strategy": "random", "fraction": 0.5}),
    }
    for name, recipe in recipes.items():
        prac_plugin.run(recipe, str(root / name))
    return root


@pytest.fixture(scope="module")
def retrainer(runs):
    return Retrainer(RunDirectory(runs / "ltr_seed0"))


def _masks(run, level):
    return TicketMask.load(run / f"level_{level:02d}" / "mask.safetensors")


def _counts(mask):
    return {layer.name: layer.remaining for layer in mask.layers()}


def test_shuffle_and_random_keep_each_layers_count_but_move_the_weights(runs):
    ticket = _masks(runs / "ltr_seed0", 2)
    generator = torch.Generator().manual_seed(0)
    for variant in (shuffled_mask(ticket, generator), random_mask(ticket, generator)):
        assert _counts(variant) == _counts(ticket)
        assert {n: m.shape for n, m in variant.masks.items()} == {n: m.shape for n, m in ticket.masks.items()}
        for name, m in variant.masks.items():
            overlap = int((m & ticket.masks[name]).sum()) / int(m.sum())
            assert overlap < 0.8  # random positions overlap the ticket at about its density (64%), not fully


def test_inverted_keeps_the_smallest_alive_weights_at_the_tickets_counts(runs):
    run = runs / "ltr_seed0"
    ticket, previous = _masks(run, 2), _masks(run, 1)
    scores = load_file(run / "level_01" / "weights.safetensors")
    inverted = inverted_mask(ticket, previous, scores)
    assert _counts(inverted) == _counts(ticket)
    for name, m in inverted.masks.items():
        alive = previous.masks[name]
        assert not bool((m & ~alive).any())  # only weights alive before the level's pruning
        magnitude = scores[name].abs()
        assert magnitude[m].max() <= magnitude[alive & ~m].min()  # every kept one is no larger than any dropped one
    with pytest.raises(PracError, match="level 0 is the dense network"):
        run_sanity(run, level=0)


def test_reinit_keeps_the_mask_and_changes_every_survivor(runs, retrainer):
    run = runs / "ltr_seed0"
    ticket = _masks(run, 2)
    # a fresh initialization with the run's own seed is the run's init: the check draws from the same distribution
    init = load_file(run / "init.safetensors")
    assert all(torch.equal(retrainer.fresh_init(0)[k], init[k]) for k in init)
    start = retrainer.start_weights
    weights = reinitialized(start, ticket, retrainer.fresh_init(1_000_003))
    for name, value in weights.items():
        if name in ticket.masks:
            survivors = ticket.masks[name]
            assert bool((value[survivors] != start[name][survivors]).all())
        else:  # biases and the unpruned classifier keep their start values
            assert torch.equal(value, start[name])


def test_interpolation_is_exact_at_the_ends_and_the_barrier_of_one_model_is_zero():
    torch.manual_seed(0)
    net, other = TinyNet(), TinyNet()
    images, labels = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    net.train()
    net(images)  # non-trivial BN statistics
    a, b = {k: v.clone() for k, v in net.state_dict().items()}, other.state_dict()
    assert all(torch.equal(interpolate(a, b, 0.0)[k], a[k]) and torch.equal(interpolate(a, b, 1.0)[k], b[k]) for k in a)
    assert torch.allclose(interpolate(a, b, 0.5)["fc.weight"], (a["fc.weight"] + b["fc.weight"]) / 2)

    def error() -> float:
        net.eval()
        with torch.no_grad():
            return (net(images).argmax(1) != labels).float().mean().item()

    alphas = [i / 10 for i in range(11)]
    errors = error_along_path(net, a, a, alphas, error)
    assert barrier(errors) == 0.0 and len(set(errors)) == 1
    batches = [images[:32], images[32:]]
    errors_bn = error_along_path(net, a, a, alphas, error, lambda m: recompute_norm_statistics(m, batches))
    assert abs(barrier(errors_bn)) <= 1e-12
    # the recomputed statistics are the average over the batches of each batch's statistics
    with torch.no_grad():
        features = [net.conv(x) for x in batches]
    expected = torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0)
    assert torch.allclose(net.bn.running_mean, expected, atol=1e-6)
    assert net.bn.momentum == 0.1  # restored
    assert barrier([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)


def test_sanity_end_to_end_writes_the_table_with_a_verdict_per_check(runs):
    run = runs / "ltr_seed0"
    result = run_sanity(run, level=2, seeds=2)
    saved = json.loads((run / "sanity" / "level_02.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["variants"]) == {"ticket", "random", "shuffle", "reinit", "inverted"}
    level = json.loads((run / "level_02" / "metrics.json").read_text())
    # the ticket retrained with the run's own seed is the run's level 2: same recipe, schedule and start
    assert saved["variants"]["ticket"]["accuracy"][0] == level["test_acc"]
    assert saved["start_step"] == level["start_step"] == 21 and saved["total_steps"] == 42
    table = (run / "sanity" / "level_02.md").read_text()
    ticket = saved["variants"]["ticket"]["accuracy"]
    for name, check in saved["checks"].items():
        values = saved["variants"][name]["accuracy"]
        assert len(values) == 2
        margin = (ticket[0] + ticket[1]) / 2 - (values[0] + values[1]) / 2
        noise = max(abs(ticket[0] - ticket[1]), abs(values[0] - values[1])) / math.sqrt(2)  # sample std of two values
        assert check["margin"] == pytest.approx(margin) and check["noise"] == pytest.approx(noise)
        assert check["passed"] == (margin > noise)
        row = next(line for line in table.splitlines() if line.startswith(f"| {check['description']} |"))
        assert row.endswith("| pass |" if check["passed"] else "| fail |")
    assert result["checks"] == saved["checks"]


def test_sanity_cli_with_one_seed_says_the_noise_is_unknown(runs, capsys):
    run = runs / "ltr_seed0"
    assert main(["sanity", str(run), "--level", "1", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("noise unknown (1 seed)") == 4 and "Noise unknown with one seed" in out
    saved = json.loads((run / "sanity" / "level_01.json").read_text())
    assert all(c["passed"] is None and c["noise"] is None for c in saved["checks"].values())


def test_stability_from_rewind_and_init(runs, capsys):
    run = runs / "ltr_seed0"
    assert main(["stability", str(run), "--level", "2"]) == 0
    result = json.loads((run / "stability" / "level_02_rewind.json").read_text())
    assert result["alphas"] == [i / 10 for i in range(11)] and len(result["errors"]) == 11
    assert result["barrier"] == pytest.approx(max(result["errors"]) - (result["errors"][0] + result["errors"][-1]) / 2)
    level = json.loads((run / "level_02" / "metrics.json").read_text())
    assert result["errors"][0] == pytest.approx(1 - level["test_acc"])  # copy 1 uses the run's own data order
    assert result["start_step"] == 21
    assert (run / "stability" / "level_02_rewind.png").read_bytes()[:4] == b"\x89PNG"
    assert f"Barrier: {100 * result['barrier']:.2f} points" in capsys.readouterr().out
    assert main(["stability", str(run), "--level", "1", "--start", "init", "--points", "3", "--recompute-bn"]) == 0
    init = json.loads((run / "stability" / "level_01_init_bn.json").read_text())
    assert init["start_step"] == 0 and init["alphas"] == [0.0, 0.5, 1.0] and init["norm_layers"] == 0
    assert "no BatchNorm layers" in capsys.readouterr().out


def test_report_groups_seeds_and_matches_the_run_summaries(runs, tmp_path, capsys):
    paths = [str(runs / n) for n in ("ltr_seed0", "ltr_seed1", "random_seed0")]
    summaries = [json.loads((runs / n / "summary.json").read_text()) for n in ("ltr_seed0", "ltr_seed1", "random_seed0")]
    assert main(["report", *paths, "--output", str(tmp_path / "rep")]) == 0
    assert "| ltr | 2 | 64.00 | 2 |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    rows = {(r["strategy"], r["level"]): r for r in saved["rows"]}
    assert set(rows) == {("ltr", 0), ("ltr", 1), ("ltr", 2), ("ltr + random", 0), ("ltr + random", 1)}
    for level in range(3):
        a, b = (s["levels"][level] for s in summaries[:2])
        row = rows[("ltr", level)]
        mean = (a["test_acc"] + b["test_acc"]) / 2
        std = math.sqrt((a["test_acc"] - mean) ** 2 + (b["test_acc"] - mean) ** 2)  # n - 1 = 1
        assert row["runs"] == 2 and row["test_acc_mean"] == pytest.approx(mean) and row["test_acc_std"] == pytest.approx(std)
        assert row["weights_remaining_pct"] == pytest.approx(a["weights_remaining_pct"])
        steps = [sum(s["levels"][i]["optimizer_steps"] for i in range(level + 1)) for s in summaries[:2]]
        assert row["cumulative_steps_mean"] == pytest.approx(sum(steps) / 2)
    assert rows[("ltr", 2)]["cumulative_steps_mean"] == summaries[0]["totals"]["optimizer_steps"]
    single = rows[("ltr + random", 1)]
    assert single["runs"] == 1 and single["test_acc_std"] is None
    assert single["test_acc_mean"] == summaries[2]["levels"][1]["test_acc"]
    assert single["cumulative_steps_mean"] == summaries[2]["totals"]["optimizer_steps"]
    with open(tmp_path / "rep" / "report.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 5 and float(csv_rows[2]["test_acc_mean"]) == pytest.approx(rows[("ltr", 2)]["test_acc_mean"])
    assert (tmp_path / "rep" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ltr + random | 1 |" in (tmp_path / "rep" / "report.md").read_text()
    # default folder: report/ beside the runs
    _, text = write_comparison(paths)
    assert (runs / "report" / "report.md").is_file() and str(runs / "report") in text


def test_incomplete_or_old_run_directories_are_named(runs, tmp_path, capsys):
    good = runs / "ltr_seed0"

    def error(argv) -> str:
        assert main(argv) == 2
        message = capsys.readouterr().err
        assert message.startswith("prac: error: ") and message.count("\n") == 1
        return message

    assert "no recipe.yaml" in error(["sanity", str(tmp_path)])
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(good / "recipe.yaml", empty / "recipe.yaml")
    assert "no completed level" in error(["report", str(empty)])
    assert "level 7 of" in error(["stability", str(good), "--level", "7"])
    assert "level 0 is the dense network" in error(["sanity", str(good), "--level", "0"])
    no_rewind = tmp_path / "no_rewind"
    shutil.copytree(good, no_rewind)
    (no_rewind / "rewind.safetensors").unlink()
    assert "rewind.safetensors" in error(["stability", str(no_rewind)])
    no_mask = tmp_path / "no_mask"
    shutil.copytree(good, no_mask)
    (no_mask / "level_01" / "mask.safetensors").unlink()
    assert "level_01/mask.safetensors" in error(["sanity", str(no_mask), "--level", "2"])
    old = tmp_path / "old"
    shutil.copytree(good, old)
    metrics = json.loads((old / "level_01" / "metrics.json").read_text())
    del metrics["format_version"]
    (old / "level_01" / "metrics.json").write_text(json.dumps(metrics))
    message = error(["report", str(old), str(good)])
    assert "level_01/metrics.json" in message and "format_version" in message
    assert "--points 2" in error(["stability", str(good), "--points", "2"])
    assert "--seeds 0" in error(["sanity", str(good), "--seeds", "0"])


def test_full_data_training_of_a_full_data_run_reproduces_its_levels(runs, capsys):
    """With the run's own seed, an LTR level trained on the full data already is its ticket trained on the full data."""
    summary = json.loads((runs / "ltr_seed0" / "summary.json").read_text())["levels"]
    assert main(["retrain", str(runs / "ltr_seed0")]) == 0
    out = capsys.readouterr().out
    for level in (1, 2):
        saved = json.loads((runs / "ltr_seed0" / "full_data" / f"level_{level:02d}.json").read_text())
        assert saved["accuracy"] == [summary[level]["test_acc"]] == [saved["level_accuracy"]]
        assert saved["finding_steps"] == sum(m["optimizer_steps"] for m in summary[:level])
        assert f"| {level} | {summary[level]['weights_remaining_pct']:.2f} | {100 * summary[level]['test_acc']:.2f} |" in out


def test_full_data_training_of_a_subset_run_trains_the_found_mask_on_every_example(runs, monkeypatch):
    from prac_plugin.analysis import full_data

    run = runs / "random_seed0"
    level_1 = json.loads((run / "level_01" / "metrics.json").read_text())
    results = full_data.train_on_full_data(run, [1], seeds=2)
    (result,) = results
    assert result["seeds"] == [0, 1] and len(result["accuracy"]) == 2 and result["std"] is not None
    assert result["level_accuracy"] == level_1["test_acc"] and result["finding_steps"] == json.loads(
        (run / "level_00" / "metrics.json").read_text())["optimizer_steps"]
    # trained on the whole split: as many steps as a full-data level from the rewind point, twice what the 50% subset took
    assert result["training_steps"] == result["total_steps"] - result["start_step"] > level_1["optimizer_steps"]
    # a second call with the same seeds reads the file instead of training again
    monkeypatch.setattr(full_data, "Retrainer", lambda *a, **k: pytest.fail("trained again"))
    assert full_data.train_on_full_data(run, [1], seeds=2) == results


def test_full_data_training_refuses_what_it_cannot_train(runs, tmp_path, capsys):
    def error(argv) -> str:
        assert main(argv) == 2
        message = capsys.readouterr().err
        assert message.startswith("prac: error: ") and message.count("\n") == 1
        return message

    good = str(runs / "ltr_seed0")
    assert "level 0 is the dense network" in error(["retrain", good, "--level", "0"])
    assert "level 5 of" in error(["retrain", good, "--level", "1", "5"])
    assert "--seeds 0 must be at least 1" in error(["retrain", good, "--seeds", "0"])
    cts = tmp_path / "cts"
    shutil.copytree(runs / "ltr_seed0", cts)
    for name in ("recipe.yaml", ".recipe_started.yaml"):  # both: recipe.yaml alone edited is refused as such
        (cts / name).write_text((cts / name).read_text().replace("strategy: ltr", "strategy: cts"))
    assert "ticket.strategy 'cts'" in error(["retrain", str(cts)])


def test_report_adds_the_tickets_trained_on_the_full_data(runs, tmp_path):
    from prac_plugin.analysis.full_data import train_on_full_data

    (trained,) = train_on_full_data(runs / "random_seed0", [1], seeds=2)
    rows, text = write_comparison([str(runs / "ltr_seed0"), str(runs / "random_seed0")], str(tmp_path / "rep"))
    row = next(r for r in rows if r["strategy"] == "ltr + random" and r["level"] == 1)
    assert row["full_data_acc_mean"] == pytest.approx(sum(trained["accuracy"]) / 2)
    assert row["full_data_acc_std"] == pytest.approx(abs(trained["accuracy"][0] - trained["accuracy"][1]) / math.sqrt(2))
    assert row["full_data_steps_mean"] == trained["finding_steps"] + trained["training_steps"]
    assert row["full_data_wall_time_s_mean"] == trained["finding_wall_time_s"] + trained["training_wall_time_s"] > 0
    others = [r for r in rows if r is not row]
    assert all(r["full_data_acc_mean"] is None for r in others if r["strategy"] == "ltr + random")  # level 0: no ticket
    assert f"| ltr + random | 1 | {row['weights_remaining_pct']:.2f} | {100 * row['full_data_acc_mean']:.2f} ± " in text
