"""The campaign's table (benchmarks/campaign_table.py) on hand-made ledger entries: means, sample standard
deviations, seed counts, and each claim's verdict computed from the numbers, "not enough seeds yet" included."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import campaign_table  # noqa: E402
from campaign_table import FAILS, HOLDS, WAIT, Figures, claims, fmt_acc, render, replace_section  # noqa: E402


def level(experiment: str, seed: int, lvl: int, acc: float, steps: int = 1000, wall: float = 100.0, sparsity: float = 0.0) -> dict:
    return {"experiment": experiment, "seed": seed, "kind": "level", "level": lvl, "cells_side_by_side": 2,
            "figures": {"test_acc": acc, "optimizer_steps": steps, "wall_time_s": wall, "sparsity_pct": sparsity, "train_examples": 45000}}


def retrain(experiment: str, seed: int, lvl: int, acc: float) -> dict:
    return {"experiment": experiment, "seed": seed, "kind": "retrain", "level": lvl, "figures": {"mean": acc, "training_steps": 13000}}


def chain(experiment: str, seed: int, levels: int, final_acc: float, steps: int, wall: float = 100.0) -> list[dict]:
    return [level(experiment, seed, l, final_acc if l == levels else 0.9, steps, wall) for l in range(levels + 1)]


def verdicts(entries: list[dict]) -> dict[str, str]:
    names = ("match", "random_4", "random_8", "random_10", "cts", "reuse")
    return dict(zip(names, (v for _, v in claims(Figures(entries)))))


def test_mean_std_and_n():
    assert fmt_acc([0.90, 0.91, 0.92]) == "91.00 ± 1.00 (n=3)"  # sample standard deviation
    assert fmt_acc([0.875]) == "87.50 (n=1)"
    assert fmt_acc([]) == "-"
    f = Figures(chain("E1", 0, 2, 0.80, 100) + chain("E1", 1, 2, 0.82, 100) + [level("E1", 2, 0, 0.9)])
    assert f.cumulative("E1", 2, "optimizer_steps") == {0: 300.0, 1: 300.0}  # seed 2 lacks levels 1 and 2
    assert sorted(f.acc("E1", 2).values()) == [0.80, 0.82]
    table = render(chain("E1", 0, 2, 0.80, 100) + chain("E1", 1, 2, 0.82, 100))
    assert "| 2 | 0.00 | 81.00 ± 1.41 (n=2) | 300 | 300 |" in table


def test_verdicts_need_every_planned_seed():
    # two seeds of everything: every claim waits, whatever the numbers say
    entries = []
    for seed in (0, 1):
        entries += chain("E1", seed, 10, 0.90, 13000) + chain("E2", seed, 10, 0.60, 2000) + [retrain("E2", seed, 10, 0.90)]
    assert verdicts(entries)["match"] == WAIT
    text = next(t for t, _ in claims(Figures(entries)) if "within 0.5 points of full-data LTR" in t)
    assert "2 of 3 seeds" in text


def test_verdicts_from_the_numbers():
    entries = []
    for seed, (ltr, prac, rand) in enumerate([(0.900, 0.898, 0.880), (0.902, 0.899, 0.890), (0.904, 0.900, 0.886)]):
        entries += chain("E1", seed, 10, ltr, 13000)
        entries += chain("E2", seed, 10, 0.5, 2000)  # 11 x 2000 against 11 x 13000: 84.6% fewer steps
        entries += chain("E3", seed, 10, 0.5, 2000)
        for lvl in (4, 8, 10):
            entries += [retrain("E2", seed, lvl, prac), retrain("E3", seed, lvl, rand if lvl != 8 else prac + 0.001)]
        entries += chain("E4", seed, 1, 0.70, 5000, wall=60.0) + chain("E5", seed, 7, 0.68, 13000, wall=120.0)
    v = verdicts(entries)
    assert v["match"] == HOLDS  # -0.30 points, 84.6% fewer steps
    assert v["random_10"] == HOLDS and v["random_4"] == HOLDS  # +1.37 points
    assert v["random_8"] == FAILS  # random 0.1 points above PrAC
    assert v["cts"] == HOLDS  # 70% vs 68%, 120 s vs 960 s: exactly 1/8
    assert v["reuse"] == WAIT
    text = claims(Figures(entries))[0][0]
    assert "-0.30 points" in text and "84.6% fewer steps" in text
    # PrAC 0.6 points below LTR: no longer a match; CTS slower than 1/8: does not hold
    worse = [e for e in entries if not (e["kind"] == "retrain" and e["experiment"] == "E2" and e["level"] == 10)]
    worse += [retrain("E2", s, 10, 0.896) for s in range(3)]
    worse = [dict(e, figures={**e["figures"], "wall_time_s": 61.0}) if e["experiment"] == "E4" else e for e in worse]
    v = verdicts(worse)
    assert v["match"] == FAILS and v["cts"] == FAILS


def test_cross_architecture_claim_needs_one_seed():
    entries = chain("E6", 0, 2, 0.85, 1000) + chain("E6F", 0, 2, 0.853, 1000)
    assert verdicts(entries)["reuse"] == HOLDS
    assert verdicts(chain("E6", 0, 2, 0.84, 1000) + chain("E6F", 0, 2, 0.85, 1000))["reuse"] == FAILS


def test_section_is_replaced_between_its_markers():
    empty = render([])
    assert "not enough seeds yet" in empty and "No cell has run yet" in empty
    text = "# Benchmark results\n\nintro\n\n## Older section\n\nbody\n"
    once = replace_section(text, empty)
    assert once.index(campaign_table.START) < once.index("## Older section")
    again = replace_section(once, render(chain("E1", 0, 1, 0.8, 10)))
    assert again.count(campaign_table.START) == 1 and "No cell has run yet" not in again and "## Older section" in again


def test_timm_cell_passes_only_with_zero_pruned_weights():
    ok = {"experiment": "E7", "seed": 0, "kind": "timm", "level": 0,
          "figures": {"passed": True, "rewind_saved": True, "checkpoints": 3, "pruned_weights": 54052, "epochs": 4,
                      "pruned_nonzero": {"last.pth.tar": 0}, "round0": {"eval_top1": 61.2}, "round1": {"eval_top1": 60.1}}}
    assert "**passed**" in render([ok]) and "0 of 54,052 pruned weights" in render([ok])
    bad = dict(ok, figures={**ok["figures"], "passed": False, "pruned_nonzero": {"last.pth.tar": 7}})
    assert "**failed**" in render([bad]) and "7 of 54,052" in render([bad])
    assert "Not run yet." in render([])
