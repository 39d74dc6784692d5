"""The campaign's cells and ledger (benchmarks/campaign_cells.py, campaign_ledger.py, campaign_run.py) on tiny
hand-made data: which pending cells run next (budget, dependencies), a finished cell is skipped, a cell killed
mid-run leaves no entry, and the states no cell needs any more are dropped. No test here depends on the
machine's speed: the one with a deadline runs a process that cannot finish (it sleeps for minutes)."""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import campaign_cells  # noqa: E402
import campaign_run  # noqa: E402
from campaign_cells import Cell  # noqa: E402
from campaign_ledger import Ledger, cell_recipe, choose, concurrency, fingerprint, tidy  # noqa: E402


def cell(cell_id: str, epochs: float, depends=(), order=0) -> Cell:
    return Cell(cell_id, cell_id.split("-")[0], 0, "level", 0, tuple(depends), epochs, (order,))


def test_pending_cells_are_chosen_by_dependency_and_budget():
    a, b, big, blocked = cell("A", 10, order=0), cell("B", 10, ["A"], order=1), cell("C", 100, order=2), cell("D", 1, ["X"], order=3)
    small = cell("E", 5, order=4)
    cells = [a, b, big, blocked, small]
    cost = lambda c: c.epochs  # noqa: E731  (one second per epoch)
    # B waits for A, C does not fit 50 s, D waits for a cell that is not done: A and E, in priority order
    assert [c.id for c in choose(cells, set(), set(), 4, 50, cost)] == ["A", "E"]
    # A done: B is ready; A itself is not run again
    assert [c.id for c in choose(cells, {"A"}, set(), 4, 50, cost)] == ["B", "E"]
    # enough time: C too; slots cap the count, counting the cells already running
    assert [c.id for c in choose(cells, {"A"}, set(), 4, 500, cost)] == ["B", "C", "E"]
    assert [c.id for c in choose(cells, {"A"}, {"B"}, 2, 500, cost)] == ["C"]
    assert choose(cells, {"A"}, set(), 4, 4, cost) == []  # nothing fits 4 s


def test_open_chains_are_capped():
    """Each open chain keeps a ~2 MiB state in the ledger, which travels in a 64 MiB limit: new chains wait."""
    a0, a1 = Cell("E1-s0-L00", "E1", 0, "level", 0, (), 1, (0,)), Cell("E1-s0-L01", "E1", 0, "level", 1, ("E1-s0-L00",), 1, (1,))
    b0, c0 = Cell("E2-s0-L00", "E2", 0, "level", 0, (), 1, (2,)), Cell("E4-s0-L00", "E4", 0, "level", 0, (), 1, (3,))
    cells = [a0, a1, b0, c0]
    cost = lambda c: 1.0  # noqa: E731
    assert [c.id for c in choose(cells, {"E1-s0-L00"}, set(), 4, 100, cost, open_chains={"E1-s0"}, max_open=2)] == ["E1-s0-L01", "E2-s0-L00"]
    assert [c.id for c in choose(cells, {"E1-s0-L00"}, set(), 4, 100, cost, open_chains={"E1-s0", "E5-s0"}, max_open=2)] == ["E1-s0-L01"]
    assert len(choose(cells, {"E1-s0-L00"}, set(), 4, 100, cost)) == 3  # no cap


def test_concurrency_is_the_most_cells_that_each_still_fit():
    cells = [cell(f"C{i}", 100, order=i) for i in range(4)]
    slowdown = lambda k: 1 + 0.5 * (k - 1)  # noqa: E731
    cost = lambda c, k: c.epochs * slowdown(k)  # noqa: E731
    assert concurrency(cells, set(), set(), 4, 260, cost) == 4  # 100 x 2.5 = 250 s each
    assert concurrency(cells, set(), set(), 4, 210, cost) == 3
    assert concurrency(cells, set(), set(), 4, 120, cost) == 1
    assert concurrency(cells[:2], set(), set(), 4, 1000, cost) == 2  # no more cells than are ready


