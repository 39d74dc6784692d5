"""timm's real train.py, current (task-based) and v1.0.22, patched with exactly the repository's patch files
(integrations/timm/patches/, shown in the README) and run on CPU on a tiny parquet dataset: what users run, not a look-alike.

The scripts come from ../shared/timm (or $PRAC_TIMM_SCRIPTS), unchanged. Each run is a subprocess of a few
seconds; runs are shared between tests where they can be.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.models import create_model

import prac_plugin
import prac_plugin.timm
from prac_plugin import TicketMask
from prac_plugin.cli import main as prac_cli
from prac_plugin.rundir.folder import RunDirectory
from prac_plugin.index_files.format import PracIndex, signature
from prac_plugin.strategies.prac.sets import critical_set, prune_disagreement

from conftest import coloured_images

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(os.environ.get("PRAC_TIMM_SCRIPTS", ROOT.parent / "shared" / "timm"))
VERSIONS = {"current": ("train_2026-08-08_aa4b585.py", "train.py.diff"), "v1.0.22": ("train_v1.0.22.py", "train_v1.0.22.py.diff")}
N_TRAIN, CLASSES, SIZE = 256, 4, 16
PATCHES = ROOT / "prac_plugin" / "integrations" / "timm" / "patches"
CPU_DDP = Path(__file__).parent / "cpu_ddp"  # lets timm's DDP wrapping accept CPU processes (see its docstring)

pytestmark = [
    pytest.mark.skipif(not (SCRIPTS / VERSIONS["current"][0]).is_file(),
                       reason=f"timm's real train.py scripts are not at {SCRIPTS} (set PRAC_TIMM_SCRIPTS)"),
    pytest.mark.slow,  # real scripts in subprocesses: about 3.5 minutes
]


@pytest.fixture(scope="module")
def data(tiny_hfds):
    return tiny_hfds


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    """Copies of both real scripts, patched with the repository's patch files by `patch`, and the originals."""
    folder = tmp_path_factory.mktemp("scripts")
    out = {}
    for version, (name, diff) in VERSIONS.items():
        original = folder / version / "original" / "train.py"
        patched = folder / version / "patched" / "train.py"
        for path in (original, patched):
            path.parent.mkdir(parents=True)
            shutil.copy(SCRIPTS / name, path)
        result = subprocess.run(["patch", "--forward", "--batch", str(patched), str(PATCHES / diff)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        out[version] = {"patched": patched, "original": original}
    return out


def script_args(data, output, experiment, *extra, epochs=3):
    return [str(data["cache"]), "--dataset", f"hfds/{data['path']}", "--train-split", "train", "--val-split", "validation",
            "--input-key", "image", "--target-key", "label", "--model", "test_resnet", "--num-classes", str(CLASSES),
            "--img-size", str(SIZE), "-b", "32", "--workers", "0", "--device", "cpu", "--sched", "step", "--epochs", str(epochs),
            "--output", str(output), "--experiment", experiment, *extra]


def run(script, *args, processes=1, check=True):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), *map(str, args)]
    if processes > 1:
        env["PYTHONPATH"] = os.pathsep.join([str(CPU_DDP), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29547", *command[1:]]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def make_mask(path, num_classes=CLASSES, fraction=0.5):
    torch.manual_seed(1)
    model = create_model("test_resnet", num_classes=num_classes)
    mask = TicketMask.dense(model).prune_magnitude(model, fraction)
    mask.save(path)
    return mask


def assert_pruned_zero(state, mask):
    for name, keep in mask.masks.items():
        assert torch.count_nonzero(state[name][~keep]) == 0, name
        assert torch.count_nonzero(state[name][keep]) > 0.9 * int(keep.sum()), name  # the rest trained


def divisor_batch(rows: int, largest: int = 32) -> int:
    """A batch size that divides ``rows`` (timm drops a last partial training batch) and is at least 2 (BatchNorm)."""
    return next((b for b in range(largest, 1, -1) if rows % b == 0), rows)


def checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def critical_rows(stats):
    return ((stats["presentations"] > 0) & ((stats["forgetting"] > 0) | ~stats["ever_correct"]))


# -- the patches and the README ------------------------------------------------------------------------------
def test_patches_are_small_the_readme_shows_them_verbatim_and_prac_prints_them(scripts, capsys):
    readme = (ROOT / "README.md").read_text()
    for version, (_, diff) in VERSIONS.items():
        text = (PATCHES / diff).read_text()
        changed = [line for line in text.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert text.strip() in readme, f"README does not show integrations/timm/patches/{diff} as it is"
        if version == "current":
            assert len(changed) <= 8, changed
        assert prac_cli(["timm-patch", "--script", version]) == 0 and capsys.readouterr().out == text
    assert readme.index("timm/patches/train.py.diff") < readme.index("timm/patches/train_v1.0.22.py.diff")


# -- end to end, both scripts ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense(data, scripts, tmp_path_factory):
    """Per script: a run with every flag at once (select, mask, rewind at 1ep, EMA)."""
    out = tmp_path_factory.mktemp("dense")
    mask = make_mask(out / "mask.safetensors")
    runs = {}
    for version, paths in scripts.items():
        flags = ["--prac-select", "--ticket-mask", out / "mask.safetensors", "--model-ema", "--model-ema-decay", "0.9"]
        run(paths["patched"], *script_args(data, out / version, "full", *flags, "--save-rewind", "1ep"))
        runs[version] = out / version
    return {"runs": runs, "mask": mask, "mask_path": out / "mask.safetensors"}


@pytest.mark.parametrize("version", VERSIONS)
def test_select_mask_rewind_and_ema(dense, data, version):
    out = dense["runs"][version] / "full"
    mask = dense["mask"]
    # the mask held through every step: in the final weights, timm's checkpoint and its EMA
    weights = load_file(out / "weights.safetensors")
    assert_pruned_zero(weights, mask)
    last = checkpoint(out / "last.pth.tar")
    model_key, ema_key = ("state_dict", "state_dict_ema")
    assert all(torch.equal(last[model_key][k], weights[k]) for k in weights)
    assert_pruned_zero(last[ema_key], mask)
    assert TicketMask.load(out / "mask.safetensors").equal(mask)
    # the PrAC set: exactly the critical rows of the per-row statistics, each row seen once per epoch
    stats = load_file(out / prac_plugin.timm.STATISTICS_FILE)
    index = PracIndex.load(out / "prac_set.prac.safetensors")
    assert bool((stats["presentations"] == 3).all()) and torch.equal(stats["labels"], data["labels"])
    assert torch.equal(index.rows, critical_rows(stats).nonzero().squeeze(1)) and 0 < len(index) < N_TRAIN
    meta = index.metadata
    assert (meta["criteria"], meta["model"], meta["optimizer_steps"], meta["epochs_recorded"]) == ("cet", "test_resnet", "24", "3")
    # the rewind point: after update 8 (1ep), the weights timm's own checkpoint of epoch 0 holds
    rewind, info = RunDirectory(out).load_state("rewind")
    assert info == {"point": "1ep", "step": 8, "total_steps": 24, "steps_per_epoch": 8}
    first_epoch = checkpoint(out / "checkpoint-0.pth.tar")
    assert first_epoch["epoch"] == 0 and rewind.keys() == first_epoch[model_key].keys()
    assert all(torch.equal(rewind[k], first_epoch[model_key][k]) for k in rewind)
    assert not all(torch.equal(rewind[k], weights[k]) for k in weights)


@pytest.mark.parametrize("version", VERSIONS)
def test_without_prac_flags_the_patched_script_trains_exactly_as_the_original(data, scripts, tmp_path, version):
    for kind in ("original", "patched"):
        run(scripts[version][kind], *script_args(data, tmp_path, kind, epochs=2))
    a, b = (checkpoint(tmp_path / kind / "last.pth.tar")["state_dict"] for kind in ("original", "patched"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any((tmp_path / "patched" / name).exists() for name in ("prac_state.safetensors", "weights.safetensors"))


# -- a whole PrAC-LTR round from the shell: prune, rewind, restrict, CET ∪ CEP -----------------------------------------
def test_a_prac_round_with_the_current_script(dense, data, scripts, tmp_path, capsys):
    first = dense["runs"]["current"] / "full"
    assert prac_cli(["prune", str(first / "weights.safetensors"), "--mask", str(dense["mask_path"]), "--fraction", "0.2",
                     "-o", str(tmp_path / "next.safetensors")]) == 0
    assert "40.00%; 50.00% before" in capsys.readouterr().out
    following = TicketMask.load(tmp_path / "next.safetensors")
    model = create_model("test_resnet", num_classes=CLASSES)
    model.load_state_dict(load_file(first / "weights.safetensors"))
    assert following.equal(TicketMask.load(dense["mask_path"]).prune_magnitude(model, 0.2))  # prac's own pruning
    index = PracIndex.load(first / "prac_set.prac.safetensors")
    run(scripts["current"]["patched"], *script_args(
        data, tmp_path, "r1", "--prac-index", first / "prac_set.prac.safetensors", "--ticket-mask", tmp_path / "next.safetensors",
        "--initial-checkpoint", first / "rewind.safetensors", "--start-epoch", "1", "--prac-select",
        "--prac-dense", first / "weights.safetensors", "-b", divisor_batch(len(index))))
    out = tmp_path / "r1"
    stats = load_file(out / prac_plugin.timm.STATISTICS_FILE)
    # trained on exactly the index rows, each once per epoch (2 epochs from the rewind epoch), no other row
    assert torch.equal(stats["presentations"].nonzero().squeeze(1), index.rows)
    assert bool((stats["presentations"][index.rows] == 2).all())
    weights = load_file(out / "weights.safetensors")
    assert_pruned_zero(weights, following)
    # CET ∪ CEP as prac selects it: CEP from eval-mode, un-augmented predictions of the dense and the final weights
    dataset = create_dataset(f"hfds/{data['path']}", root=str(data["cache"]), split="train")
    current, dense_model = (create_model("test_resnet", num_classes=CLASSES) for _ in range(2))
    current.load_state_dict(weights)
    dense_model.load_state_dict(load_file(first / "weights.safetensors"))
    config = resolve_data_config({"input_size": (3, SIZE, SIZE)}, model=current)
    transform = create_transform(**{k: config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")})
    dataset.transform = transform
    images = torch.stack([dataset[i][0] for i in range(N_TRAIN)])
    with torch.no_grad():
        predicted = [m.eval()(images).argmax(1) for m in (dense_model, current)]
    cep = prune_disagreement(*predicted)
    assert torch.equal(stats["prune_disagreement"], cep)
    expected = critical_set(critical_rows(stats), cep, "both").nonzero().squeeze(1)
    chosen = PracIndex.load(out / "prac_set.prac.safetensors")
    assert torch.equal(chosen.rows, expected) and chosen.metadata["criteria"] == "both"
    # the round trained epochs 1 and 2 of 3: its own cost, not timm's absolute counters (3 epochs, 3 x updates)
    updates = len(index) // divisor_batch(len(index))
    meta = chosen.metadata
    assert (meta["epochs_recorded"], meta["optimizer_steps"], meta["start_epoch"]) == ("2", str(2 * updates), "1"), meta
    assert int(cep.sum()) > 0 and not torch.equal(expected, critical_rows(stats).nonzero().squeeze(1))  # CEP added rows


@pytest.fixture(scope="module")
def prac_run(data, tmp_path_factory):
    """A `prac run` on the same parquet data with the same timm model: a PrAC set (round 1) and a level-1 mask."""
    out = tmp_path_factory.mktemp("prac") / "run"
    prac_plugin.run({
        "model": {"name": "test_resnet"},
        "data": {"path": str(data["path"]), "cache_dir": str(data["cache"])},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "schedule": "constant", "seed": 0, "cpu": True},
        "ticket": {"strategy": "ltr", "levels": 1, "fraction": 0.2, "rewind": "1ep"},
        "data_selection": {"strategy": "prac"},
        "run": {"tracker": "none", "checkpoint_every": "none"},
    }, str(out))
    return out


def test_files_from_prac_restrict_the_v1_0_22_script_and_its_set_loads_in_prac(prac_run, data, scripts, tmp_path):
    prac_set = PracIndex.load(prac_run / "prac_set.prac.safetensors")
    batch = divisor_batch(len(prac_set))
    prac_mask = TicketMask.load(prac_run / "level_01" / "mask.safetensors")
    run(scripts["v1.0.22"]["patched"], *script_args(data, tmp_path, "ix", "--prac-index", prac_run / "prac_set.prac.safetensors",
                                                   "--ticket-mask", prac_run / "level_01" / "mask.safetensors", "--prac-select",
                                                   "-b", batch, epochs=2))
    out = tmp_path / "ix"
    stats = load_file(out / prac_plugin.timm.STATISTICS_FILE)
    assert torch.equal(stats["presentations"].nonzero().squeeze(1), prac_set.rows)
    assert bool((stats["presentations"][prac_set.rows] == 2).all())
    assert_pruned_zero(load_file(out / "weights.safetensors"), prac_mask)
    ours = PracIndex.load(out / "prac_set.prac.safetensors")
    rerun = tmp_path / "index_run"
    prac_plugin.run({
        "model": {"name": "test_resnet"}, "data": {"path": str(data["path"]), "cache_dir": str(data["cache"])},
        "train": {"epochs": 1, "batch_size": 32, "seed": 0, "cpu": True}, "ticket": {"strategy": "ltr", "levels": 0},
        "data_selection": {"strategy": "index", "path": str(out / "prac_set.prac.safetensors")}, "run": {"tracker": "none"},
    }, str(rerun))
    assert json.loads((rerun / "level_00" / "metrics.json").read_text())["train_examples"] == len(ours)


# -- the configurations a user may pass -------------------------------------------------------------------------
@pytest.mark.parametrize("config", [
    # bf16 autocast at 32 px: at 16 px layer4's 1x1 maps drive test_resnet's weights to NaN on a CPU in the
    # unpatched script too (torch's CPU bf16 convolution), which no plugin could be judged on
    ("current", ["--mixup", "0.8", "--cutmix", "1.0", "--amp", "--amp-dtype", "bfloat16", "--img-size", "32"]),  # FastCollateMixup
    ("current", ["--mixup", "0.8", "--cutmix", "1.0", "--no-prefetcher", "--amp", "--amp-dtype", "bfloat16", "--img-size", "32"]),  # Mixup
    ("current", ["--torchcompile", "aot_eager", "--model-ema", "--grad-accum-steps", "2"]),
    ("v1.0.22", ["--mixup", "0.8", "--cutmix", "1.0", "--no-prefetcher"]),
], ids=["prefetcher-fastcollatemixup-bf16", "no-prefetcher-mixup-bf16", "torchcompile-ema-grad-accum", "v1.0.22-no-prefetcher-mixup"])
def test_configurations_keep_working_with_the_plugin(dense, data, scripts, tmp_path, config):
    version, extra = config
    run(scripts[version]["patched"], *script_args(data, tmp_path, "c", "--prac-select", "--ticket-mask", dense["mask_path"], *extra, epochs=2))
    stats = load_file(tmp_path / "c" / prac_plugin.timm.STATISTICS_FILE)
    assert bool((stats["presentations"] == 2).all())  # every row once per epoch, under mixing and compilation
    assert torch.equal(PracIndex.load(tmp_path / "c" / "prac_set.prac.safetensors").rows, critical_rows(stats).nonzero().squeeze(1))
    weights = load_file(tmp_path / "c" / "weights.safetensors")
    assert all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())
    assert_pruned_zero(weights, dense["mask"])
    steps = 8 // (2 if "--grad-accum-steps" in extra else 1) * 2
    assert PracIndex.load(tmp_path / "c" / "prac_set.prac.safetensors").metadata["optimizer_steps"] == str(steps)


@pytest.mark.parametrize("version", VERSIONS)
def test_aug_splits_and_rows_the_loader_never_showed(data, scripts, tmp_path, version):
    """--aug-splits wraps the split in timm's AugMixDataset (with --jsd-loss in the current script): the hook looks
    through it, records each example once per epoch (its clean split), and says so in timm's log. One epoch at
    batch 24 leaves 16 of the 256 rows unshown (timm drops the last partial batch): never learned, so in the set."""
    extra = ["--aug-splits", "2", *(["--jsd-loss"] if version == "current" else [])]
    result = run(scripts[version]["patched"], *script_args(data, tmp_path, "aug", "--prac-select", "--save-rewind", "1it", *extra,
                                                          "-b", "24", epochs=1))
    out = tmp_path / "aug"
    stats = load_file(out / prac_plugin.timm.STATISTICS_FILE)
    assert sorted(stats["presentations"].tolist()) == [0] * 16 + [1] * 240  # once per epoch, not once per split
    unshown = stats["presentations"] == 0
    index = PracIndex.load(out / "prac_set.prac.safetensors")
    assert torch.equal(index.rows, (critical_rows(stats) | unshown).nonzero().squeeze(1))
    assert set(unshown.nonzero().squeeze(1).tolist()) <= set(index.rows.tolist()) and index.metadata["unshown_rows"] == "16"
    assert (index.metadata["epochs_recorded"], index.metadata["optimizer_steps"]) == ("1", "10")
    log = result.stdout + result.stderr
    start = [line for line in log.splitlines() if line.startswith("prac: training on")]
    assert len(start) == 1 and re.fullmatch(
        r"prac: training on all 256 rows, 2 aug splits \(the clean split's predictions are tracked\); no mask; "
        r"rewind point 1it = step 1; tracking forgetting per example for the PrAC set \(CET, E_F 0\); epochs 0-0 of 1", start[0]), start
    assert re.search(rf"prac: saved the rewind point 1it \(step 1 of 10\) to {re.escape(str(out))}/rewind.safetensors", log)
    assert re.search(rf"prac: saved the PrAC set \(CET\): {len(index)} of the 256 rows trained on \(16 never shown, counted as "
                     rf"never learned\) to {re.escape(str(out))}/prac_set.prac.safetensors", log)


def _hub_cache(folder: Path, model_name: str, state: dict) -> Path:
    """A Hugging Face Hub cache holding ``timm/<model_name>``'s model.safetensors, as a download would leave it."""
    from safetensors.torch import save_file

    repo = folder / f"models--{model_name.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return folder


def test_distillation_with_a_teacher_from_a_local_hub_cache(dense, data, scripts, tmp_path, monkeypatch):
    """timm's logit distillation task always loads the teacher's pretrained weights: offline, from the Hub cache."""
    torch.manual_seed(5)
    hub_id = create_model("test_resnet").pretrained_cfg["hf_hub_id"]
    cache = _hub_cache(tmp_path / "hub", hub_id, create_model("test_resnet").state_dict())
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    result = run(scripts["current"]["patched"], *script_args(data, tmp_path, "kd", "--kd-model-name", "test_resnet", "--prac-select",
                                                            "--ticket-mask", dense["mask_path"], epochs=2))
    log = result.stdout + result.stderr
    assert f"Loading pretrained weights from Hugging Face hub ({hub_id})" in log and "Creating KD teacher model" in log
    stats = load_file(tmp_path / "kd" / prac_plugin.timm.STATISTICS_FILE)
    assert bool((stats["presentations"] == 2).all())  # the student's predictions, every row once per epoch
    assert torch.equal(PracIndex.load(tmp_path / "kd" / "prac_set.prac.safetensors").rows, critical_rows(stats).nonzero().squeeze(1))
    weights = load_file(tmp_path / "kd" / "weights.safetensors")
    assert_pruned_zero(weights, dense["mask"])  # the student's weights: the teacher's are not the model's
    assert_pruned_zero(checkpoint(tmp_path / "kd" / "last.pth.tar")["state_dict"], dense["mask"])


def test_two_processes_under_torchrun_count_every_row_once(dense, data, scripts, tmp_path):
    run(scripts["current"]["patched"], *script_args(data, tmp_path, "t", "-b", "16", "--prac-select", "--ticket-mask", dense["mask_path"],
                                                   "--save-rewind", "1ep", "--prac-dense", dense["runs"]["current"] / "full" / "weights.safetensors",
                                                   epochs=2), processes=2)
    out = tmp_path / "t"
    stats = load_file(out / prac_plugin.timm.STATISTICS_FILE)
    assert bool((stats["presentations"] == 2).all())  # 128 rows per process and epoch, combined once
    index = PracIndex.load(out / "prac_set.prac.safetensors")
    assert torch.equal(index.rows, critical_set(critical_rows(stats), stats["prune_disagreement"]).nonzero().squeeze(1))
    assert json.loads((out / "rewind.json").read_text())["step"] == 8  # 8 updates per epoch on each process
    assert_pruned_zero(load_file(out / "weights.safetensors"), dense["mask"])


# -- resume ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_resume_keeps_the_mask_and_the_forgetting_statistics(dense, data, scripts, tmp_path, version):
    script = scripts[version]["patched"]
    run(script, *script_args(data, tmp_path, "a", "--prac-select", "--ticket-mask", dense["mask_path"], "--save-rewind", "1ep", epochs=2))
    first = load_file(tmp_path / "a" / prac_plugin.timm.STATISTICS_FILE)
    # the crash: the run stopped after epoch 2 of 3; resumed without --ticket-mask, the run's mask stays on
    run(script, *script_args(data, tmp_path, "a", "--prac-select", "--save-rewind", "1ep", "--resume", tmp_path / "a" / "last.pth.tar"))
    stats = load_file(tmp_path / "a" / prac_plugin.timm.STATISTICS_FILE)
    assert bool((stats["presentations"] == 3).all())  # two epochs restored, one recorded
    assert bool((stats["forgetting"] >= first["forgetting"]).all()) and bool((stats["ever_correct"] | ~first["ever_correct"]).all())
    assert_pruned_zero(load_file(tmp_path / "a" / "weights.safetensors"), dense["mask"])
    assert json.loads((tmp_path / "a" / "rewind.json").read_text())["step"] == 8  # saved by the first run, kept
    # resumed without --ticket-mask, the mask the run trained with is the one timm's args.yaml names
    assert yaml.safe_load((tmp_path / "a" / "args.yaml").read_text())["ticket_mask"] == str(dense["mask_path"])
    if version != "current":
        return  # the refusals below are the hook's own, the same for both scripts
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir() if p.is_file()}
    # resuming from an older checkpoint, or with another mask, would mix states: refused, named
    other = make_mask(tmp_path / "other.safetensors", fraction=0.3)
    assert not other.equal(dense["mask"])
    for extra, message in ((["--resume", tmp_path / "a" / "checkpoint-0.pth.tar"], r"holds the state after epoch 3, the checkpoint resumes at epoch 1"),
                           (["--resume", tmp_path / "a" / "last.pth.tar", "--ticket-mask", tmp_path / "other.safetensors"], "--ticket-mask differs")):
        result = run(script, *script_args(data, tmp_path, "a", "--prac-select", *extra), check=False)
        assert result.returncode == 2 and re.search(message, result.stderr), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        # refused before timm writes anything: its args.yaml keeps the run's values, no file changed or added
        assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir() if p.is_file()} == before


# -- start-up errors: one line, exit status 2, nothing written ---------------------------------------------------------
def _other_index(tmp_path, num_rows):
    labels = torch.randint(0, CLASSES, (num_rows,), generator=torch.Generator().manual_seed(3))
    meta = signature("other/dataset", None, None, "train", labels, "label", "{}")
    PracIndex(torch.arange(10), meta).save(tmp_path / f"other{num_rows}.prac.safetensors")
    return tmp_path / f"other{num_rows}.prac.safetensors", meta


BAD_INPUT = [
    ("current", "label hash"), ("current", "row count"), ("current", "mask of another model"), ("current", "rewind past the end"),
    ("current", "bad rewind"), ("current", "dense of another model"), ("current", "dense without select"), ("current", "naflex loader"),
    ("current", "threshold without select"), ("current", "output without a writing flag"),
    ("v1.0.22", "rewind past the end"), ("v1.0.22", "mask of another model"),
]

# Runs scripts, each in a process of its own forked from this one once it has imported what every run of the
# scripts imports first (torch, timm, datasets): the script file runs unchanged as __main__ with its own sys.argv,
# stdout and stderr, and exits as `python train.py ...` would (an uncaught exception reaches sys.excepthook, which
# the patch's hook sets). The seconds of imports are paid once instead of once per run.
FORKING_RUNNER = textwrap.dedent("""
    import json, os, runpy, sys
    import datasets, timm, timm.data, timm.layers, timm.loss, timm.models, timm.optim, timm.scheduler, timm.utils, torch, yaml
    results = []
    for run in json.load(open(sys.argv[1])):
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for fd, name in ((1, run["stdout"]), (2, run["stderr"])):
                os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv, sys.path[0] = [run["script"], *run["args"]], os.path.dirname(run["script"])
            runpy.run_path(run["script"], run_name="__main__")
            sys.exit(0)
        results.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    print(json.dumps(results))
""")


def run_forked(runs: list[tuple], folder: Path) -> list[subprocess.CompletedProcess]:
    """Like ``run(script, *args, check=False)`` for each (script, *args) of ``runs``, under one process start-up."""
    spec = [{"script": str(script), "args": [str(a) for a in args], "stdout": str(folder / f"{i}.out"), "stderr": str(folder / f"{i}.err")}
            for i, (script, *args) in enumerate(runs)]
    (folder / "runs.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runner = subprocess.run([sys.executable, "-c", FORKING_RUNNER, str(folder / "runs.json")], capture_output=True, text=True, env=env,
                            timeout=900)
    assert runner.returncode == 0, runner.stderr[-4000:]
    codes = json.loads(runner.stdout.strip().splitlines()[-1])
    return [subprocess.CompletedProcess([r["script"], *r["args"]], code, Path(r["stdout"]).read_text(), Path(r["stderr"]).read_text())
            for r, code in zip(spec, codes)]


def _bad_input(case: str, folder: Path) -> tuple[list, str]:
    """The flags of a bad-input case (files it names made in ``folder``) and the error message expected."""
    if case in ("label hash", "row count"):
        path, meta = _other_index(folder, N_TRAIN if case == "label hash" else 300)
        extra = ["--prac-index", path]
        message = f"labels_sha256 \\(label hash\\) is {meta['labels_sha256']}" if case == "label hash" else r"num_rows \(row count\) is 300 in the file"
    elif case == "mask of another model":
        make_mask(folder / "m10.safetensors", num_classes=10)
        extra, message = ["--ticket-mask", folder / "m10.safetensors"], r"mask entry 'fc.weight' has shape \(10, "
    elif case == "rewind past the end":
        extra, message = ["--save-rewind", "3ep"], "rewind point 3ep is step 24, beyond the training length of 24 steps"
    elif case == "bad rewind":
        extra, message = ["--save-rewind", "2epochs"], "rewind point '2epochs' is not understood"
    elif case == "dense of another model":
        from safetensors.torch import save_file

        save_file(create_model("test_resnet", num_classes=10).state_dict(), str(folder / "d10.safetensors"))
        extra, message = ["--prac-dense", folder / "d10.safetensors"], r"'fc.weight' has shape \(10, 96\)"
    elif case == "dense without select":
        extra, message = ["--prac-dense", folder / "unused.safetensors", "--ticket-mask", folder / "unused.safetensors"], "--prac-dense gives CEP"
    elif case == "threshold without select":
        extra, message = ["--prac-forgetting-threshold", "3"], "--prac-forgetting-threshold 3 sets E_F for the PrAC set: it needs --prac-select"
    elif case == "output without a writing flag":
        extra, message = ["--prac-output", folder / "files"], r"--prac-output '.*files': no flag writes files there"
    else:
        extra, message = ["--naflex-loader"], "--naflex-loader batches patches without sample ids"
    select = [] if case in ("dense without select", "threshold without select", "output without a writing flag") else ["--prac-select"]
    return [*select, *extra], message


PROBE = """import sys, os
print('ARGS', sys.argv[1:], sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print('to stderr', file=sys.stderr)
if sys.argv[1] == 'raise':
    raise KeyError('k')
if sys.argv[1] == 'prac':
    import argparse, prac_plugin.timm
    prac_plugin.timm.add_args(argparse.ArgumentParser())
    from prac_plugin import PracError
    raise PracError('X is wrong')
sys.exit(int(sys.argv[1]))
"""
PROBE_ARGS = ("0", "3", "raise", "prac")


@pytest.fixture(scope="module")
def bad_input_runs(data, scripts, tmp_path_factory):
    """Every case of BAD_INPUT run by the patched script, {(version, case): (result, its folder, message)}, and a
    probe script's runs, {"probe": {argument: result}}, all under one forking runner."""
    cases, runs = {}, []
    for version, case in BAD_INPUT:
        folder = tmp_path_factory.mktemp("bad_input")
        flags, message = _bad_input(case, folder)
        cases[version, case] = (folder, message)
        runs.append((scripts[version]["patched"], *script_args(data, folder / "out", "x", *flags)))
    logs = tmp_path_factory.mktemp("bad_input_logs")
    (logs / "probe.py").write_text(PROBE)
    results = run_forked(runs + [(logs / "probe.py", arg) for arg in PROBE_ARGS], logs)
    found = {key: (result, folder, message) for (key, (folder, message)), result in zip(cases.items(), results)}
    return {**found, "probe": dict(zip(PROBE_ARGS, results[len(runs):]))}


@pytest.mark.parametrize("version,case", BAD_INPUT)
def test_bad_input_stops_the_script_at_start_up_with_one_line(bad_input_runs, version, case):
    result, folder, message = bad_input_runs[version, case]
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("prac: error: ") and re.search(message, last), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (folder / "out").exists()  # not even timm's args.yaml


def test_the_forking_runner_runs_a_script_as_python_does(bad_input_runs):
    """What the bad-input cases lean on: argv, the script's folder on sys.path, output, and exit statuses
    (SystemExit's code, an uncaught exception's 1 and traceback, the hook's os._exit(2)) as in a process of its own."""
    probe = bad_input_runs["probe"]
    assert (probe["0"].returncode, probe["0"].stdout, probe["0"].stderr) == (0, "ARGS ['0'] True\n", "to stderr\n")
    assert probe["3"].returncode == 3 and probe["3"].stdout == "ARGS ['3'] True\n"
    assert probe["raise"].returncode == 1 and "Traceback" in probe["raise"].stderr and "KeyError: 'k'" in probe["raise"].stderr
    assert probe["prac"].returncode == 2 and probe["prac"].stderr.strip().splitlines()[-1] == "prac: error: X is wrong"


# -- image folders ---------------------------------------------------------------------------------------------------
def test_image_folder_dataset(scripts, tmp_path):
    rng = np.random.default_rng(1)
    colors = rng.integers(90, 165, (CLASSES, 3))
    for split, n in (("train", 64), ("validation", 16)):
        labels = rng.integers(0, CLASSES, n)
        for i, (label, image) in enumerate(zip(labels, coloured_images(rng, labels, colors))):
            (tmp_path / "folder" / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            image.save(tmp_path / "folder" / split / f"c{label}" / f"img{i}.png")
    common = [tmp_path / "folder", "--train-split", "train", "--val-split", "validation", "--model", "test_resnet", "--num-classes", CLASSES,
              "--img-size", SIZE, "-b", "16", "--workers", "0", "--device", "cpu", "--sched", "step", "--epochs", "2", "--output", tmp_path]
    run(scripts["current"]["patched"], *common, "--experiment", "f", "--prac-select")
    stats = load_file(tmp_path / "f" / prac_plugin.timm.STATISTICS_FILE)
    index = PracIndex.load(tmp_path / "f" / "prac_set.prac.safetensors")
    assert bool((stats["presentations"] == 2).all()) and len(stats["labels"]) == 64
    assert len(index.metadata["files_sha256"]) == 64 and index.metadata["dataset"] == f"folder:{tmp_path / 'folder' / 'train'}"
    run(scripts["current"]["patched"], *common, "--experiment", "g", "--prac-index", tmp_path / "f" / "prac_set.prac.safetensors",
        "-b", divisor_batch(len(index), largest=16), "--prac-select")
    again = load_file(tmp_path / "g" / prac_plugin.timm.STATISTICS_FILE)
    assert torch.equal(again["presentations"].nonzero().squeeze(1), index.rows)


# -- the README's campaign, as written ---------------------------------------------------------------------------------
def test_the_readme_campaign_runs_as_written(data, scripts, tmp_path):
    """The README's shell block with only its three variable lines pointed at the local tiny dataset and model."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("```bash\nMODEL=resnet18"):]
    block = block[len("```bash\n"): block.index("\n```")]
    lines = block.splitlines()
    assert lines[0].startswith("MODEL=") and lines[1].startswith("DATA=") and lines[2].startswith("TRAIN=")
    local = [f"MODEL=test_resnet CLASSES={CLASSES}",
             f'DATA="{data["cache"]} --dataset hfds/{data["path"]} --train-split train --val-split validation --input-key image '
             f'--target-key label --num-classes $CLASSES --img-size {SIZE} -b 32 --workers 0 --device cpu"',
             'TRAIN="$DATA --model $MODEL --epochs 3 --sched step --output runs"']
    shutil.copy(scripts["current"]["patched"], tmp_path / "train.py")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    script = "set -euo pipefail\n" + "\n".join(local + lines[3:]) + "\n"
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    runs = tmp_path / "runs"
    second = TicketMask.load(runs / "mask2.safetensors")
    assert abs(second.density - 0.64) < 0.01 and "fc.weight" not in second.masks  # two prunings of 20%, classifier kept
    assert PracIndex.load(runs / "round1" / "prac_set.prac.safetensors").metadata["criteria"] == "both"
    assert json.loads((runs / "round0" / "rewind.json").read_text())["step"] == 16  # 2ep of 8 updates
