"""`prac quickstart`, the README's first command: both searches, PrAC's tickets on the full data, the comparison
and the steps saved (a short schedule here; CI runs the command itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prac_plugin.cli import main as prac_cli
from prac_plugin.cli.quickstart import quickstart
from prac_plugin.config.starter import QUICKSTART_RECIPE
from prac_plugin.rundir.folder import RunDirectory

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_compares_prac_tickets_with_full_data_ltr(tmp_path):
    lines = []
    rows = quickstart(tmp_path, levels=3, epochs=2, tickets=(2, 3), log=lines.append)
    assert [r["level"] for r in rows] == [2, 3]
    ltr = [RunDirectory(tmp_path / "ltr").level_metrics(level) for level in range(4)]
    prac = [RunDirectory(tmp_path / "prac").level_metrics(level) for level in range(4)]
    for row in rows:
        level = row["level"]
        assert row["ltr_steps"] == sum(m["optimizer_steps"] for m in ltr[: level + 1])
        # PrAC's cost: the levels that found the mask, on PrAC sets, plus the ticket's full-data training
        trained = (tmp_path / "prac" / "full_data" / f"level_{level:02d}.json").read_text()
        assert row["prac_steps"] == sum(m["optimizer_steps"] for m in prac[:level]) + yaml.safe_load(trained)["training_steps"]
        assert row["steps_saved_pct"] == pytest.approx(100 * (1 - row["prac_steps"] / row["ltr_steps"]))
        assert 0 < row["prac_steps"] < row["ltr_steps"] and 0 < row["prac_acc"] <= 1
    assert all(m["train_examples"] < ltr[0]["train_examples"] for m in prac[1:])  # PrAC levels trained on subsets
    # the control: random subsets of the PrAC sets' sizes, the same budget, so the same steps
    control = [RunDirectory(tmp_path / "random").level_metrics(level) for level in range(4)]
    assert [m["train_examples"] for m in control] == [m["train_examples"] for m in prac]
    assert [m["optimizer_steps"] for m in control] == [m["optimizer_steps"] for m in prac]
    assert all(row["random_steps"] == row["prac_steps"] and 0 < row["random_acc"] <= 1 for row in rows)
    assert (tmp_path / "report" / "report.png").is_file() and "ticket on the full data" in (tmp_path / "report" / "report.md").read_text()
    assert any("steps saved" in line for line in lines)


def test_the_recipe_file_is_the_quickstarts_full_data_run():
    assert yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text()) == QUICKSTART_RECIPE


def test_the_command_is_in_the_cli(monkeypatch, tmp_path):
    called = {}
    monkeypatch.setattr("prac_plugin.cli.quickstart.quickstart", lambda output: called.setdefault("output", output))
    assert prac_cli(["quickstart", "--output", str(tmp_path / "q")]) == 0 and called["output"] == str(tmp_path / "q")
