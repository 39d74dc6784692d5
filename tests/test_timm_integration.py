"""The timm training-script hook: a script shaped like timm's train.py (tests/timm_style_train.py) trains a
real timm model on a small local parquet dataset (hfds/) or image folder, with and without the hook's lines."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from timm.data import FastCollateMixup, Mixup, create_dataset
from timm.models import create_model

import prac_plugin
import prac_plugin.timm
from prac_plugin import PracError, TicketMask
from prac_plugin.cli import main as prac_cli
from prac_plugin.integrations.timm_data import (
    IdFastCollateMixup,
    IdMixup,
    pack_mixed,
    unpack,
)
from prac_plugin.rundir import RunDirectory
from prac_plugin.selection.index_file import PracIndex, labels_sha256, signature

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import timm_style_train

N_TRAIN, N_VAL, CLASSES, SIZE = 256, 64, 4, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_images(rng, n, colors):
    """Noisy class-coloured 16x16 RGB images: learnable in a few epochs, with some forgetting on the way."""
    from PIL import Image

    labels = rng.integers(0, CLASSES, n)
    return [Image.fromarray(np.clip(colors[l] + rng.normal(0, 90, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)) for l in labels], labels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny Hugging Face parquet dataset (train 256, validation 64, 4 classes) and a datasets cache folder."""
    import datasets

    root = tmp_path_factory.mktemp("timm_data")
    rng = np.random.default_rng(0)
    colors = rng.integers(90, 165, (CLASSES, 3))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{i}" for i in range(CLASSES)])})
    labels = {}
    for split, n in (("train", N_TRAIN), ("validation", N_VAL)):
        images, labels[split] = write_images(rng, n, colors)
        datasets.Dataset.from_dict({"image": images, "label": labels[split].tolist()}, features=features).to_parquet(str(root / "ds" / f"{split}.parquet"))
    return {"path": root / "ds", "cache": root / "cache", "labels": torch.from_numpy(labels["train"]).long()}


def script_args(data, *extra, epochs=3):
    return [str(data["cache"]), "--dataset", f"hfds/{data['path']}", "--num-classes", str(CLASSES), "--input-size", "3", str(SIZE), str(SIZE),
            "--epochs", str(epochs), "--sched", "step", *extra]


def train(data, *extra, epochs=3, module=timm_style_train):
    return module.main(script_args(data, *extra, epochs=epochs))


def make_mask(path, num_classes=CLASSES, fraction=0.5):
    torch.manual_seed(1)
    model = create_model("test_resnet", num_classes=num_classes)
    mask = TicketMask.dense(model).prune_magnitude(model, fraction)
    mask.save(path)
    return mask


def assert_pruned_zero(model, mask):
    params = dict(model.named_parameters())
    for name, keep in mask.masks.items():
        assert torch.count_nonzero(params[name].detach()[~keep]) == 0, name
        assert torch.count_nonzero(params[name].detach()[keep]) > 0.9 * int(keep.sum()), name  # the rest trained


