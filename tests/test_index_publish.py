"""`prac index push`: the folder that goes to the Hub (index file + a card from its provenance), the upload calls
against a stand-in for huggingface_hub's HfApi, and a clean error offline (issue 17, part 3). These machines have
no network: the real upload is the one part not exercised here."""

from __future__ import annotations

import pytest
from huggingface_hub import DatasetCard

import prac_plugin
from prac_plugin import PracError
from prac_plugin.cli import main as prac_cli
from prac_plugin.index_files.format import PracIndex, describe
from prac_plugin.index_files.publish import push, stage

from conftest import quick_recipe


@pytest.fixture(scope="module")
def prac_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("publish") / "run"
    prac_plugin.run(quick_recipe(ticket={"levels": 1}, data_selection={"strategy": "prac"}), str(out))
    return out / "prac_set.prac.safetensors"


def test_local_writes_exactly_the_folder_to_upload_with_a_card_from_the_provenance(prac_set, tmp_path, capsys):
    assert prac_cli(["index", "push", str(prac_set), "me/digits-prac", "--path-in-repo", "sets/r1.prac.safetensors",
                     "--local", str(tmp_path / "up")]) == 0
    assert "nothing was uploaded" in capsys.readouterr().out
    files = sorted(str(p.relative_to(tmp_path / "up")) for p in (tmp_path / "up").rglob("*") if p.is_file())
    assert files == ["README.md", "sets/r1.prac.safetensors"]
    assert (tmp_path / "up" / "sets" / "r1.prac.safetensors").read_bytes() == prac_set.read_bytes()
    card = DatasetCard((tmp_path / "up" / "README.md").read_text())  # huggingface_hub reads its front matter
    assert "prac-plugin" in card.data.tags
    text = card.text
    index = PracIndex.load(prac_set)
    meta = index.metadata
    for key in ("dataset", "split", "labels_sha256", "features_sha256", "model", "weight_density", "criteria",
                "forgetting_threshold", "package_version"):
        assert f"`{meta[key]}`" in text, key
    assert f"{len(index):,} rows of builtin:digits split train" in text
    for label, count in describe(index)["class_counts"].items():
        assert f"| {label} | {count:,} |" in text
    assert "data_selection: {strategy: index, path: hf://datasets/me/digits-prac/sets/r1.prac.safetensors}" in text


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


def test_push_creates_a_dataset_repository_and_uploads_the_staged_folder(prac_set, tmp_path):
    api = StandIn()
    assert push(str(prac_set), "me/digits-prac", tmp_path / "a", api=api) == "hf://datasets/me/digits-prac/prac_set.prac.safetensors"
    (create, repo, options), (upload, names, kwargs) = api.calls
    assert (create, repo, options["repo_type"], options["exist_ok"]) == ("create_repo", "me/digits-prac", "dataset", True)
    assert (upload, names, kwargs["repo_type"], kwargs["repo_id"]) == ("upload_folder", ["README.md", "prac_set.prac.safetensors"], "dataset", "me/digits-prac")


def test_files_the_repository_holds_are_not_replaced_unless_asked(prac_set, tmp_path):
    with pytest.raises(PracError, match="already has 'README.md'; give --path-in-repo another name, or --overwrite"):
        push(str(prac_set), "me/digits-prac", tmp_path / "a", api=StandIn(held={"README.md"}))
    api = StandIn(held={"README.md"})
    push(str(prac_set), "me/digits-prac", tmp_path / "b", overwrite=True, api=api)
    assert [call[0] for call in api.calls] == ["create_repo", "upload_folder"]


@pytest.mark.parametrize("repo,extra,message", [
    ("digits-prac", [], "should name an owner too"),
    ("me/bad name!", [], "is not valid"),
    ("me/x", ["--path-in-repo", "../up.prac.safetensors"], "should be a relative path ending with .prac.safetensors"),
    ("me/x", ["--path-in-repo", "set.bin"], "should be a relative path ending with .prac.safetensors"),
])
def test_bad_requests_are_one_line(prac_set, tmp_path, capsys, repo, extra, message):
    assert prac_cli(["index", "push", str(prac_set), repo, "--local", str(tmp_path / "up"), *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "up").exists()


def test_a_non_empty_local_folder_and_a_file_that_is_no_index_are_refused(prac_set, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(PracError, match="is not empty"):
        stage(str(prac_set), "me/x", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "junk.prac.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PracError, match="is corrupt or not a safetensors file"):
        stage(str(tmp_path / "junk.prac.safetensors"), "me/x", tmp_path / "other")


def test_offline_the_upload_fails_in_one_line(prac_set, capsys):
    assert prac_cli(["index", "push", str(prac_set), "me/digits-prac"]) == 2  # HF_HUB_OFFLINE=1 in the tests
    err = capsys.readouterr().err
    assert err.startswith("prac: error: uploading to dataset 'me/digits-prac' failed:") and len(err.strip().splitlines()) == 1
