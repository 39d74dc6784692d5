"""Peak memory of a CTS search step against a plain training step, on a model whose weights dominate.

Each mode runs in a fresh subprocess (peak RSS is per process and never decreases): timm's resnet50
(25.6M parameters, ~98 MiB of fp32 weights), batch 8 of 3x64x64 random images, a few steps; the figure is
the peak resident set minus the resident set after building the model and the data.

    python benchmarks/cts_memory.py [--model resnet50] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def child(mode: str, model_name: str, steps: int) -> None:
    import timm
    import torch

    import prac_plugin  # noqa: F401
    from prac_plugin.tickets.masks import prunable_parameter_names
    from prac_plugin.strategies.cts.search import ConcreteSearchConfig
    from prac_plugin.strategies.cts.search import concrete_ticket_search

    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    params = sum(p.numel() for p in model.parameters())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "train":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    else:
        names = prunable_parameter_names(model, ignore=["fc"])
        concrete_ticket_search(model, names, lambda epoch: iter([(x, y)] * steps), ConcreteSearchConfig(0.01, steps))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "params": params, "base_mib": base / 1024, "peak_mib": peak / 1024, "delta_mib": (peak - base) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.steps)
        return
    rows = []
    for mode in ("train", "cts"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--model", args.model, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    weights_mib = rows[0]["params"] * 4 / 2**20
    print(f"{args.model}: {rows[0]['params']:,} parameters ({weights_mib:.0f} MiB fp32), batch 8 x 3x64x64, {args.steps} steps")
    print("| mode | peak RSS above model+data MiB | in weight copies |")
    print("|---|---:|---:|")
    names = {"train": "plain training step (SGD, momentum)", "cts": "CTS search step (logits + Adam)"}
    for r in rows:
        print(f"| {names[r['mode']]} | {r['delta_mib']:.0f} | {r['delta_mib'] / weights_mib:.2f} |")


if __name__ == "__main__":
    main()