def test_every_gpu_cell_fits_eight_minutes_alone_at_the_slowest_measured_epoch():
    cells = campaign_cells.cells()
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids))
    for c in cells:
        if c.experiment in ("E6", "E6F"):
            continue  # ResNet-56's cost is an assumption (3x) that puts a level past 8 minutes: see campaign_cells
        seconds = campaign_cells.CELL_OVERHEAD_S + c.epochs * campaign_cells.SLOWEST_EPOCH_S
        assert seconds <= campaign_cells.CELL_LIMIT_S, (c.id, seconds)
    # the plan: E1-E5 at seeds 0, 1, 2 (every experiment at seed 0 first), E6 at seed 0
    assert {c.seed for c in cells if c.experiment in ("E1", "E2", "E3", "E4", "E5")} == {0, 1, 2}
    assert {c.seed for c in cells if c.experiment in ("E6", "E7")} == {0}
    assert max(i for i, c in enumerate(cells) if c.seed == 0) < min(i for i, c in enumerate(cells) if c.seed == 1)
    by_id = {c.id: c for c in cells}
    assert "E2-s0-L10" in by_id["E3-s0-L10"].depends and "E2-s0-L10" in by_id["E6-s0-L00"].depends  # E3, E6 wait for E2
    assert by_id["E2-s0-R08"].depends == ("E2-s0-L08",) and by_id["E1-s0-L10"].depends == ("E1-s0-L09",)
    assert [c.level for c in cells if c.chain == "E4-s0"] == [0, 1] and max(c.level for c in cells if c.chain == "E5-s0") == 7


def test_campaign_recipes_parse_and_share_one_schedule():
    from prac_plugin.config.recipes import parse_recipe

    recipes = {e.key: cell_recipe(Cell(f"{e.key}-s1-L00", e.key, 1, "level", 0, (), 1.0, (0,))) for e in campaign_cells.experiments()}
    for key, raw in recipes.items():
        if raw["data_selection"]["strategy"] == "index":
            raw = {**raw, "data_selection": {**raw["data_selection"], "path": "filled-in-by-the-cell.prac.safetensors"}}
        recipe = parse_recipe(raw)
        assert recipe.train.seed == 1 and recipe.train.batch_size == 128 and recipe.train.momentum == 0.9, key
        assert raw["train"] == recipes["E1"]["train"], key  # one schedule for all
    assert recipes["E2"]["data_selection"] == {"strategy": "prac", "preset": "reference"}
    assert recipes["E3"]["data_selection"]["strategy"] == "random" and recipes["E3"]["data_selection"]["seed"] == 1
    cts = recipes["E4"]["ticket"]
    assert cts["search_epochs"] == 20 and cts["search_batch_size"] == 512 and cts["batchnorm"] == "batch"
    assert abs(1 - cts["densities"][0] - (1 - 0.49 ** 7)) < 1e-4  # the sparsity E5's LTR reaches at level 7
    assert recipes["E5"]["ticket"]["fraction"] == 0.51 and recipes["E5"]["ticket"]["levels"] == 7
    assert recipes["E6"]["model"]["name"] == "cifar_resnet56" and recipes["E6"]["data_selection"]["strategy"] == "index"
    # machine paths do not change a fingerprint; the schedule does
    moved = json.loads(json.dumps(recipes["E3"]))
    moved["data"]["data_files"] = {"train": "/elsewhere/train.parquet"}
    moved["data_selection"]["sizes_from"] = "/elsewhere/prac"
    assert fingerprint(moved) == fingerprint(recipes["E3"])
    moved["train"]["epochs"] = 60
    assert fingerprint(moved) != fingerprint(recipes["E3"])


def _entry(c: Cell, scale=None, **extra) -> dict:
    return {"cell": c.id, "experiment": c.experiment, "seed": c.seed, "kind": c.kind, "level": c.level,
            "fingerprint": fingerprint(cell_recipe(c, scale)), "figures": {"test_acc": 0.5}, **extra}


