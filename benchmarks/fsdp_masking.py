"""Per-step cost of ticket masks under FSDP2: training steps with the sharded enforcer (gradients and weights
masked on local shards) against the same FSDP2 steps without masks, in the same processes, blocks alternated.

    python benchmarks/fsdp_masking.py [--steps 30] [--rounds 5] [--model cifar_resnet20] [--batch 64]

Runs two processes on this machine (gloo on CPU, or NCCL when two GPUs are there); prints the median step time of
each and their ratio. Every figure in RESULTS.md names the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.device_count() >= world
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    try:
        import timm
        from torch.distributed.fsdp import fully_shard

        import prac_plugin  # noqa: F401  (registers the LTH architectures into timm)
        from prac_plugin import TicketMask
        from prac_plugin.tickets.sharded import ShardedMaskEnforcer

        torch.manual_seed(0)
        model = timm.create_model(args.model, num_classes=10).to(device)
        mask = TicketMask.dense(model).prune_magnitude(model, 0.8)
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fully_shard(module)
        fully_shard(model)
        enforcer = ShardedMaskEnforcer(model, mask)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(args.batch // world, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (args.batch // world,), device=device)

        def block(masked: bool) -> float:
            dist.barrier()
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                if masked:
                    enforcer.mask_gradients()
                optimizer.step()
                if masked:
                    enforcer.apply()
            if cuda:
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / args.steps

        block(True), block(False)  # warm-up
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for masked in (True, False):
                times[masked].append(block(masked))
        if rank == 0:
            results.update(masked=statistics.median(times[True]), plain=statistics.median(times[False]),
                           device=torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores), gloo")
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), args, results), nprocs=2, join=True)
        r = dict(results)
    print(f"{args.model}, batch {args.batch} over 2 processes, FSDP2, {r['device']}: "
          f"masked {r['masked'] * 1e3:.1f} ms/step, unmasked {r['plain'] * 1e3:.1f} ms/step, "
          f"ratio {r['masked'] / r['plain']:.3f}")


if __name__ == "__main__":
    main()
