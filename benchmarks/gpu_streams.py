"""Several captured training steps on one GPU: K runs in one process, each replaying its own CUDA graph on its
own stream, round-robin, against K processes each replaying one, against one run alone (issue 24, part 3:
which way `prac run --together` should run its members once steps are captured).

Each run is the engine's `CapturedStep` (forward, loss, backward, masks, fused SGD with a tensor lr, running
sums) on its own cifar_resnet20, on one fixed device-resident batch (the data path is the same in every
arrangement and is left out), bf16 autocast. Figures, all measured in this call:

- ``alone``: one run's images per second over ``--steps`` replays;
- ``streams``: K runs in this process, step k of every run issued in turn, each on its own stream; the total
  images per second of the K runs;
- ``processes``: K processes started together (a file barrier), each timing its own ``--steps`` replays; the
  total images per second from the first start to the last end.

    # on the GPU machine (after benchmarks/gpu_prepare.sh; device tool, carry [".gpu_stage"]):
    python3 benchmarks/gpu_streams.py --runs 4 --output $OUT/gpu_streams
    # on a CPU, in seconds: the same code, tiny, the step run uncaptured (no streams, no graphs)
    python benchmarks/gpu_streams.py --dry-run --output runs/gpu_streams_dry

Writes gpu_streams.json and gpu_streams.md into --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import prac_plugin  # noqa: E402,F401  (registers the classic LTH models in timm)
from prac_plugin.engine.captured import CapturedStep  # noqa: E402
from prac_plugin.tickets.masks import MaskEnforcer, TicketMask  # noqa: E402


@dataclass
class Run:
    """One training run: its captured step and the fixed batch it trains on."""

    step: CapturedStep
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    def train(self) -> None:
        self.step.step(*self.batch)


def _run(seed: int, args, device: torch.device) -> Run:
    """One run: its model, SGD, dense mask and captured step, prepared (warmed up and captured) on its batch."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("cifar_resnet20", num_classes=10, width=args.width).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    enforcer = MaskEnforcer(model, TicketMask.dense(model))
    step = CapturedStep(model, optimizer, enforcer, None, device, args.batch, args.precision, channels_last=args.channels_last,
                        mode="graph" if device.type == "cuda" else "uncaptured")
    run = Run(step, (torch.randn(args.batch, 3, 32, 32, device=device), torch.randint(0, 10, (args.batch,), device=device),
                     torch.arange(args.batch, device=device)))
    run.train()  # prepare: warm-up, state restored, capture
    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_alone(run: Run, steps: int, device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        run.train()
    _sync(device)
    return time.perf_counter() - started


def _time_streams(runs: list[Run], steps: int, device: torch.device) -> float:
    streams = [torch.cuda.Stream(device) for _ in runs] if device.type == "cuda" else [None] * len(runs)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        for run, stream in zip(runs, streams):
            if stream is None:
                run.train()
            else:
                with torch.cuda.stream(stream):
                    run.train()
    _sync(device)
    return time.perf_counter() - started


def _process(index: int, count: int, args, barrier: str, results) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    run = _run(index, args, device)
    _time_alone(run, 2, device)
    Path(barrier, f"ready_{index}").touch()
    while len(list(Path(barrier).glob("ready_*"))) < count:
        time.sleep(0.01)
    started = time.time()
    seconds = _time_alone(run, args.steps, device)
    results[index] = (started, started + seconds)


def measure(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    images = args.batch * args.steps
    record = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "runs": args.runs, "steps": args.steps, "batch": args.batch, "width": args.width, "precision": args.precision,
              "channels_last": args.channels_last, "captured": device.type == "cuda"}
    alone = _run(0, args, device)
    _time_alone(alone, 2, device)
    record["alone_images_per_s"] = images / _time_alone(alone, args.steps, device)
    runs = [alone] + [_run(seed, args, device) for seed in range(1, args.runs)]
    _time_streams(runs, 2, device)
    record["streams_images_per_s"] = args.runs * images / _time_streams(runs, args.steps, device)
    for run in runs:
        run.step.close()
    del runs, alone
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as barrier:
        results = mp.get_context("spawn").Manager().dict()
        mp.spawn(_process, args=(args.runs, args, barrier, results), nprocs=args.runs, join=True)
        spans = list(results.values())
    record["processes_images_per_s"] = args.runs * images / (max(e for _, e in spans) - min(s for s, _ in spans))
    for key in ("streams", "processes"):
        record[f"{key}_vs_alone"] = record[f"{key}_images_per_s"] / record["alone_images_per_s"]
    return record


def table(record: dict) -> str:
    rows = [f"{record['runs']} runs of cifar_resnet20 (width {record['width']}), batch {record['batch']}, {record['precision']}, "
            f"{record['steps']} steps each, captured: {record['captured']}, on {record['device']}",
            "", "| arrangement | images/s | vs one run alone |", "|---|---:|---:|",
            f"| one run alone | {record['alone_images_per_s']:,.0f} | 1.00 |"]
    for key, name in (("streams", f"{record['runs']} runs in one process, one stream each"), ("processes", f"{record['runs']} processes")):
        rows.append(f"| {name} | {record[f'{key}_images_per_s']:,.0f} | {record[f'{key}_vs_alone']:.2f} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--precision", default="bf16", choices=("no", "bf16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--output", required=True)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny: the code path only, no figure to keep")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.runs, args.steps, args.batch, args.width, args.precision = 2, 3, 8, 4, "no"
    record = measure(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_streams.json").write_text(json.dumps(record, indent=2))
    (out / "gpu_streams.md").write_text(table(record))
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
