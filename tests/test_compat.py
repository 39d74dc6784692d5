"""The private internals of Accelerate and torch-pruning that `prac_plugin.compat` uses still exist.

When one of these fails after an upgrade, the named attribute moved: fix the one function in
``prac_plugin/compat/`` that uses it (and its CHECKED_VERSION), nothing else in the package touches it.
"""

import torch
import torch_pruning as tp
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState

from prac_plugin.compat import accelerate_private
from prac_plugin.compat import torch_private
from prac_plugin.compat import torch_pruning_private


def test_accelerate_private_names_exist():
    assert isinstance(AcceleratorState._shared_state, dict)
    assert callable(AcceleratorState._reset_state)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = accelerator.prepare_optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    assert isinstance(optimizer, AcceleratedOptimizer)
    assert accelerate_private.prepared_optimizers(accelerator)[-1] is optimizer
    inner, scaler = accelerate_private.unwrapped_optimizer(optimizer)
    assert isinstance(inner, torch.optim.SGD) and scaler is None and hasattr(optimizer, "scaler")
    accelerate_private.release_optimizer(accelerator, optimizer)
    assert optimizer not in accelerate_private.prepared_optimizers(accelerator)
    assert accelerate_private.shared_state() is AcceleratorState._shared_state


def test_torch_pruning_private_names_exist():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    pruner = tp.pruner.BasePruner(model, torch.randn(1, 3, 8, 8), importance=tp.importance.GroupMagnitudeImportance(),
                                  pruning_ratio=0.5, ignored_layers=[model[2]])
    graph = pruner.DG
    assert callable(type(graph).check_pruning_group)
    assert isinstance(torch_pruning_private.channel_groups(pruner, True), dict)
    assert isinstance(torch_pruning_private.channel_groups(pruner, False), dict)
    with torch_pruning_private.group_check_deferred(graph):
        assert graph.check_pruning_group(None) is True
        groups = list(pruner.step(interactive=True))
    assert "check_pruning_group" not in vars(graph)  # the class's own check is back
    assert groups and all(torch_pruning_private.passes_group_check(graph, group) in (True, False) for group in groups)


def test_timm_resume_epoch_is_the_epoch_timm_resumes_at(tmp_path):
    """`timm_private.resume_epoch` repeats the epoch rule of timm's resume functions: compared on checkpoints
    timm's own CheckpointSaver writes (the hook reads the epoch before the script resumes)."""
    import argparse

    import timm
    from timm.models import resume_checkpoint
    from timm.utils import CheckpointSaver

    from prac_plugin.compat import timm_private

    model = timm.create_model("test_resnet", num_classes=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = CheckpointSaver(model=model, optimizer=optimizer, args=argparse.Namespace(model="test_resnet"),
                            checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path))
    for epoch in (0, 1):
        saver.save_checkpoint(epoch=epoch, metric=float(epoch))
        last = str(tmp_path / "last.pth.tar")
        assert timm_private.resume_epoch(last) == resume_checkpoint(model, last, log_info=False) == epoch + 1
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # no epoch: timm resumes without one
    assert timm_private.resume_epoch(str(tmp_path / "bare.pth")) is None
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    assert timm_private.resume_epoch(str(tmp_path / "junk.pth")) is None  # timm's own resume says what is wrong


def test_accelerate_autocast_wrapper_is_where_the_captured_step_expects_it():
    """Under mixed precision Accelerate replaces ``model.forward`` by an autocast wrapper and keeps the module's own
    in ``_original_forward``; the captured step puts that back for its own autocast (cast cache off)."""
    accelerate_private.reset_shared_state()
    try:
        accelerator = Accelerator(cpu=True, mixed_precision="bf16")
        model = accelerator.prepare_model(torch.nn.Linear(3, 2))
        wrapped = model.__dict__["forward"]
        assert model._original_forward.__func__ is torch.nn.Linear.forward
        with accelerate_private.autocast_forward_removed(model):
            assert model.forward == model._original_forward
            assert model(torch.randn(1, 3)).dtype == torch.float32  # no autocast of its own
        assert model.__dict__["forward"] is wrapped
        assert model(torch.randn(1, 3)).dtype == torch.float32  # Accelerate's: autocast, outputs back to fp32
        plain = torch.nn.Linear(3, 2)
        with accelerate_private.autocast_forward_removed(plain):
            assert "forward" not in plain.__dict__
    finally:
        accelerate_private.reset_shared_state()


def test_torch_private_names_exist():
    """The captured step's BatchNorm check and its test for a compiled model (torch.compile's wrapper)."""
    (base,) = torch_private.batchnorm_types()
    for norm in (torch.nn.BatchNorm1d(2), torch.nn.BatchNorm2d(2), torch.nn.SyncBatchNorm(2)):
        assert isinstance(norm, base)
    assert not isinstance(torch.nn.LayerNorm(2), base) and not isinstance(torch.nn.GroupNorm(1, 2), base)
    model = torch.nn.Linear(2, 2)
    compiled = torch.compile(model, backend="eager")
    assert torch_private.is_compiled_module(compiled) and compiled._orig_mod is model
    assert not torch_private.is_compiled_module(model)


def test_a_lost_peer_is_told_from_a_fault_of_this_process():
    """What gloo raises when another process dies mid-collective (a plain RuntimeError, its text as seen in
    tests/test_multinode.py) and NCCL's DistBackendError are a lost peer; other runtime errors are not."""
    import torch.distributed as dist

    gloo = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
                        "[127.0.0.1]:56984: Connection reset by peer. This is typically caused by a remote worker hanging")
    assert torch_private.is_lost_peer(gloo) and torch_private.is_lost_peer(dist.DistBackendError("NCCL watchdog"))
    assert not torch_private.is_lost_peer(RuntimeError("CUDA out of memory")) and not torch_private.is_lost_peer(ValueError("x"))
    assert dist.DistNetworkError.__mro__[1] is dist.DistError and issubclass(dist.DistError, RuntimeError)  # caught as RuntimeError
