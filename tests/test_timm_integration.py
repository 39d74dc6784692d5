"""The pieces of the timm training-script hook, one at a time: ids through timm's data pipeline, the task wrapper,
the per-step calls, `prac prune`, the one-line error exit. The real scripts run in tests/test_timm_scripts.py."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from timm.data import FastCollateMixup, Mixup, create_dataset
from timm.models import create_model
from timm.task import ClassificationTask

import prac_plugin
import prac_plugin.timm
from prac_plugin import PracError, TicketMask
from prac_plugin.cli import main as prac_cli
from prac_plugin.integrations.timm.data import IdFastCollateMixup, IdMixup, pack_mixed, unpack
from prac_plugin.integrations.timm.task import PracTask
from prac_plugin.rundir.folder import RunDirectory

N_TRAIN, N_VAL, CLASSES, SIZE = 256, 64, 4, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tiny_hfds):
    return tiny_hfds


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
    from prac_plugin.integrations.timm.data import carry_ids

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
    params = dict(model.named_parameters())
    assert all(torch.count_nonzero(params[n].detach()[~keep]) == 0 for n, keep in mask.masks.items())
    weights, info = RunDirectory(tmp_path / "out").load_state("rewind")
    assert info["step"] == 5 and info["point"] == "1ep1it"
    assert all(torch.equal(weights[k], snapshots[4][k]) for k in weights)  # after the 5th update
    with pytest.raises(PracError, match=r"rewind point 3ep is step 12, beyond the training length of 8 steps"):
        prac_plugin.timm.TimmHook(model, rewind="3ep", output=str(tmp_path)).start(optimizer, num_epochs=2, updates_per_epoch=4)


def test_import_name_does_not_shadow_timm():
    import timm

    assert "site-packages" in timm.__file__ or "prac_plugin" not in timm.__file__
    assert prac_plugin.timm.hook is prac_plugin.integrations.timm.hook.hook




# -- the task wrapper ----------------------------------------------------------------------------------------
def test_wrapped_task_records_counts_folds_and_delegates(data, tmp_path):
    """What timm's loop sees of the wrapped task is the task's own; what the hook sees is every batch and update."""
    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=CLASSES)
    inner = ClassificationTask(model, torch.nn.CrossEntropyLoss(), verbose=False)
    hook = prac_plugin.timm.TimmHook(model, select=True, output=str(tmp_path))
    dataset, _, _ = hook.wrap(create_dataset(f"hfds/{data['path']}", root=str(data["cache"]), split="train"))
    assert hook.wrap_task(inner) is not inner
    task = hook.wrap_task(inner)
    assert isinstance(task, PracTask) and task.get_trainable_module() is model and task.criterion is inner.criterion
    assert task.get_checkpoint_state().keys() == inner.get_checkpoint_state().keys() == {"state_dict"}
    optimizer = torch.optim.SGD(task.get_trainable_module().parameters(), lr=0.01)
    hook.start(optimizer, num_epochs=2, updates_per_epoch=2)
    ids = torch.stack([dataset[i][1] for i in range(8)])  # rows 0..7, two batches of four per epoch
    images = torch.randn(8, 3, SIZE, SIZE)
    for epoch in range(2):
        for batch in (slice(0, 4), slice(4, 8)):
            result = task(images[batch], ids[batch])
            assert result["output"].shape == (4, CLASSES)  # the wrapped task's result, its loss on the plain labels
            assert torch.equal(result["loss"], torch.nn.functional.cross_entropy(result["output"], data["labels"][batch]))
            result["loss"].backward()
            optimizer.step()
            optimizer.zero_grad()
            task.update_ema(step=hook.updates + 1)
        assert hook.epochs_recorded == epoch + 1  # folded at the epoch's last update, no end_epoch call
    assert hook.tracker.presentations[:8].tolist() == [2] * 8 and int(hook.tracker.presentations[8:].sum()) == 0
    assert (tmp_path / prac_plugin.timm.STATE_FILE).is_file()


def test_without_flags_the_task_is_returned_as_it_is():
    model = torch.nn.Linear(2, 2)
    task = ClassificationTask(model, torch.nn.CrossEntropyLoss(), verbose=False)
    assert prac_plugin.timm.TimmHook(model).wrap_task(task) is task


# -- prac prune ----------------------------------------------------------------------------------------------
def test_prune_saved_weights_as_prac_prunes_a_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=CLASSES)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    assert prac_cli(["prune", str(tmp_path / "w.safetensors"), "--model", "test_resnet", "--num-classes", str(CLASSES),
                     "--ignore", "fc", "--scope", "layer", "-o", str(tmp_path / "m1.safetensors")]) == 0
    first = TicketMask.load(tmp_path / "m1.safetensors")
    assert first.equal(TicketMask.dense(model, ignore=["fc"]).prune_magnitude(model, 0.2, "layer"))
    assert prac_cli(["prune", str(tmp_path / "w.safetensors"), "--mask", str(tmp_path / "m1.safetensors"), "--fraction", "0.5",
                     "-o", str(tmp_path / "m2.safetensors")]) == 0
    assert TicketMask.load(tmp_path / "m2.safetensors").equal(first.prune_magnitude(model, 0.5))
    assert "40.00%; 80.00% before" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["output exists", "no mask nor model", "fraction", "other model", "nan weights", "ignore with mask"])
def test_prune_refuses_bad_input_in_one_line(tmp_path, capsys, case):
    model = create_model("test_resnet", num_classes=CLASSES)
    weights = model.state_dict()
    if case == "nan weights":
        weights["fc.weight"][0, 0] = float("nan")
    save_file(weights, str(tmp_path / "w.safetensors"))
    TicketMask.dense(model).save(tmp_path / "m.safetensors")
    base = ["prune", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "new.safetensors")]
    args, message = {
        "output exists": (["--mask", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "m.safetensors")], "exists; choose a new file"),
        "no mask nor model": ([], "name the previous level's mask"),
        "fraction": (["--mask", str(tmp_path / "m.safetensors"), "--fraction", "1.0"], "--fraction 1.0 must be in"),
        "other model": (["--model", "test_resnet"], r"not a state of 'test_resnet'"),
        "nan weights": (["--mask", str(tmp_path / "m.safetensors")], "'fc.weight' holds NaN"),
        "ignore with mask": (["--mask", str(tmp_path / "m.safetensors"), "--ignore", "fc"], "--include/--ignore choose"),
    }[case]
    before = (tmp_path / "m.safetensors").read_bytes()
    assert prac_cli(base + args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "new.safetensors").exists() and (tmp_path / "m.safetensors").read_bytes() == before


# -- the one-line error exit -----------------------------------------------------------------------------------------
def test_a_prac_error_reaching_the_top_of_a_script_is_one_line_and_status_2(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import argparse, prac_plugin.timm\n"
                      "prac_plugin.timm.add_args(argparse.ArgumentParser())\n"
                      "from prac_plugin import PracError\n"
                      "raise PracError('the value X is wrong')\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stderr.strip() == "prac: error: the value X is wrong"
    other = tmp_path / "o.py"
    other.write_text("import argparse, prac_plugin.timm\nprac_plugin.timm.add_args(argparse.ArgumentParser())\nraise KeyError('k')\n")
    result = subprocess.run([sys.executable, str(other)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" in result.stderr  # other errors keep Python's report


# -- start-up ------------------------------------------------------------------------------------------------
def test_prac_help_imports_no_torch_and_the_hook_nothing_timm_has_not_loaded():
    """`prac --help` stays a command line, not a torch start-up; the patch's `import prac_plugin.timm` adds no
    library to what timm's script loads (no datasets, torch-pruning, Accelerate); the LTH architectures still
    register with timm when prac_plugin is imported first. Timings: benchmarks/startup.py."""
    code = "\n".join([
        "import sys",
        "import prac_plugin",
        "from prac_plugin.cli import main",
        "try:",
        "    main(['--help'])",
        "except SystemExit:",
        "    pass",
        "print('TORCH', 'torch' in sys.modules)",
        "import timm",
        "before = set(sys.modules)",
        "import prac_plugin.timm",
        "print('ADDED', sorted(m.split('.')[0] for m in set(sys.modules) - before if not m.startswith('prac_plugin')))",
        "print('HEAVY', sorted(m for m in ('datasets', 'torch_pruning', 'accelerate') if m in sys.modules))",
        "print('MODEL', type(timm.create_model('cifar_resnet20', num_classes=10)).__name__)",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.split(" ", 1)[0] in ("TORCH", "ADDED", "HEAVY", "MODEL"))
    assert lines == {"TORCH": "False", "ADDED": "[]", "HEAVY": "[]", "MODEL": "CifarResNet"}, result.stdout[-2000:]
