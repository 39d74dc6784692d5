"""PrAC end to end on digits: per-round sets, step accounting, reuse across architectures, random baseline."""

import json
import math

import pytest
import yaml

import prac_plugin
from prac_plugin import PracError
from prac_plugin.cli import main
from prac_plugin.config.schema import from_dict
from prac_plugin.data.sources import load_data
from prac_plugin.config.recipes import DataSection
from prac_plugin.index_files.format import PracIndex
from prac_plugin.index_files.format import dataset_signature

from conftest import quick_recipe, undeclared_files

PRAC = {"strategy": "prac"}


def level_metrics(run, level):
    return json.loads((run / f"level_{level:02d}" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def digits_bundle():
    return load_data(from_dict(DataSection, quick_recipe()["data"], "data"))


@pytest.fixture(scope="module")
def prac_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prac") / "run"
    prac_plugin.run(quick_recipe(data_selection=PRAC, train={"epochs": 4}), str(out))
    return out


def test_per_round_sets_are_subsets_and_feed_the_next_round(prac_run, digits_bundle):
    n = len(digits_bundle.train)
    for level in range(3):
        index = PracIndex.load(prac_run / "prac" / f"round_{level:02d}.prac.safetensors")
        index.check_dataset(dataset_signature(digits_bundle))
        positions = index.positions_in(digits_bundle.train.row_ids)  # raises unless every row is a training row
        assert 0 < len(index) < n and positions.unique().numel() == len(index)
        metrics = level_metrics(prac_run, level)
        assert metrics["prac_set_size"] == len(index)
        assert int(index.statistics["cet"].sum()) == metrics["cet_count"]
        assert int(index.statistics["prune_disagreement"].sum()) == metrics["cep_count"]
        assert bool((index.statistics["cet"] | index.statistics["prune_disagreement"]).all())  # the union, nothing else
        next_level = prac_run / f"level_{level + 1:02d}" / "metrics.json"
        if next_level.exists():
            assert json.loads(next_level.read_text())["train_examples"] == len(index)
    assert level_metrics(prac_run, 0)["cep_count"] == 0 and level_metrics(prac_run, 0)["train_examples"] == n
    final = PracIndex.load(prac_run / "prac_set.prac.safetensors")
    assert final.rows.tolist() == PracIndex.load(prac_run / "prac" / "round_02.prac.safetensors").rows.tolist()
    assert undeclared_files(prac_run) == []  # PrAC's sets are the files its declarations name


def test_step_accounting_adds_up(prac_run, digits_bundle):
    n, batch, epochs = len(digits_bundle.train), 64, 4
    full_total = math.ceil(n / batch) * epochs
    rewind = json.loads((prac_run / "rewind.json").read_text())["step"]
    summary = json.loads((prac_run / "summary.json").read_text())
    steps = full = 0
    for level in range(3):
        m = level_metrics(prac_run, level)
        total = math.ceil(m["train_examples"] / batch) * epochs  # linear budget: the same epochs over the set
        start = 0 if level == 0 else round(rewind * total / full_total)
        assert (m["total_steps"], m["start_step"], m["optimizer_steps"]) == (total, start, total - start)
        assert m["full_data_steps"] == (full_total if level == 0 else full_total - rewind)
        assert m["selection_forward_passes"] == n
        steps += m["optimizer_steps"]
        full += m["full_data_steps"]
    assert summary["totals"]["optimizer_steps"] == steps and summary["totals"]["full_data_steps"] == full
    assert summary["totals"]["savings"] == pytest.approx(1 - steps / full)
    assert "% saved" in (prac_run / "summary.md").read_text()


def test_random_baseline_takes_the_prac_run_sizes(prac_run, tmp_path):
    out = tmp_path / "random"
    prac_plugin.run(quick_recipe(data_selection={"strategy": "random", "sizes_from": str(prac_run)}, train={"epochs": 4}), str(out))
    for level in range(3):
        assert level_metrics(out, level)["train_examples"] == level_metrics(prac_run, level)["train_examples"]


def test_index_file_reused_by_another_architecture(prac_run, tmp_path):
    """A set selected with LeNet-300-100 trains cifar_resnet20 on exactly its rows, at every level."""
    index_path = str(prac_run / "prac_set.prac.safetensors")
    size = len(PracIndex.load(index_path))
    out = tmp_path / "r20"
    recipe = quick_recipe(model={"name": "cifar_resnet20", "kwargs": {}}, ticket={"levels": 1, "ignore": ["fc", "conv1"]},
                          data_selection={"strategy": "index", "path": index_path}, train={"epochs": 2})
    prac_plugin.run(recipe, str(out))
    for level in range(2):
        m = level_metrics(out, level)
        assert m["train_examples"] == size and m["selected_examples"] == size
    assert level_metrics(out, 0)["examples_seen"] == 2 * size


def test_index_file_for_another_dataset_is_refused(prac_run, tmp_path):
    import datasets
    import numpy as np
    from PIL import Image

    images = [Image.fromarray(np.full((8, 8), i, dtype=np.uint8)) for i in range(30)]
    datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(30)]}).to_parquet(str(tmp_path / "other.parquet"))
    recipe = quick_recipe(data={"path": "parquet", "data_files": str(tmp_path / "other.parquet")},
                          data_selection={"strategy": "index", "path": str(prac_run / "prac_set.prac.safetensors")})
    with pytest.raises(PracError, match=r"does not match the dataset: num_rows \(row count\) is 1438 in the file, 30 for parquet"):
        prac_plugin.run(recipe, str(tmp_path / "out"))