def test_a_finished_cell_is_skipped_and_a_stale_one_is_not(tmp_path):
    cells = campaign_cells.cells()
    first, second = cells[0], cells[1]
    ledger = Ledger(tmp_path / "cells")
    ledger.write(first.id, _entry(first), {})
    stale = _entry(second)
    stale["fingerprint"] = "0" * 16  # run with another schedule
    ledger.write(second.id, stale, {})
    done = ledger.done(cells)
    assert done == {first.id}
    picked = choose(cells, done, set(), 2, 10_000, lambda c: 1.0)
    assert first.id not in {c.id for c in picked} and second.id in {c.id for c in picked}


def test_a_half_written_entry_is_no_entry(tmp_path):
    ledger = Ledger(tmp_path / "cells")
    c = campaign_cells.cells()[0]
    with pytest.raises(FileNotFoundError):
        ledger.write(c.id, _entry(c), {"state.tar.gz": tmp_path / "missing.tar.gz"})
    assert ledger.entries() == {} and ledger.done(campaign_cells.cells()) == set()
    ledger.clear_partials()
    assert list((tmp_path / "cells").iterdir()) == []


def _state(path: Path, names: list[str]) -> Path:
    source = path.parent / f"src-{path.parent.name}"
    with tarfile.open(path, "w:gz") as archive:
        for name in names:
            file = source / name
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(name)
            archive.add(file, arcname=name)
    return path


def test_tidy_drops_superseded_states_and_slims_a_finished_chain(tmp_path):
    scale = campaign_cells.DRY_SCALE
    cells = campaign_cells.cells(scale)
    ledger = Ledger(tmp_path / "cells")
    chain = [c for c in cells if c.chain == "E2-s0"]  # L00, L01, L02, R02
    levels = [c for c in chain if c.kind == "level"]
    for c in levels[:2]:
        folder = ledger.write(c.id, _entry(c, scale), {})
        _state(folder / "state.tar.gz", ["recipe.yaml", f"level_{c.level:02d}/mask.safetensors", "rewind.safetensors"])
    assert tidy(ledger, cells, scale) == [f"removed E2-s0-L00/state.tar.gz (superseded by E2-s0-L01)"]
    assert not (ledger.folder("E2-s0-L00") / "state.tar.gz").exists() and (ledger.folder("E2-s0-L01") / "state.tar.gz").exists()
    last = levels[-1]
    folder = ledger.write(last.id, _entry(last, scale), {})
    names = ["recipe.yaml", "level_01/mask.safetensors", "level_02/mask.safetensors", "level_02/weights.safetensors",
             "rewind.safetensors", "prac/round_01.prac.safetensors", "prac_set.prac.safetensors"]
    _state(folder / "state.tar.gz", names)
    tidy(ledger, cells, scale)
    assert (folder / "state.tar.gz").exists()  # its retrain cell (R02) still needs the weights of the rewind point
    retrain = next(c for c in chain if c.kind == "retrain")
    ledger.write(retrain.id, _entry(retrain, scale), {})
    _state(ledger.rewind("E2-s0"), ["rewind.safetensors"])
    assert any("slimmed" in line for line in tidy(ledger, cells, scale))
    assert not ledger.rewind("E2-s0").exists()  # the chain and its retrain are done: nothing rewinds any more
    with tarfile.open(folder / "artifacts.tar.gz") as archive:
        kept = set(archive.getnames())
    assert kept == {"recipe.yaml", "level_02/mask.safetensors", "prac/round_01.prac.safetensors", "prac_set.prac.safetensors"}
    assert not (folder / "state.tar.gz").exists()
    # a stale entry (another recipe) keeps no state: nothing will continue from it
    stale_cell = next(c for c in cells if c.chain == "E1-s0")
    stale = ledger.write(stale_cell.id, dict(_entry(stale_cell, scale), fingerprint="0" * 16), {})
    _state(stale / "state.tar.gz", ["recipe.yaml"])
    assert any("stale" in line for line in tidy(ledger, cells, scale)) and not (stale / "state.tar.gz").exists()
    # E3 reads E2's PrAC sizes from the artifacts that stay
    assert ledger.latest_state("E2-s0", ledger.done(cells, scale), artifacts=True) == folder / "artifacts.tar.gz"


