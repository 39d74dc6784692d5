"""Structured tickets: history replay on rewind weights, CNN and ViT pruning, floors, export/load, a digits run, errors."""

import copy
import json
import math

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

import prac_plugin
from prac_plugin import PracError, load_structured_ticket
from prac_plugin.cli import main
from prac_plugin.strategies.structured.channels import ChannelPruning, attention_modules, count_macs_params, layer_widths, prune_level, replay
from prac_plugin.strategies.structured.latency import fold_batchnorm, latency_report

from conftest import quick_recipe, undeclared_files


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Distinct values in random order in every float tensor (weights and BN statistics): each value marks its position."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                n = tensor.numel()
                values = (torch.randperm(n, generator=generator) + 1).float() / n  # distinct magnitudes in (0, 1]
                if not name.endswith("running_var"):
                    values *= torch.randint(0, 2, (n,), generator=generator) * 2 - 1
                tensor.copy_(values.view(tensor.shape))
    return model


def _positions(compact: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Flat index in ``dense`` of every value of ``compact`` (values are distinct)."""
    values, order = dense.flatten().sort()
    found = torch.searchsorted(values, compact.flatten()).clamp(max=values.numel() - 1)
    assert torch.equal(values[found], compact.flatten()), "a compact value is not a dense value"
    return order[found]


def _vit(**kwargs) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, depth=2, **kwargs)


@pytest.mark.parametrize("name", ["cifar_resnet20", "vit"])
def test_replaying_history_on_rewind_weights_equals_slicing_them(name):
    """Two levels pruned on 'trained' weights, replayed on a fresh model holding 'rewind' weights: every tensor
    (conv, linear, BN running statistics, ViT pos_embed/cls_token) equals the rewind tensor sliced at the kept channels."""
    create = (lambda: _vit()) if name == "vit" else (lambda: timm.create_model("cifar_resnet20", num_classes=10))
    example = torch.zeros(1, 3, 32, 32)
    dense = create()
    trained, rewind = _randomize(create(), 1), _randomize(create(), 2)
    cfg = ChannelPruning(fraction=0.3, scope="global")
    compact = copy.deepcopy(trained)
    levels = [prune_level(compact, example, cfg, dense)[0] for _ in range(2)]
    assert all(level["history"] for level in levels)
    ticket = replay(copy.deepcopy(rewind), levels, example)
    theirs, mine, reference = compact.state_dict(), ticket.state_dict(), rewind.state_dict()
    assert mine.keys() == theirs.keys()
    shrunk = 0
    for key, value in theirs.items():
        if not value.is_floating_point():
            continue
        expected = reference[key].flatten()[_positions(value, trained.state_dict()[key])].view(value.shape)
        assert torch.equal(mine[key], expected), key
        shrunk += value.numel() < reference[key].numel()
    assert shrunk > 10  # BN running statistics are among the compared tensors: tracing must not have moved them


def test_cnn_layer_scope_halves_every_group_exactly():
    """cifar_resnet20 at half the channels in every layer is cifar_resnet20 of width 8: same shapes, MACs, parameters."""
    example = torch.zeros(1, 3, 32, 32)
    dense = timm.create_model("cifar_resnet20", num_classes=10)
    model = copy.deepcopy(dense)
    prune_level(model, example, ChannelPruning(fraction=0.5, scope="layer"), dense)
    narrow = timm.create_model("cifar_resnet20", num_classes=10, width=8)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in narrow.state_dict().items()}
    macs, params = count_macs_params(model, example)
    dense_macs, dense_params = count_macs_params(dense, example)
    assert (macs, params) == count_macs_params(narrow, example)
    assert 0.24 < macs / dense_macs < 0.27 and 0.24 < params / dense_params < 0.27  # channels halve in and out


def test_timm_resnet18_prunes_every_conv_and_keeps_the_classifier():
    example = torch.zeros(1, 3, 32, 32)
    dense = timm.create_model("resnet18", num_classes=10)
    model = copy.deepcopy(dense)
    prune_level(model, example, ChannelPruning(fraction=0.5, scope="layer"), dense)
    before, after = layer_widths(dense), layer_widths(model)
    for name, (out, inp) in before.items():
        if name == "fc":
            assert after[name] == (10, inp // 2)
        else:
            assert after[name][0] == out // 2, name
    macs, params = count_macs_params(model, example)
    dense_macs, dense_params = count_macs_params(dense, example)
    assert 0.24 < macs / dense_macs < 0.28 and 0.24 < params / dense_params < 0.27
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def _attention_consistent(model: nn.Module) -> list[tuple[int, int]]:
    shapes = []
    for attn in attention_modules(model).values():
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim == 3 * attn.attn_dim
        assert attn.proj.in_features == attn.attn_dim and attn.scale == attn.head_dim ** -0.5
        shapes.append((attn.num_heads, attn.head_dim))
    return shapes


@pytest.mark.parametrize("mode", ["heads", "head_dims"])
def test_vit_attention_stays_consistent(mode):
    """Heads (or head dims) go, timm's attention attributes follow, and fused and unfused attention agree."""
    example = torch.zeros(1, 3, 32, 32)
    dense = _vit()
    model = copy.deepcopy(dense)
    level, _ = prune_level(model, example, ChannelPruning(fraction=0.3, scope="layer", attention=mode), dense)
    shapes = _attention_consistent(model)
    expected = (2, 64) if mode == "heads" else (3, int(64 * 0.7))  # heads: ceil(0.3 * 3) = 1 of 3 goes; dims: 64 - 44 = 20 go
    assert shapes == [expected, expected]
    assert level["attention"] == {name: {"num_heads": expected[0], "head_dim": expected[1]} for name in ("blocks.0.attn", "blocks.1.attn")}
    assert model.blocks[0].mlp.fc1.out_features == int(768 * 0.7)
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        fused = model(images)
        for attn in attention_modules(model).values():
            attn.fused_attn = False
        assert torch.allclose(model(images), fused, atol=1e-5)
    rebuilt = replay(_vit(), [level], example)  # a fresh model gets the same attention attributes from the history
    assert _attention_consistent(rebuilt) == shapes
    macs, params = count_macs_params(model, example)
    dense_macs, dense_params = count_macs_params(dense, example)
    assert 0.35 < macs / dense_macs < 0.75 and 0.35 < params / dense_params < 0.75


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_min_keep_floor_bounds_every_layer(scope):
    """Pruning 90% per level three times would empty layers; min_keep holds each at 25% of its dense channels."""
    example = torch.zeros(1, 3, 32, 32)
    dense = timm.create_model("cifar_resnet20", num_classes=10)
    model = copy.deepcopy(dense)
    cfg = ChannelPruning(fraction=0.9, scope=scope, min_keep=0.25)
    for _ in range(3):
        _, at_floor = prune_level(model, example, cfg, dense)
    widths, dense_widths = layer_widths(model), layer_widths(dense)
    for name, (out, _) in dense_widths.items():
        if name != "fc":
            assert widths[name][0] == math.ceil(0.25 * out), name  # exactly at the floor after three 90% levels
    assert "layer1.0.conv1" in at_floor and "layer3.2.conv1" in at_floor


def test_min_keep_floor_keeps_attention_heads():
    dense = _vit()
    model = copy.deepcopy(dense)
    for _ in range(2):
        prune_level(model, torch.zeros(1, 3, 32, 32), ChannelPruning(fraction=0.9, scope="global", min_keep=0.5), dense)
    assert _attention_consistent(model) == [(2, 64), (2, 64)]  # ceil(0.5 * 3) heads stay
    assert model.blocks[0].mlp.fc1.out_features == 384 and model.patch_embed.proj.out_channels == 96


class _NumpyOp(nn.Module):
    """Runs without autograd (as timm's checks do) but not while torch-pruning traces with gradients."""

    def forward(self, x):
        return torch.from_numpy(x.numpy())


def test_a_layer_torch_pruning_cannot_trace_is_named():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), _NumpyOp(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 8, 8))  # fine without autograd
    with pytest.raises(PracError, match=r"torch-pruning cannot trace Sequential: layer '2' \(_NumpyOp\) fails: Can't call numpy"):
        prune_level(model, torch.zeros(1, 1, 8, 8), ChannelPruning(fraction=0.5), copy.deepcopy(model))


