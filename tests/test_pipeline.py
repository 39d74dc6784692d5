"""End-to-end runs on digits: files, sparsity per level, resume, refusal of a different run, CLI errors."""

import json
import math
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

import prac_plugin
from prac_plugin import PracError, TicketMask
from prac_plugin.cli import main

from conftest import quick_recipe


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    rows = prac_plugin.run(quick_recipe(), str(out))
    return out, rows


def test_run_directory_files_and_sparsity_per_level(finished_run):
    out, rows = finished_run
    for name in ("recipe.yaml", "init.safetensors", "rewind.safetensors", "rewind.json", "summary.json", "summary.csv", "summary.md", "curve.png"):
        assert (out / name).is_file(), name
    assert [r["level"] for r in rows] == [0, 1, 2]
    total = 64 * 300 + 300 * 100  # LeNet-300-100 on 8x8 inputs, classifier ignored
    remaining = total
    for level in range(3):
        folder = out / f"level_{level:02d}"
        metrics = json.loads((folder / "metrics.json").read_text())
        mask = TicketMask.load(folder / "mask.safetensors")
        assert sorted(mask.masks) == ["fc1.weight", "fc2.weight"]
        assert mask.num_total == total and mask.num_remaining == remaining == metrics["remaining_weights"]
        assert metrics["weights_remaining_pct"] == pytest.approx(100 * remaining / total)
        weights = load_file(folder / "weights.safetensors")
        for name, m in mask.masks.items():  # pruned weights are exactly zero in the saved ticket
            assert torch.count_nonzero(weights[name][~m]) == 0
        assert 0.5 < metrics["test_acc"] <= 1.0 and 0.5 < metrics["val_acc"] <= 1.0
        remaining -= math.ceil(round(0.2 * remaining, 6))
    info = json.loads((out / "rewind.json").read_text())
    level0, level1 = (json.loads((out / f"level_0{i}" / "metrics.json").read_text()) for i in (0, 1))
    assert info["step"] == level0["steps_per_epoch"] == 21  # rewind 1ep: 1294 examples / 64 per batch
    assert level0["optimizer_steps"] == 42 and level0["start_step"] == 0
    assert level1["start_step"] == 21 and level1["optimizer_steps"] == 21 and level1["examples_seen"] == 1294
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["optimizer_steps"] == 42 + 21 + 21
    summary_md = (out / "summary.md").read_text()
    assert "| 2 | 64.00 |" in summary_md
    last_mask = TicketMask.load(out / "level_02" / "mask.safetensors")
    for layer in last_mask.layers():  # the per-layer report matches the saved mask
        assert f"| {layer.name} | {layer.total} | {layer.remaining} | {100 * layer.density:.2f} |" in summary_md
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_ticket_loads_with_timm(finished_run):
    import timm
    from timm.models import load_checkpoint

    out, _ = finished_run
    model = timm.create_model("lenet_300_100", num_classes=10, in_chans=1, img_size=8)
    load_checkpoint(model, str(out / "level_02" / "weights.safetensors"), strict=True)
    mask = TicketMask.load(out / "level_02" / "mask.safetensors", model)
    assert torch.count_nonzero(model.fc1.weight) == mask.masks["fc1.weight"].sum()


def test_level_weights_start_from_the_rewind_point(finished_run):
    """Level 2's surviving weights moved away from the rewind weights but its mask came from level 1's weights."""
    out, _ = finished_run
    rewind = load_file(out / "rewind.safetensors")
    level1 = load_file(out / "level_01" / "weights.safetensors")
    mask1 = TicketMask.load(out / "level_01" / "mask.safetensors")
    mask2 = TicketMask.load(out / "level_02" / "mask.safetensors")
    scores = torch.cat([level1[n].abs().flatten()[mask1.masks[n].flatten()] for n in mask1.masks])
    kept = torch.cat([mask2.masks[n].flatten()[mask1.masks[n].flatten()] for n in mask1.masks])
    assert scores[kept].min() >= scores[~kept].max()  # level 2 pruned level 1's smallest survivors
    assert not torch.equal(rewind["fc1.weight"], load_file(out / "level_02" / "weights.safetensors")["fc1.weight"])


