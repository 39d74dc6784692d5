"""Masks under FSDP2 on two CPU processes (gloo): pruning over sharded weights gives exactly the single-process
mask, and the sharded enforcer keeps pruned weights exactly zero while training only on local shards."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from prac_plugin import PracError, TicketMask
from prac_plugin.tickets.masks import MaskEnforcer

WORLD = 2
# (scope, fraction, per-layer floor) for two levels each, starting from the dense mask
CASES = [("global", 0.2, 0), ("global", 0.9, 0), ("layer", 0.5, 0), ("global", 0.8, 3), ("layer", 0.95, 2)]


def _model() -> nn.Module:
    """Rows that do not split evenly over two processes (7, 5), and a layer of one row (the second process holds
    none of it); weights rounded so that many magnitudes tie."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((p * 10).round() / 10)
    return model


def _shard(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fully_shard(layer)
    return fully_shard(model)


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from prac_plugin.tickets.sharded import ShardedMaskEnforcer, prune_sharded

        out = {}
        for scope, fraction, floor in CASES:
            reference, sharded = _model(), _shard(_model())
            expected = got = TicketMask.dense(reference)
            for _ in range(2):
                expected = expected.prune_magnitude(reference, fraction, scope, floor)
                got = prune_sharded(got, sharded, fraction, scope, floor)
            out[(scope, fraction, floor)] = (expected.equal(got), got.num_remaining, expected.num_remaining)

        # training: the same global batch, split over the processes, against one process on all of it
        mask = TicketMask.dense(_model()).prune_magnitude(_model(), 0.7, "global")
        reference, sharded = _model(), _shard(_model())
        enforcers = MaskEnforcer(reference, mask), ShardedMaskEnforcer(sharded, mask)
        optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (reference, sharded)]
        for e in enforcers:
            e.apply()
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            x, y = torch.randn(8, 3, 6, 6, generator=generator), torch.randn(8, 1, generator=generator)
            for model, enforcer, optimizer, (xs, ys) in zip((reference, sharded), enforcers, optimizers,
                                                            ((x, y), (x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]))):
                optimizer.zero_grad()
                nn.functional.mse_loss(model(xs), ys).backward()
                enforcer.mask_gradients()
                optimizer.step()
                enforcer.apply()
        full = {n: p.full_tensor() for n, p in sharded.named_parameters()}
        ref = dict(reference.named_parameters())
        out["zeros"] = all(bool((full[n][~m] == 0).all()) for n, m in mask.masks.items())
        out["close"] = all(torch.allclose(full[n], ref[n].detach(), atol=1e-5) for n in ref)
        out["moved"] = any(not torch.equal(full[n], _model().state_dict()[n]) for n in mask.masks)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded_results():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
        return dict(results)


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{f}-floor{m}" for s, f, m in CASES])
def test_pruning_sharded_weights_gives_the_single_process_mask_on_every_process(sharded_results, case):
    for rank in range(WORLD):
        equal, got, expected = sharded_results[rank][case]
        assert equal, f"rank {rank}: {got} weights kept, the single-process mask keeps {expected}"


def test_the_ties_are_real(sharded_results):
    """The rounded weights tie at many magnitudes: a per-shard rule or a broken tie order would show."""
    weights = torch.cat([p.detach().abs().flatten() for n, p in _model().named_parameters() if n.endswith("weight")])
    assert weights.unique().numel() < weights.numel() // 4


def test_the_sharded_enforcer_trains_like_one_process_and_keeps_pruned_weights_zero(sharded_results):
    for rank in range(WORLD):
        assert sharded_results[rank]["zeros"], f"rank {rank}: a pruned weight is not exactly zero"
        assert sharded_results[rank]["moved"], "the weights did not train: the comparison would prove nothing"
        assert sharded_results[rank]["close"], f"rank {rank}: the sharded run left the single-process run's weights"


def test_a_layout_other_than_fsdp2s_default_is_refused(monkeypatch):
    from torch.distributed.tensor import Replicate

    from prac_plugin.tickets import sharded

    class FakeMesh:
        ndim = 2

    class FakeDTensor:
        device_mesh = FakeMesh()
        placements = (Replicate(), Replicate())

    monkeypatch.setattr(sharded, "DTensor", FakeDTensor)
    with pytest.raises(PracError, match=r"FSDP2's default sharding only"):
        sharded._check_layout("fc.weight", FakeDTensor())
