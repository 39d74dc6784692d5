"""`prac export RUN --format timm-hub`: a ticket as a timm Hub model folder that timm itself loads, offline, with the
same accuracy and exactly the same zeros; `--push` against a stand-in for huggingface_hub's HfApi (issue 26). These
machines have no network: the real upload is the one part not exercised here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from timm.data import create_transform, resolve_data_config

import prac_plugin
from prac_plugin import TicketMask
from prac_plugin.cli import main as prac_cli
from prac_plugin.data.builtin import digits
from prac_plugin.integrations.timm.hub_export import FILES, export_hub, push

from conftest import quick_recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    prac_plugin.run(quick_recipe(ticket={"levels": 1, "rewind": "0it"}, train={"epochs": 1}), str(out))
    return out


def test_the_export_loads_in_timm_with_the_same_accuracy_and_the_same_zeros(run, tmp_path, capsys):
    assert prac_cli(["export", str(run), "--level", "1", "--format", "timm-hub", "-o", str(tmp_path / "hub")]) == 0
    assert f'timm.create_model("local-dir:{tmp_path / "hub"}", pretrained=True)' in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == sorted(FILES)
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert (config["architecture"], config["num_classes"], config["pretrained_cfg"]["input_size"]) == ("lenet_300_100", 10, [1, 8, 8])
    model = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()  # timm's own loader, offline
    weights = load_file(run / "level_01" / "weights.safetensors")
    state = model.state_dict()
    assert state.keys() == weights.keys() and all(torch.equal(state[k], weights[k]) for k in weights)
    mask = TicketMask.load(tmp_path / "hub" / "mask.safetensors", model)
    assert mask.equal(TicketMask.load(run / "level_01" / "mask.safetensors"))
    for name, keep in mask.masks.items():  # exactly the zeros of the ticket, no more, no fewer
        assert torch.equal(state[name] == 0, weights[name] == 0) and torch.count_nonzero(state[name][~keep]) == 0
    # accuracy on the run's test split through timm's eval transform from the exported config: the run's figure
    transform = create_transform(**resolve_data_config(model=model), is_training=False)
    test = digits()["test"]
    images = torch.stack([transform(Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L")) for image in test["image"]])
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == torch.tensor(test["label"])).float().mean().item()
    metrics = json.loads((run / "level_01" / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test_acc"], abs=1e-6)
    card = (tmp_path / "hub" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "timm" and "lottery-ticket" in front["tags"]
    steps = sum(json.loads((run / f"level_0{lv}" / "metrics.json").read_text())["optimizer_steps"] for lv in range(2))
    for text in (f"{100 * (1 - mask.density):.2f}% of {mask.num_total:,} prunable weights", f"| test accuracy | {100 * metrics['test_acc']:.2f}% |",
                 f"| optimizer steps, levels 0 to 1 | {steps:,} |", "| strategy | `ltr` |", "name: lenet_300_100", "```yaml"):
        assert text in card, text


class StandIn:
    """Records what `push` asks of huggingface_hub's HfApi."""

    def __init__(self, held=()):
        self.calls, self.held = [], set(held)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def file_exists(self, repo_id, filename, **kwargs):
        return filename in self.held

    def upload_folder(self, **kwargs):
        from pathlib import Path

        self.calls.append(("upload_folder", sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()), kwargs))


def test_push_uploads_the_folder_to_a_model_repository_and_replaces_only_when_asked(run, tmp_path):
    folder, _ = export_hub(run, None, tmp_path / "up", "me/digits-ticket")
    assert 'timm.create_model("hf-hub:me/digits-ticket", pretrained=True)' in (folder / "README.md").read_text()
    api = StandIn()
    assert push(folder, "me/digits-ticket", api=api) == "hf-hub:me/digits-ticket"
    (create, repo, options), (upload, names, kwargs) = api.calls
    assert (create, repo, options["repo_type"], options["exist_ok"]) == ("create_repo", "me/digits-ticket", "model", True)
    assert (upload, names, kwargs["repo_type"], kwargs["repo_id"]) == ("upload_folder", sorted(FILES), "model", "me/digits-ticket")
    with pytest.raises(prac_plugin.PracError, match="already has 'README.md'; give another repository, or --overwrite"):
        push(folder, "me/digits-ticket", api=StandIn(held={"README.md"}))
    api = StandIn(held={"README.md"})
    push(folder, "me/digits-ticket", overwrite=True, api=api)
    assert [call[0] for call in api.calls] == ["create_repo", "upload_folder"]


def test_local_writes_what_would_go_up_and_bad_requests_are_one_line(run, tmp_path, capsys):
    assert prac_cli(["export", str(run), "--format", "timm-hub", "--push", "me/t", "--local", str(tmp_path / "local")]) == 0
    assert "(nothing was uploaded)" in capsys.readouterr().out and sorted(p.name for p in (tmp_path / "local").iterdir()) == sorted(FILES)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    for args, message in ((["--push", "digits-ticket"], "should name an owner too"), (["--push", "me/bad name!"], "is not valid"),
                          ([], "needs -o DIR"), (["-o", str(tmp_path / "full")], "exists and is not empty"),
                          (["--local", str(tmp_path / "x")], "give --push OWNER/NAME too"),
                          (["-o", str(tmp_path / "y"), "--level", "7"], "--level 7 is not a completed level")):
        assert prac_cli(["export", str(run), "--format", "timm-hub", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine" and not (tmp_path / "y").exists()
    assert prac_cli(["export", str(run), "--push", "me/t"]) == 2 and "give --format timm-hub" in capsys.readouterr().err


def test_offline_the_push_fails_in_one_line(run, capsys):
    assert prac_cli(["export", str(run), "--format", "timm-hub", "--push", "me/digits-ticket"]) == 2  # HF_HUB_OFFLINE=1 in the tests
    err = capsys.readouterr().err
    assert err.startswith("prac: error: uploading to model 'me/digits-ticket' failed:") and len(err.strip().splitlines()) == 1