def test_resume_continues_after_last_completed_level(finished_run, tmp_path):
    out, _ = finished_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "level_02" / "metrics.json").unlink()  # as if killed during level 2
    before = {p: (copy / p).stat().st_mtime_ns for p in ("level_00/weights.safetensors", "level_01/weights.safetensors", "rewind.safetensors")}
    messages = []
    from prac_plugin.engine.run_loop import run_recipe
    from prac_plugin.config.recipes import parse_recipe

    rows = run_recipe(parse_recipe(quick_recipe()), str(copy), log=messages.append)
    assert any("levels 0..1 already complete" in m for m in messages)
    assert [r["level"] for r in rows] == [0, 1, 2]
    assert before == {p: (copy / p).stat().st_mtime_ns for p in before}  # nothing completed was rewritten
    original = TicketMask.load(out / "level_02" / "mask.safetensors")
    assert TicketMask.load(copy / "level_02" / "mask.safetensors").equal(original)
    resumed = load_file(copy / "level_02" / "weights.safetensors")
    for name, tensor in load_file(out / "level_02" / "weights.safetensors").items():
        assert torch.equal(resumed[name], tensor), name  # deterministic on CPU: the same ticket


def test_different_recipe_in_existing_directory_is_refused(finished_run):
    out, _ = finished_run
    before = (out / "recipe.yaml").read_text()
    with pytest.raises(PracError, match=r"holds a different run \(train.epochs: 2 there, 3 here\)"):
        prac_plugin.run(quick_recipe(train={"epochs": 3}), str(out))
    assert (out / "recipe.yaml").read_text() == before


def test_conv_model_with_augmentation_layer_scope_and_rewound_optimizer(tmp_path):
    recipe = quick_recipe(
        model={"name": "cifar_resnet20", "kwargs": {}},
        data={"augment": {"random_crop_padding": 1, "hflip": True}},
        train={"epochs": 1, "batch_size": 128, "optimizer": "sgd", "nesterov": True, "schedule": "step", "milestones": [1]},
        ticket={"levels": 1, "scope": "layer", "ignore": ["fc", "conv1"], "rewind": "3it", "rewind_optimizer": True, "fraction": 0.5},
    )
    prac_plugin.run(recipe, str(tmp_path / "r20"))
    mask = TicketMask.load(tmp_path / "r20" / "level_01" / "mask.safetensors")
    assert "conv1.weight" not in mask.masks and "layer1.0.conv1.weight" in mask.masks
    for layer in mask.layers():  # layer scope: every tensor at half density
        assert layer.remaining == layer.total - math.ceil(round(0.5 * layer.total, 6))
    assert (tmp_path / "r20" / "rewind_optimizer.pt").is_file()


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.name=resnet_9000"], "unknown model.name 'resnet_9000'"),
        (["ticket.fraction=1.5"], "prune fraction 1.5 is outside (0, 1)"),
        (["ticket.rewind=50ep"], "rewind point 50ep is step 1050, beyond the training length of 42 steps"),
        (["data.label_column=target"], "data.label_column 'target' is not a column"),
        (["train.epochz=1"], "unknown key train.epochz"),
        (["model.kwargs={}"], "model 'lenet_300_100' fails on the dataset's images of shape (1, 8, 8)"),
        (["train.mixed_precision=fp16"], "train.mixed_precision = 'fp16' needs a GPU; on a CPU use 'bf16' or 'no'"),
    ],
)
def test_cli_bad_input_one_line_error_nonzero_exit(tmp_path, capsys, overrides, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(quick_recipe()))
    args = ["run", str(recipe), "--output", str(tmp_path / "out")]
    for item in overrides:
        args += ["--set", item]
    code, _, err = _cli(args, capsys)
    assert code == 2
    assert err.startswith("prac: error: ") and message in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # a failed start leaves nothing that would block the corrected recipe


def test_cli_refuses_foreign_directory_and_reports(finished_run, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(quick_recipe()))
    code, _, err = _cli(["run", str(recipe), "--output", str(foreign)], capsys)
    assert code == 2 and "is not a prac run directory" in err
    assert (foreign / "notes.txt").read_text() == "precious" and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    out, rows = finished_run
    code, stdout, _ = _cli(["report", str(out)], capsys)
    assert code == 0 and "| level | weights remaining % |" in stdout
    assert f"| 1 | 80.00 | {rows[1]['val_acc']:.4f} | {rows[1]['test_acc']:.4f} |" in stdout
    code, _, err = _cli(["report", str(foreign)], capsys)
    assert code == 2 and "not a prac run directory" in err


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "prac_plugin", "run", "--help"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "--set" in result.stdout and "--output" in result.stdout