class _DataDependent(nn.Module):
    """Branches on a tensor's value: runs eagerly, but torch.fx cannot trace it."""

    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_folded_batchnorm_gives_the_same_outputs_and_leaves_the_model_alone():
    generator = torch.Generator().manual_seed(3)  # everything seeded: the tolerance must hold on every run
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = timm.create_model("cifar_resnet20", num_classes=10, in_chans=1).train()
    with torch.no_grad():  # non-trivial BN parameters and statistics, of realistic size (activations stay O(1))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, 0.5, 1.5), (module.bias, -0.1, 0.1),
                                          (module.running_mean, -0.1, 0.1), (module.running_var, 0.5, 1.5)):
                    tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = torch.randn(4, 1, 28, 28, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_latency_report_times_both_forms_or_says_why_not():
    dense = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    ticket = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    report = latency_report(dense, ticket, [1, 8, 8], (1, 2), repeats=2)
    assert set(report["batches"]) == set(report["folded"]["batches"]) == {"1", "2"}
    assert all(row["speedup"] == pytest.approx(row["dense_ms"] / row["ticket_ms"]) for row in report["folded"]["batches"].values())
    untraceable = nn.Sequential(*ticket, _DataDependent())
    report = latency_report(dense, untraceable, [1, 8, 8], (1,), repeats=2)
    assert "could not trace" in report["folded"]["unavailable"] and "_folded" not in str(report["batches"])
    assert set(report["batches"]) == {"1"}


class _FixedView(nn.Module):
    """Assumes 8 channels: runs on the dense model, not on a pruned one."""

    def forward(self, x):
        return x.view(x.shape[0], 8, x.shape[2], x.shape[3])


class _RigidNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.rigid = _FixedView()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.fc(self.conv2(self.rigid(self.bn(self.conv(x)))).mean((2, 3)))


@timm.models.register_model
def prac_test_rigid_net(pretrained: bool = False, **kwargs) -> nn.Module:
    return _RigidNet(**kwargs)


def test_a_model_that_breaks_when_pruned_fails_before_the_run_starts_naming_the_layer(tmp_path):
    out = tmp_path / "rigid"
    with pytest.raises(PracError, match=r"layer 'rigid' \(_FixedView\)"):
        prac_plugin.run(quick_recipe(model={"name": "prac_test_rigid_net", "kwargs": {}}, ticket=_structured_ticket()), str(out))
    assert not out.exists()


@pytest.mark.parametrize("key, value, named", [("fraction", 1.5, "1.5"), ("min_keep", 0.0, "0.0"), ("attention", "rows", "rows"), ("round_to", 0, "0")])
def test_bad_options_name_the_value(key, value, named):
    with pytest.raises(PracError, match=rf"ticket\.{key}.*{named}"):
        prac_plugin.parse_recipe(quick_recipe(ticket={**_structured_ticket(), key: value}))


def _structured_ticket() -> dict:
    return {"strategy": "structured", "levels": 2, "fraction": 0.3, "scope": "global", "rewind": "1ep", "ignore": []}


@pytest.fixture(scope="module")
def structured_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "structured"
    recipe = quick_recipe(model={"name": "cifar_resnet20", "kwargs": {"width": 8}}, train={"epochs": 3}, ticket=_structured_ticket())
    rows = prac_plugin.run(recipe, str(out))
    return out, rows, recipe


def test_digits_run_writes_smaller_models_per_level(structured_run):
    out, rows, _ = structured_run
    assert [r["level"] for r in rows] == [0, 1, 2]
    metrics = [json.loads((out / f"level_{i:02d}" / "metrics.json").read_text()) for i in range(3)]
    dense = timm.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=8)
    dense_conv = sum(p.numel() for n, p in dense.named_parameters() if n.endswith(".weight") and p.dim() > 1)
    for level, m in enumerate(metrics):
        weights = load_file(out / f"level_{level:02d}" / "weights.safetensors")
        remaining = sum(w.numel() for n, w in weights.items() if n.endswith(".weight") and w.dim() > 1)
        assert m["prunable_weights"] == dense_conv and m["remaining_weights"] == remaining  # against the dense model
        assert m["weights_remaining_pct"] == pytest.approx(100 * remaining / dense_conv)
        assert m["params"] == sum(w.numel() for n, w in weights.items() if "running" not in n and "num_batches" not in n)
        assert 0.5 < m["test_acc"] <= 1.0
        structure = json.loads((out / f"level_{level:02d}" / "structure.json").read_text())
        assert len(structure["levels"]) == level and structure["model"]["kwargs"] == {"width": 8, "num_classes": 10, "in_chans": 1}
    pct = [m["weights_remaining_pct"] for m in metrics]
    macs = [m["macs_remaining_pct"] for m in metrics]
    assert pct[0] == 100.0 and macs[0] == 100.0 and pct[0] > pct[1] > pct[2] and macs[1] > macs[2]
    assert 40 < macs[1] < 70  # 30% of the channels: MACs near 0.7^2 = 49%
    assert metrics[1]["start_step"] == 21 and metrics[1]["optimizer_steps"] == 42  # rewound to 1ep, trained to the end
    assert metrics[2]["structured_at_floor"] == [] or all(isinstance(n, str) for n in metrics[2]["structured_at_floor"])
    summary = (out / "summary.md").read_text()
    assert "| params % | MACs % |" in summary and f"| {macs[2]:.2f} |" in summary
    assert "Layers at the ticket.min_keep floor (10% of their dense channels)" in summary
    assert undeclared_files(out) == []  # structure.json is the file the strategy declares


