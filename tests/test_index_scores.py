"""`prac index from-scores`: published per-example scores (C-scores as numpy.savez, EL2N/forgetting tables as CSV)
turned into index files that work wherever one does (issue 17, part 4). The files are written here in those formats."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from timm.data import create_dataset

import prac_plugin
import prac_plugin.timm
from prac_plugin.cli import main as prac_cli
from prac_plugin.data.sources import load_data, split_identity
from prac_plugin.config.recipes import DataSection
from prac_plugin.index_files.format import PracIndex, dataset_signature
from prac_plugin.index_files.scores import keep, parse_rule

from conftest import quick_recipe


@pytest.fixture(scope="module")
def digits():
    signature, labels, _ = split_identity(DataSection(path="builtin:digits"))
    scores = np.random.default_rng(0).random(len(labels))
    return {"labels": labels, "scores": scores, "signature": signature}


def from_scores(tmp_path, scores_file, *extra, dataset="builtin:digits", keep_rule="top:30%", name="set.prac.safetensors"):
    out = tmp_path / name
    code = prac_cli(["index", "from-scores", str(scores_file), "--dataset", dataset, "--keep", keep_rule, "-o", str(out), *extra])
    return code, out


def test_c_scores_file_by_position_becomes_an_index_file_prac_trains_on(digits, tmp_path):
    np.savez(tmp_path / "cscores.npz", labels=digits["labels"].numpy(), scores=digits["scores"])
    code, out = from_scores(tmp_path, tmp_path / "cscores.npz")
    assert code == 0
    index = PracIndex.load(out)
    expected = np.sort(np.argsort(-digits["scores"], kind="stable")[: round(0.3 * len(digits["scores"]))])
    assert index.rows.tolist() == expected.tolist()  # the 30% highest scores
    assert torch.equal(index.statistics["score"], torch.tensor(digits["scores"][expected], dtype=torch.float32))
    assert torch.equal(index.statistics["labels"], digits["labels"][index.rows])
    # the same signature prac computes for the split: the file is accepted by a run on that data
    assert {k: index.metadata[k] for k in digits["signature"]} == dataset_signature(load_data(DataSection(path="builtin:digits")))
    assert index.metadata["labels_checked"] == "True" and index.metadata["matched_by"] == "position"
    recipe = quick_recipe(data={"val_fraction": 0}, ticket={"levels": 0}, data_selection={"strategy": "index", "path": str(out)})
    rows = prac_plugin.run(recipe, str(tmp_path / "run"))
    assert rows[0]["train_examples"] == len(index)


def test_a_csv_table_matched_by_id_column_selects_the_same_rows(digits, tmp_path):
    np.savez(tmp_path / "cscores.npz", labels=digits["labels"].numpy(), scores=digits["scores"])
    order = np.random.default_rng(1).permutation(len(digits["scores"]))  # the table lists the examples shuffled
    with (tmp_path / "el2n.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["example_id", "label", "el2n"])
        writer.writerows([int(i), int(digits["labels"][i]), float(digits["scores"][i])] for i in order)
    _, by_position = from_scores(tmp_path, tmp_path / "cscores.npz", name="a.prac.safetensors", keep_rule="bottom:200")
    code, by_id = from_scores(tmp_path, tmp_path / "el2n.csv", "--score-key", "el2n", "--label-key", "label", "--id-key", "example_id",
                              name="b.prac.safetensors", keep_rule="bottom:200")
    assert code == 0
    a, b = PracIndex.load(by_position), PracIndex.load(by_id)
    assert len(a) == 200 and torch.equal(a.rows, b.rows) and b.metadata["matched_by"] == "id column"


def test_it_compares_with_a_prac_set_and_restricts_timm_s_script(digits, tiny_hfds, tmp_path, capsys):
    prac_plugin.run(quick_recipe(ticket={"levels": 1}, data_selection={"strategy": "prac"}), str(tmp_path / "prac"))
    np.save(tmp_path / "forgetting.npy", digits["scores"])
    _, out = from_scores(tmp_path, tmp_path / "forgetting.npy", keep_rule="above:0.5")
    assert prac_cli(["index", "compare", str(out), str(tmp_path / "prac" / "prac_set.prac.safetensors")]) == 0
    shown = capsys.readouterr().out
    assert "Jaccard" in shown and "warning" not in shown  # the same dataset, by its hashes
    # timm's script (the hook's --prac-index) on a parquet dataset: the kept rows are the rows trained
    scores = np.linspace(0, 1, len(tiny_hfds["labels"]))
    with (tmp_path / "tiny.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["score", "labels"], *[[s, int(l)] for s, l in zip(scores, tiny_hfds["labels"])]])
    code, tiny = from_scores(tmp_path, tmp_path / "tiny.csv", "--score-key", "score", dataset=str(tiny_hfds["path"]), keep_rule="top:64",
                             name="t.prac.safetensors")
    assert code == 0
    hook = prac_plugin.timm.TimmHook(torch.nn.Linear(1, 1), index=str(tiny))
    dataset = create_dataset(f"hfds/{tiny_hfds['path']}", root=str(tiny_hfds["cache"]), split="train")
    wrapped, _, _ = hook.wrap(dataset)
    assert len(wrapped) == 64 and [int(wrapped[i][1][1]) for i in range(64)] == list(range(192, 256))


@pytest.mark.parametrize("case,message", [
    ("label mismatch", r"the label of row 7 is \d in the file, \d in builtin:digits split train: another order or dataset"),
    ("wrong length", r"scores 1000 examples, builtin:digits split train has 1438 rows"),
    ("nan score", r"the score of entry 3 is nan"),
    ("missing array", r"has no array 'scores'; arrays: labels, cscore"),
    ("id out of range", r"id 5000 is outside the split's rows 0..1437"),
    ("bad rule", r"--keep 'middle:3' should be"),
])
def test_bad_scores_files_are_one_line_and_write_nothing(digits, tmp_path, capsys, case, message):
    labels, scores = digits["labels"].numpy().copy(), digits["scores"].copy()
    arrays, extra, rule = {"labels": labels, "scores": scores}, [], "top:10%"
    if case == "label mismatch":
        labels[7] = (labels[7] + 1) % 10
    elif case == "wrong length":
        arrays = {"labels": labels[:1000], "scores": scores[:1000]}
    elif case == "nan score":
        scores[3] = np.nan
    elif case == "missing array":
        arrays = {"labels": labels, "cscore": scores}
    elif case == "id out of range":
        ids = np.arange(len(scores))
        ids[0] = 5000
        arrays, extra = {"labels": labels, "scores": scores, "row": ids}, ["--id-key", "row"]
    else:
        rule = "middle:3"
    np.savez(tmp_path / "s.npz", **arrays)
    code, out = from_scores(tmp_path, tmp_path / "s.npz", *extra, keep_rule=rule)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("prac: error:") and re.search(message, err), err
    assert not out.exists()


def test_keep_rules():
    values = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.9])
    assert keep(values, "top:2").tolist() == [2, 4] and keep(values, "bottom:40%").tolist() == [1, 3]
    assert keep(values, "above:0.4").tolist() == [0, 2, 4] and keep(values, "below:0.3").tolist() == [1]
    assert keep(values, "top:1").tolist() == [2]  # a tie at the edge goes to the lower position
    for bad in ("top:0", "top:150%", "top:2.5", "above:10%", "all", "top:"):
        with pytest.raises(prac_plugin.PracError, match="--keep"):
            parse_rule(bad)
    with pytest.raises(prac_plugin.PracError, match="asks for 9 examples; the file scores 5"):
        keep(values, "top:9")


def test_class_names_travel_as_json(digits, tmp_path):
    np.savez(tmp_path / "c.npz", labels=digits["labels"].numpy(), scores=digits["scores"])
    _, out = from_scores(tmp_path, tmp_path / "c.npz")
    assert json.loads(PracIndex.load(out).metadata["class_names"]) == [str(i) for i in range(10)]