def test_a_state_holds_nothing_of_a_level_after_its_own(tmp_path):
    run = tmp_path / "run"
    names = ["recipe.yaml", "rewind.safetensors", "rewind.json", "init.safetensors", "level_00/mask.safetensors", "level_00/weights.safetensors",
             "level_00/metrics.json", "level_01/mask.safetensors", "level_01/weights.safetensors", "level_01/metrics.json",
             "level_02/mask.safetensors", "prac/round_00.prac.safetensors", "prac/round_01.prac.safetensors",
             "prac/dense_predictions.safetensors", "checkpoints/x/meta.json", "summary.json"]
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    (run / "recipe.yaml").write_text("ticket: {strategy: ltr, levels: 3}\n")
    campaign_run._pack_state(run, 1, tmp_path / "state.tar.gz")
    with tarfile.open(tmp_path / "state.tar.gz") as archive:
        kept = set(archive.getnames())
    assert kept == {"recipe.yaml", "level_00/mask.safetensors", "level_00/metrics.json",
                    "level_01/mask.safetensors", "level_01/weights.safetensors", "level_01/metrics.json",
                    "prac/round_00.prac.safetensors", "prac/round_01.prac.safetensors", "prac/dense_predictions.safetensors"}
    campaign_run._pack_rewind(run, tmp_path / "rewind.tar.gz")  # kept once per chain, not in every state
    with tarfile.open(tmp_path / "rewind.tar.gz") as archive:
        assert set(archive.getnames()) == {"rewind.safetensors", "rewind.json"}


def test_a_cell_killed_at_the_deadline_leaves_no_entry(tmp_path, monkeypatch):
    """The cell's process sleeps for minutes; a 3-second stage deadline kills it, and the ledger stays empty."""
    import gpu_campaign

    args = argparse.Namespace(budget=30.0, output=str(tmp_path / "out"), workdir=str(tmp_path / "work"))
    c = gpu_campaign.Campaign(args, gpu_campaign.dry_plan(None))
    c.final_reserve_s = 27.0  # deadline 3 s after the start
    c.record["given_timing"] = {"epoch_seconds": 0.01, "slowdown": 1.0}  # so that the cell is expected to fit
    monkeypatch.setattr(campaign_run, "CELL_OVERHEAD_S", 0.0)
    real_start = c.start
    monkeypatch.setattr(c, "start", lambda name, _args: real_start(name, ["-c", "import time; time.sleep(600)"]))
    ledger_path = tmp_path / "cells"
    campaign_run.stage_cells(c, campaign_cells.DRY_SCALE, None, ledger_path, 1, only=["E1-s0-L00"], environment={})
    stage = c.record["stages"]["cells"]
    assert stage["cells"]["E1-s0-L00"]["outcome"].startswith("killed at the stage deadline")
    assert Ledger(ledger_path).entries() == {} and not (tmp_path / "out" / "cells.tar.gz").exists()
    assert stage["new"] == [] and stage["pending"] == 1
    assert stage["ended_at_s"] < 30  # stopped at its deadline (3 s), not at the process's end (600 s)


def test_the_next_gpu_call_runs_cells():
    """The lease's command (budget 490, preflight first, no throughput stage): at the slowest measured epoch, with
    the empty ledger, some cells fit what the preflight leaves, and they are seed 0's first levels."""
    import gpu_campaign

    cells = campaign_cells.cells()
    clock = campaign_run.Timing(campaign_cells.SLOWEST_EPOCH_S, 2.3, "test")
    left = 490 - gpu_campaign.FINAL_RESERVE_S - gpu_campaign.LIMITS["preflight"] * 490
    slots = concurrency(cells, set(), set(), 4, left, clock.cost_s, open_chains=set(), max_open=campaign_run.MAX_OPEN_CHAINS)
    picked = choose(cells, set(), set(), slots, left, lambda c: clock.cost_s(c, slots), open_chains=set(),
                    max_open=campaign_run.MAX_OPEN_CHAINS)
    assert slots >= 2 and [c.id for c in picked] == ["E1-s0-L00", "E2-s0-L00", "E4-s0-L00"][:slots]
    assert all(clock.cost_s(c, slots) <= left for c in picked)
