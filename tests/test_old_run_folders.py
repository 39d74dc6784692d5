"""Run folders written before a recipe key existed: a key added since reads as the behaviour before it, so such a
folder resumes when that is what the recipe asks for, and is refused, naming the key, when it is not."""

import pytest
import yaml

import prac_plugin
from prac_plugin import PracError
from prac_plugin.rundir.folder import RECIPE_FILE, RECIPE_RECORD

from conftest import quick_recipe


def as_written_before(folder, section: str, *keys: str) -> None:
    """Remove keys from the folder's recipe and its record, as an older version of the package wrote them."""
    for name in (RECIPE_FILE, RECIPE_RECORD):
        recipe = yaml.safe_load((folder / name).read_text())
        for key in keys:
            recipe[section].pop(key)
        (folder / name).write_text(yaml.safe_dump(recipe, sort_keys=False))


def test_an_old_ltr_folder_continues_and_execution_keys_are_not_compared(tmp_path):
    raw = quick_recipe(train={"epochs": 2})
    raw["ticket"]["levels"] = 1
    prac_plugin.run(raw, str(tmp_path / "run"))
    as_written_before(tmp_path / "run", "ticket", "min_per_layer")
    as_written_before(tmp_path / "run", "train", "cuda_graphs")
    raw["train"]["cuda_graphs"] = "off"  # how steps run, not what they compute
    rows = prac_plugin.run(raw, str(tmp_path / "run"))
    assert [r["level"] for r in rows] == [0, 1]


def test_an_old_cts_folder_searched_with_running_statistics_is_not_resumed_with_batch_statistics(tmp_path):
    raw = quick_recipe(train={"epochs": 2})
    raw["ticket"] = {"strategy": "cts", "densities": [0.1], "ignore": ["fc"], "rewind": "1ep", "search_steps": 3}
    prac_plugin.run(raw, str(tmp_path / "cts"))
    as_written_before(tmp_path / "cts", "ticket", "batchnorm")  # the run as the old default searched it
    with pytest.raises(PracError, match=r"holds a different run \(ticket.batchnorm: 'running' there, 'batch' here\)"):
        prac_plugin.run(raw, str(tmp_path / "cts"))
    rows = prac_plugin.run(dict(raw, ticket=dict(raw["ticket"], batchnorm="running")), str(tmp_path / "cts"))
    assert [r["level"] for r in rows] == [0, 1]  # asked for what it ran with: the folder is the same run