def assert_index_matches_statistics(index, stats, epochs_each):
    critical = (stats["forgetting"] > 0) | ~stats["ever_correct"]
    assert torch.equal(index.rows, critical.nonzero().squeeze(1))
    scores = torch.where(stats["ever_correct"], stats["forgetting"].float(), torch.tensor(float("inf")))  # never learned: inf
    assert torch.equal(index.statistics["forgetting"], scores[index.rows])
    assert torch.equal(index.statistics["labels"], stats["labels"][index.rows])
    assert bool((stats["presentations"] == epochs_each).all())
    assert bool((stats["forgetting"] <= epochs_each // 2).all())  # a forgetting event needs a right then a wrong epoch


# -- end to end ---------------------------------------------------------------------------------------------
def test_select_mask_rewind_end_to_end(data, tmp_path):
    mask = make_mask(tmp_path / "mask.safetensors")
    common = ["--prac-select", "--ticket-mask", str(tmp_path / "mask.safetensors"), "--model-ema"]
    result = train(data, *common, "--save-rewind", "1ep", "--prac-output", str(tmp_path / "a"))
    out = tmp_path / "a"
    assert result["history"][-1]["top1"] > 60.0  # 4 classes: well above chance, pruned to half
    # the mask held through every step, in the model, its EMA and the saved weights
    assert_pruned_zero(result["model"], mask)
    assert_pruned_zero(result["model_ema"].module, mask)
    saved = load_file(out / "weights.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in result["model"].state_dict().items())
    assert TicketMask.load(out / "mask.safetensors", result["model"]).equal(mask)
    # the PrAC set: loads, is exactly the critical rows of the per-row statistics, names the data
    index = PracIndex.load(out / "prac_set.prac.safetensors")
    stats = load_file(out / prac_plugin.timm.STATISTICS_FILE)
    assert_index_matches_statistics(index, stats, epochs_each=3)  # 256 rows, 8 full batches: each row once per epoch
    assert torch.equal(stats["labels"], data["labels"])
    meta = index.metadata
    assert meta["num_rows"] == str(N_TRAIN) and meta["labels_sha256"] == labels_sha256(data["labels"])
    assert meta["criteria"] == "cet" and meta["model"] == "test_resnet" and meta["optimizer_steps"] == "24"
    assert abs(float(meta["weight_density"]) - mask.density) < 1e-3
    assert 0 < len(index) < N_TRAIN
    # the rewind point: step 8 (1ep of 8 updates), in the ltr layout, equal to the weights of a 1-epoch run
    weights, info = RunDirectory(out).load_state("rewind")
    assert info == {"point": "1ep", "step": 8, "total_steps": 24, "steps_per_epoch": 8}
    train(data, *common, "--prac-output", str(tmp_path / "b"), epochs=1)  # constant lr: epoch 1 is the same
    one_epoch = load_file(tmp_path / "b" / "weights.safetensors")
    assert weights.keys() == one_epoch.keys() and all(torch.equal(weights[k], one_epoch[k]) for k in weights)
    assert not all(torch.equal(weights[k], saved[k]) for k in weights)  # and not the final weights
    # the next ticket: prune the final weights, rewind with timm's own --initial-checkpoint and --start-epoch
    model = create_model("test_resnet", num_classes=CLASSES)
    model.load_state_dict(saved)
    following = TicketMask.load(out / "mask.safetensors").prune_magnitude(model, 0.2)
    following.save(tmp_path / "next.safetensors")
    assert abs(following.density - 0.4) < 0.01
    rewind = ["--ticket-mask", str(tmp_path / "next.safetensors"), "--initial-checkpoint", str(out / "rewind.safetensors"), "--start-epoch", "1"]
    train(data, *rewind, "--prac-output", str(tmp_path / "c"), epochs=1)  # no epoch left: the rewind weights, masked
    start = load_file(tmp_path / "c" / "weights.safetensors")
    masked = {k: v * following.masks[k] if k in following.masks else v for k, v in weights.items()}
    assert all(torch.equal(start[k], masked[k]) for k in masked)
    level = train(data, *rewind, "--prac-output", str(tmp_path / "d"))
    assert level["prac"].updates == 24 and len(level["history"]) == 2 and level["history"][-1]["top1"] > 60.0
    assert_pruned_zero(level["model"], following)


def without_hook(lines):
    """The script as it was before the hook: '# prac' lines deleted, '# prac: ORIGINAL' lines restored."""
    for line in lines:
        code, marker, original = line.partition("  # prac")
        if not marker:
            yield line
        elif original.startswith(": "):
            yield code[: len(code) - len(code.lstrip())] + original[2:]


def test_script_without_the_hook_lines_trains_identically(data, tmp_path):
    """Taking the hook out leaves a working timm script; without prac flags the hook changes nothing."""
    source = (HERE / "timm_style_train.py").read_text().splitlines()
    plain = list(without_hook(source))
    assert len(source) - len(plain) == 11  # the README diff's 10 added lines, and the hook in main's return value
    assert sum(a != b for a, b in zip(source, plain)) > 0 and "loss = loss_fn(output, target)" in "\n".join(plain)
    assert not any("prac." in line or "import prac_plugin" in line for line in plain)
    path = tmp_path / "plain_train.py"
    path.write_text("\n".join(plain) + "\n")
    spec = importlib.util.spec_from_file_location("plain_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    without = train(data, module=module, epochs=2)
    hooked = train(data, epochs=2)
    assert "prac" not in without and hooked["prac"].carries_ids is False
    assert type(hooked["dataset_train"]).__name__ == "ImageDataset"  # not wrapped
    assert [h["top1"] for h in without["history"]] == [h["top1"] for h in hooked["history"]]
    a, b = without["model"].state_dict(), hooked["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def prac_run(data, tmp_path_factory):
    """A `prac` run on the same parquet data with the same timm model: a PrAC set (round 1) and a level-1 mask."""
    out = tmp_path_factory.mktemp("prac") / "run"
    prac_plugin.run({
        "model": {"name": "test_resnet"},
        "data": {"path": str(data["path"]), "cache_dir": str(data["cache"])},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "schedule": "constant", "seed": 0, "cpu": True},
        "ticket": {"strategy": "ltr", "levels": 1, "fraction": 0.2, "rewind": "1ep"},
        "data_selection": {"strategy": "prac"},
        "run": {"tracker": "none"},
    }, str(out))
    return out


def test_prac_files_restrict_and_prune_this_script_and_its_files_load_in_prac(data, prac_run, tmp_path, capsys):
    prac_set = PracIndex.load(prac_run / "prac_set.prac.safetensors")
    n = len(prac_set)
    batch = next((b for b in range(32, 7, -1) if n % b == 0), n)  # timm drops a last partial batch: make none
    prac_mask = prac_run / "level_01" / "mask.safetensors"
    out = tmp_path / "out"
    result = train(data, "--prac-index", str(prac_run / "prac_set.prac.safetensors"), "--ticket-mask", str(prac_mask),
                   "--prac-select", "--prac-output", str(out), "-b", str(batch), epochs=2)
    # the training set is exactly the index rows: every row trained once per epoch, no other row ever
    assert len(result["dataset_train"]) == n
    presentations = result["prac"].tracker.presentations.cpu()
    assert torch.equal(presentations.nonzero().squeeze(1), prac_set.rows)
    assert bool((presentations[prac_set.rows] == 2).all())
    assert_pruned_zero(result["model"], TicketMask.load(prac_mask))
    # what this script wrote loads in prac: inspect, a run with strategy index, the mask
    ours = out / "prac_set.prac.safetensors"
    index = PracIndex.load(ours)
    assert set(index.rows.tolist()) <= set(prac_set.rows.tolist()) and index.metadata["source_index"].endswith("prac_set.prac.safetensors")
    assert prac_cli(["index", "inspect", str(ours)]) == 0
    assert f"size: {len(index)} ({100 * len(index) / N_TRAIN:.1f}% of {N_TRAIN} rows)" in capsys.readouterr().out
    rerun = tmp_path / "prac_index_run"
    prac_plugin.run({
        "model": {"name": "test_resnet"}, "data": {"path": str(data["path"]), "cache_dir": str(data["cache"])},
        "train": {"epochs": 1, "batch_size": 32, "seed": 0, "cpu": True}, "ticket": {"strategy": "ltr", "levels": 0},
        "data_selection": {"strategy": "index", "path": str(ours)}, "run": {"tracker": "none"},
    }, str(rerun))
    metrics = json.loads((rerun / "level_00" / "metrics.json").read_text())
    assert metrics["train_examples"] == len(index) and metrics["examples_seen"] == len(index)
    assert TicketMask.load(out / "mask.safetensors", result["model"]).equal(TicketMask.load(prac_mask))


@pytest.mark.parametrize("loader", [[], ["--no-prefetcher", "--amp"]], ids=["prefetcher+FastCollateMixup", "no-prefetcher+Mixup+bf16-autocast"])
def test_mixup_and_cutmix(data, tmp_path, loader):
    extra = ["--mixup", "0.8", "--cutmix", "1.0", "--prac-select", "--prac-output", str(tmp_path)]
    result = train(data, *extra, *loader, epochs=2)
    index = PracIndex.load(tmp_path / "prac_set.prac.safetensors")
    assert_index_matches_statistics(index, load_file(tmp_path / prac_plugin.timm.STATISTICS_FILE), epochs_each=2)
    assert result["history"][-1]["top1"] > 40.0


# -- the pieces ---------------------------------------------------------------------------------------------
def test_ids_travel_exactly_and_correctness_counts_against_the_hard_label(data):
    rows = torch.tensor([0, 1, 2, 3, 2**40 + 5, 2**47 + 3, 17, 2**24])
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    packed = pack_mixed(torch.rand(8, CLASSES), labels, rows)
    soft, hard, back = unpack(packed, CLASSES + 3)
    assert torch.equal(back, rows) and torch.equal(hard, labels) and soft.shape == (8, CLASSES)
    # a mixed batch, lam 0.3: each soft target leans to the partner's class; the hook counts the own label
    hook = prac_plugin.timm.TimmHook(torch.nn.Linear(1, 1), select=True)
    dataset = create_dataset(f"hfds/{data['path']}", root=str(data["cache"]), split="train")
    wrapped, _, mixup = hook.wrap(dataset, None, Mixup(mixup_alpha=1.0, label_smoothing=0.0, num_classes=CLASSES))
    assert isinstance(mixup, IdMixup)
    mixup._params_per_batch = lambda: (0.3, False)
    target = torch.stack([wrapped[i][1] for i in range(8)])
    assert torch.equal(target[:, 1], torch.arange(8)) and torch.equal(target[:, 0], data["labels"][:8])
    _, mixed = mixup(torch.zeros(8, 3, 2, 2), target)
    own = data["labels"][:8]
    logits = torch.nn.functional.one_hot(own, CLASSES).float()
    loss_target = hook.observe(logits, mixed)
    assert torch.allclose(loss_target, 0.3 * torch.eye(CLASSES)[own] + 0.7 * torch.eye(CLASSES)[own.flip(0)])
    assert hook.tracker._epoch[:8].tolist() == [1] * 8  # right, although the soft target's argmax is another class
    assert int((loss_target.argmax(1) != own).sum()) > 0


def test_fast_collate_mixup_half_mode_keeps_the_first_half_ids():
    collate = prac_plugin.timm.TimmHook(torch.nn.Linear(1, 1))  # inert: nothing wrapped
    assert collate.wrap("dataset", "collate", "mixup") == ("dataset", "collate", "mixup")
    from prac_plugin.integrations.timm_data import carry_ids

    fast = carry_ids(FastCollateMixup(mixup_alpha=1.0, mode="half", label_smoothing=0.0, num_classes=CLASSES))
    assert isinstance(fast, IdFastCollateMixup) and fast.mode == "half"
    batch = [(np.full((3, 4, 4), i, dtype=np.uint8), torch.tensor([i % CLASSES, 100 + i])) for i in range(8)]
    images, target = fast(batch)
    _, labels, rows = unpack(target, CLASSES + 3)
    assert images.shape[0] == 4 and rows.tolist() == [100, 101, 102, 103] and labels.tolist() == [0, 1, 2, 3]


def test_calls_out_of_order_are_named(data):
    model = torch.nn.Linear(1, 1)
    hook = prac_plugin.timm.TimmHook(model, select=True, output="unused")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(PracError, match=r"call prac.wrap\(dataset_train"):
        hook.start(optimizer, 1, 4)
    with pytest.raises(PracError, match=r"read by TensorDataset; PrAC sample ids need an hfds/"):
        hook.wrap(torch.utils.data.TensorDataset(torch.zeros(4, 1)))
    wrapped, _, _ = hook.wrap(create_dataset(f"hfds/{data['path']}", root=str(data["cache"]), split="train"))
    with pytest.raises(PracError, match=r"call prac.start\(optimizer"):
        hook.step()
    # a mixup not passed through wrap turns [label, row] pairs into soft targets: refused, never misread
    plain = FastCollateMixup(mixup_alpha=1.0, label_smoothing=0.0, num_classes=CLASSES)
    _, garbled = plain([(np.zeros((3, 2, 2), dtype=np.uint8), wrapped[i][1]) for i in range(4)])
    with pytest.raises(PracError, match=r"pass collate_fn and mixup_fn through prac.wrap"):
        hook.observe(torch.zeros(4, CLASSES), garbled)


def test_rewind_in_iterations_and_mask_under_adamw_and_clipping(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    mask = TicketMask.dense(model).prune_magnitude(model, 0.6)
    mask.save(tmp_path / "mask.safetensors")
    hook = prac_plugin.timm.TimmHook(model, mask=str(tmp_path / "mask.safetensors"), rewind="1ep1it", output=str(tmp_path / "out"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    hook.start(optimizer, num_epochs=3, updates_per_epoch=4)
    snapshots = []
    for _ in range(12):
        loss = model(torch.randn(16, 6)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.count_nonzero(p.grad[~mask.masks[n]]) == 0 for n, p in model.named_parameters() if n in mask.masks)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()
        hook.step()
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    hook.finish()
    assert_pruned_zero(model, mask)
    weights, info = RunDirectory(tmp_path / "out").load_state("rewind")
    assert info["step"] == 5 and info["point"] == "1ep1it"
    assert all(torch.equal(weights[k], snapshots[4][k]) for k in weights)  # after the 5th update
    with pytest.raises(PracError, match=r"rewind point 3ep is step 12, beyond the training length of 8 steps"):
        prac_plugin.timm.TimmHook(model, rewind="3ep", output=str(tmp_path)).start(optimizer, num_epochs=2, updates_per_epoch=4)


def test_import_name_does_not_shadow_timm():
    import timm

    assert "site-packages" in timm.__file__ or "prac_plugin" not in timm.__file__
    assert prac_plugin.timm.hook is prac_plugin.integrations.timm.hook


# -- image folders ------------------------------------------------------------------------------------------
def test_image_folder_dataset(tmp_path):
    rng = np.random.default_rng(1)
    colors = rng.integers(90, 165, (CLASSES, 3))
    for split, n in (("train", 64), ("validation", 16)):
        images, labels = write_images(rng, n, colors)
        for i, (image, label) in enumerate(zip(images, labels)):
            (tmp_path / "folder" / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            image.save(tmp_path / "folder" / split / f"c{label}" / f"img{i}.png")
    args = [str(tmp_path / "folder"), "--num-classes", str(CLASSES), "--input-size", "3", str(SIZE), str(SIZE), "-b", "16", "--epochs", "2"]
    result = timm_style_train.main(args + ["--prac-select", "--prac-output", str(tmp_path / "out")])
    stats = load_file(tmp_path / "out" / prac_plugin.timm.STATISTICS_FILE)
    assert bool((stats["presentations"] == 2).all()) and len(stats["labels"]) == 64
    index = PracIndex.load(tmp_path / "out" / "prac_set.prac.safetensors")
    assert len(index.metadata["files_sha256"]) == 64 and index.metadata["dataset"] == f"folder:{tmp_path / 'folder' / 'train'}"
    reader = result["dataset_train"].reader
    assert stats["labels"].tolist() == [target for _, target in reader.samples]
    # restricting to it works; an index without the folder's file-list hash (e.g. from datasets' imagefolder) is refused
    again = timm_style_train.main(args + ["-b", "2", "--prac-index", str(tmp_path / "out" / "prac_set.prac.safetensors")])
    assert len(again["dataset_train"]) == len(index)
    meta = {k: v for k, v in index.metadata.items() if k != "files_sha256"}
    PracIndex(index.rows, meta).save(tmp_path / "nohash.prac.safetensors")
    with pytest.raises(PracError, match="no file list hash"):
        timm_style_train.main(args + ["-b", "2", "--prac-index", str(tmp_path / "nohash.prac.safetensors")])


# -- bad input: one error at start-up, naming the value, nothing trained or written ---------------------------------
def other_dataset_index(tmp_path, data, num_rows=N_TRAIN):
    labels = torch.randint(0, CLASSES, (num_rows,), generator=torch.Generator().manual_seed(3))
    meta = signature("other/dataset", None, None, "train", labels, "label", "{}")
    path = tmp_path / "other.prac.safetensors"
    PracIndex(torch.arange(10), meta).save(path)
    return path, meta


@pytest.mark.parametrize("case", ["label hash", "row count", "mask of another model", "rewind past the end", "bad rewind"])
def test_bad_input_fails_before_training(data, tmp_path, case):
    out = tmp_path / "out"
    if case == "label hash":
        path, meta = other_dataset_index(tmp_path, data)
        extra, message = ["--prac-index", str(path)], f"labels_sha256 \\(label hash\\) is {meta['labels_sha256']} in the file"
    elif case == "row count":
        path, _ = other_dataset_index(tmp_path, data, num_rows=300)
        extra, message = ["--prac-index", str(path)], f"num_rows \\(row count\\) is 300 in the file, {N_TRAIN} for"
    elif case == "mask of another model":
        make_mask(tmp_path / "m10.safetensors", num_classes=10)
        extra, message = ["--ticket-mask", str(tmp_path / "m10.safetensors")], r"mask entry 'fc.weight' has shape \(10, "
    elif case == "rewind past the end":
        extra, message = ["--save-rewind", "3ep"], "rewind point 3ep is step 24, beyond the training length of 24 steps"
    else:
        extra, message = ["--save-rewind", "2epochs"], "rewind point '2epochs' is not understood"
    with pytest.raises(PracError, match=message):
        train(data, *extra, "--prac-select", "--prac-output", str(out))
    assert not out.exists()


# -- several processes --------------------------------------------------------------------------------------
def test_two_processes_gather_statistics_once(data, tmp_path):
    """torchrun, 2 CPU processes (gloo) started by the script itself: every row counted once per epoch."""
    mask = make_mask(tmp_path / "mask.safetensors")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
               str(HERE / "timm_style_train.py"), *script_args(data, epochs=2), "-b", "16", "--prac-select",
               "--ticket-mask", str(tmp_path / "mask.safetensors"), "--save-rewind", "1ep", "--prac-output", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    stats = load_file(out / prac_plugin.timm.STATISTICS_FILE)
    index = PracIndex.load(out / "prac_set.prac.safetensors")
    assert_index_matches_statistics(index, stats, epochs_each=2)  # 128 rows per process per epoch, gathered once
    assert json.loads((out / "rewind.json").read_text())["step"] == 8  # 8 updates per epoch on each process
    saved = load_file(out / "weights.safetensors")
    assert all(torch.count_nonzero(saved[n][~keep]) == 0 for n, keep in mask.masks.items())