def test_bf16_autocast_and_gradient_clipping_change_the_math_but_keep_the_mask_rules(tmp_path):
    base = quick_recipe(ticket={"levels": 1})
    prac_plugin.run(base, str(tmp_path / "fp32"))
    prac_plugin.run(quick_recipe(ticket={"levels": 1}, train={"mixed_precision": "bf16", "grad_clip": 0.5}), str(tmp_path / "bf16"))
    m32, m16 = (json.loads((tmp_path / d / "level_01" / "metrics.json").read_text()) for d in ("fp32", "bf16"))
    assert m32["train_loss"] != m16["train_loss"]  # autocast really ran in bfloat16
    assert m16["remaining_weights"] == m32["remaining_weights"] and m16["test_acc"] > 0.8
    mask = TicketMask.load(tmp_path / "bf16" / "level_01" / "mask.safetensors")
    weights = load_file(tmp_path / "bf16" / "level_01" / "weights.safetensors")
    assert all(torch.count_nonzero(weights[n][~m]) == 0 for n, m in mask.masks.items())


def test_torch_compile_and_channels_last_switches(tmp_path):
    """torch.compile (dynamo, eager backend: no C++ toolchain needed) runs the same ops: identical weights,
    clean state_dict keys; channels-last trains a conv net with its weights in that layout."""
    prac_plugin.run(quick_recipe(ticket={"levels": 1}, train={"compile": "eager"}), str(tmp_path / "compiled"))
    prac_plugin.run(quick_recipe(ticket={"levels": 1}), str(tmp_path / "plain"))
    compiled, plain = (load_file(tmp_path / d / "level_01" / "weights.safetensors") for d in ("compiled", "plain"))
    assert compiled.keys() == plain.keys() and all(torch.equal(compiled[k], plain[k]) for k in plain)
    metrics = json.loads((tmp_path / "compiled" / "level_01" / "metrics.json").read_text())
    assert metrics["compiled"] is True
    assert json.loads((tmp_path / "plain" / "level_01" / "metrics.json").read_text())["compiled"] is False

    recipe = quick_recipe(model={"name": "cifar_resnet20", "kwargs": {}}, ticket={"levels": 1}, train={"epochs": 1, "channels_last": True})
    recipe["ticket"]["rewind"] = "0it"
    prac_plugin.run(recipe, str(tmp_path / "cl"))
    metrics = json.loads((tmp_path / "cl" / "level_01" / "metrics.json").read_text())
    assert metrics["channels_last"] is True and metrics["test_acc"] > 0.5
    mask = TicketMask.load(tmp_path / "cl" / "level_01" / "mask.safetensors")
    weights = load_file(tmp_path / "cl" / "level_01" / "weights.safetensors")
    assert all(bool((weights[name][~m] == 0).all()) for name, m in mask.masks.items())


def test_mixed_precision_follows_the_launcher_unless_the_recipe_says_otherwise(monkeypatch):
    from prac_plugin.engine.engine import effective_precision

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert effective_precision("no") == "bf16" and effective_precision("bf16") == "bf16"
    with pytest.raises(PracError, match="accelerate launch asks for mixed precision 'bf16' but train.mixed_precision = 'fp16'"):
        effective_precision("fp16")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert effective_precision("no") == "no" and effective_precision("fp16") == "fp16"


def test_a_finished_levels_optimizer_is_released_from_accelerate():
    from accelerate import Accelerator

    from prac_plugin.compat.accelerate_private import release_optimizer

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    first = accelerator.prepare_optimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    second = accelerator.prepare_optimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    release_optimizer(accelerator, first)
    assert accelerator._optimizers == [second]


def test_cli_version_names_the_installed_package(capsys):
    from prac_plugin.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"prac_plugin {prac_plugin.__version__}"


def test_written_files_follow_the_umask_so_shared_run_folders_stay_readable(finished_run):
    import os
    import stat

    from prac_plugin.rundir.files import _FILE_MODE

    files = [p for p in finished_run[0].rglob("*") if p.is_file()]
    assert files and _FILE_MODE & 0o044  # the usual 022 umask: readable by group and others
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in files} == {_FILE_MODE}