def test_rewind_weights_are_the_start_of_each_level(structured_run):
    """The kept channels of level 2's ticket start from the rewind point: replaying its history on rewind.safetensors
    gives the values level 2 trained from (checked through the BN running variance, which training moves)."""
    out, _, _ = structured_run
    structure = json.loads((out / "level_02" / "structure.json").read_text())
    ticket = timm.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=8)
    ticket.load_state_dict(load_file(out / "rewind.safetensors"))
    replay(ticket, structure["levels"], torch.zeros(1, 1, 8, 8))
    trained = load_file(out / "level_02" / "weights.safetensors")
    assert {k: tuple(v.shape) for k, v in ticket.state_dict().items()} == {k: tuple(v.shape) for k, v in trained.items()}
    rewind = load_file(out / "rewind.safetensors")
    assert set(ticket.bn1.running_var.tolist()) <= set(rewind["bn1.running_var"].tolist())


def _evaluate(model: nn.Module, recipe: dict, normalization: dict) -> float:
    from prac_plugin.data.sources import BatchSource, load_data

    cfg = prac_plugin.parse_recipe(recipe).data
    data = load_data(cfg)
    source = BatchSource(data.test, data, cfg, normalization["mean"], normalization["std"], torch.device("cpu"), 0, 1)
    correct = 0
    with torch.no_grad():
        for images, labels, _ in source.batches(torch.arange(len(data.test)), 1024, training=False):
            correct += int((model(images).argmax(1) == labels).sum())
    return correct / len(data.test)