@pytest.mark.parametrize(
    "selection, message",
    [
        ({"strategy": "prac", "forgetting_threshold": -1}, "forgetting_threshold = -1 must be 0 or more"),
        ({"strategy": "index"}, "data_selection.path is required"),
        ({"strategy": "index", "path": "nowhere.prac.safetensors"}, "index file 'nowhere.prac.safetensors' does not exist"),
        ({"strategy": "random", "sizes_from": "runs/none"}, "sizes_from 'runs/none' is not a PrAC run directory"),
        ({"strategy": "prac", "criteria": "cet", "forgetting_threshold": 1000}, r"the PrAC set of round \d is empty .*lower data_selection.forgetting_threshold"),
    ],
)
def test_prac_bad_input(tmp_path, selection, message):
    with pytest.raises(PracError, match=message):
        prac_plugin.run(quick_recipe(data_selection=selection, train={"epochs": 8}, ticket={"levels": 1}), str(tmp_path / "out"))


def test_cli_select_inspect_compare(tmp_path, capsys, prac_run):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(quick_recipe(data_selection={**PRAC, "select_rounds": 1}, train={"epochs": 4})))
    assert main(["select", str(recipe), "--output", str(tmp_path / "sel")]) == 0
    out = capsys.readouterr().out
    assert f"PrAC index file: {tmp_path / 'sel'}/prac_set.prac.safetensors" in out
    assert (tmp_path / "sel" / "level_01").is_dir() and not (tmp_path / "sel" / "level_02").exists()
    selected = PracIndex.load(tmp_path / "sel" / "prac_set.prac.safetensors")
    assert f"size: {len(selected)} ({100 * len(selected) / 1438:.1f}% of 1438 rows)" in out
    assert main(["index", "inspect", str(prac_run / "prac_set.prac.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "model: lenet_300_100" in out and "class balance: " in out and "labels_sha256: " in out
    # the same recipe and seed: the select run's round-1 set equals the full run's round-1 set
    assert main(["index", "compare", str(prac_run / "prac" / "round_01.prac.safetensors"), str(tmp_path / "sel" / "prac_set.prac.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "only A: 0, only B: 0, Jaccard: 1.0000" in out and "| class | A | B | both | B - A |" in out
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(quick_recipe()))
    assert main(["select", str(full), "--output", str(tmp_path / "x")]) == 2
    assert "needs data_selection.strategy: prac" in capsys.readouterr().err