def test_export_reloads_to_the_trained_ticket(structured_run, tmp_path, capsys):
    out, _, recipe = structured_run
    target = tmp_path / "ticket"
    assert main(["export", str(out), "--level", "2", "-o", str(target), "--repeats", "3", "--batch-sizes", "1,8"]) == 0
    assert "Load it with: prac_plugin.load_structured_ticket" in capsys.readouterr().out
    info = json.loads((target / "ticket.json").read_text())
    metrics = json.loads((out / "level_02" / "metrics.json").read_text())
    assert info["macs"] == metrics["macs"] and info["params"] == metrics["params"] and info["source"]["level"] == 2
    assert set(info["latency"]["batches"]) == {"1", "8"} and info["latency"]["batches"]["8"]["ticket_ms"] > 0
    assert set(info["latency"]["folded"]["batches"]) == {"1", "8"}  # cifar_resnet20 traces: BatchNorm folded too
    model = load_structured_ticket(target)
    saved = load_file(out / "level_02" / "weights.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert _evaluate(model, recipe, metrics["normalization"]) == pytest.approx(metrics["test_acc"], abs=1e-6)  # same predictions
    timm_model = load_structured_ticket(target / "ticket.json")
    timm.models.load_checkpoint(timm_model, str(target / "weights.safetensors"), strict=True)  # a timm checkpoint


def test_resume_rebuilds_the_compact_architecture(structured_run, tmp_path):
    """A run whose last completed level is a smaller model continues from it and plans the same next level."""
    out, _, recipe = structured_run
    copy_dir = tmp_path / "resumed"
    import shutil

    shutil.copytree(out, copy_dir)
    (copy_dir / "level_02" / "metrics.json").unlink()
    prac_plugin.run(recipe, str(copy_dir))
    for name in ("structure.json",):
        assert json.loads((copy_dir / "level_02" / name).read_text()) == json.loads((out / "level_02" / name).read_text())
    mine, theirs = load_file(copy_dir / "level_02" / "weights.safetensors"), load_file(out / "level_02" / "weights.safetensors")
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in theirs.items()}


def test_a_history_that_does_not_fit_is_an_error_naming_it(structured_run, tmp_path):
    out, _, _ = structured_run
    target = tmp_path / "ticket"
    prac_plugin.export_ticket(out, 1, target, batch_sizes=(1,), repeats=1)
    info = json.loads((target / "ticket.json").read_text())

    def broken(change) -> dict:
        data = copy.deepcopy(info)
        change(data)
        (target / "ticket.json").write_text(json.dumps(data))
        return data

    first = info["levels"][0]["history"][0]
    broken(lambda d: d["levels"][0]["history"][0][2].append(999))
    with pytest.raises(PracError, match=rf"index 999 of layer {first[0]!r}"):
        load_structured_ticket(target)
    broken(lambda d: d["levels"][0]["history"][0].__setitem__(0, "layer9.conv"))
    with pytest.raises(PracError, match="layer 'layer9.conv', which CifarResNet does not have"):
        load_structured_ticket(target)
    broken(lambda d: d["model"]["kwargs"].__setitem__("width", 16))  # another model: the weights no longer fit
    with pytest.raises(PracError, match=r"tensor 'conv1.weight' has shape"):
        load_structured_ticket(target)
    broken(lambda d: d.__setitem__("format_version", 7))
    with pytest.raises(PracError, match="format_version 7"):
        load_structured_ticket(target)


def test_export_refuses_other_runs_and_levels(structured_run, tmp_path):
    out, _, _ = structured_run
    with pytest.raises(PracError, match="--level 5 is not a completed level"):
        prac_plugin.export_ticket(out, 5, tmp_path / "t")
    ltr = tmp_path / "ltr"
    (ltr / "level_00").mkdir(parents=True)
    (ltr / "recipe.yaml").write_text(yaml.safe_dump(quick_recipe()))
    (ltr / "level_00" / "metrics.json").write_text("{}")
    assert main(["export", str(ltr)]) == 2


@pytest.mark.slow
def test_two_processes_train_the_same_smaller_model(structured_run, tmp_path):
    """Under torchrun every process prunes its unwrapped copy identically (DDP would refuse differing shapes)."""
    from test_multiprocess import run_two_processes

    _, _, recipe = structured_run
    run_two_processes(recipe, tmp_path)
    metrics = json.loads((tmp_path / "two" / "level_02" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["macs_remaining_pct"] < 35 and metrics["test_acc"] > 0.5
    ticket = prac_plugin.export_ticket(tmp_path / "two", 2, tmp_path / "ticket", batch_sizes=(1,), repeats=1)[1]
    assert ticket["macs"] == metrics["macs"]
