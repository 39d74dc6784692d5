"""Eager against captured training steps on one GPU, side by side in one process (issue 24).

cifar_resnet20 on CIFAR-10 (45,000 training images after the seeded 5,000 held out, device-resident uint8 with
the engine's batched augmentation), batch 128, bf16, a dense mask and SGD as in a level. Variants, each on its
own freshly built engine, in this order: eager, captured, captured with channels_last, eager with
channels_last. For each:

- seconds per epoch and images per second through the engine's `Trainer`: two calls of whole epochs, 1 and
  1 + E; the difference over E epochs is the steady rate (epoch ends, the tail batch's eager step and the
  running sums included), and the first call less one steady epoch is the per-level cost of the warm-up and
  capture. Repeated ``--repeat`` times: the spread between repeats is the noise;
- from torch.profiler, two profiled calls of 1 and 1 + P steps: their difference over P is the kernel time
  per step (device busy time: kernels, memcpys, memsets), kernels per step and launches per step (every
  host API that enqueues device work, ``cudaGraphLaunch`` included, which launches one whole graph).

Writes gpu_step.json (every figure) and gpu_step.md (one table) into --output, after every variant.

    # here, once: wheels and the CIFAR-10 parquet files into .gpu_stage/ (ignored by git)
    bash benchmarks/gpu_prepare.sh
    # on the GPU machine (device tool: carry [".gpu_stage"], timeout_s 420): the CUDA tests of the captured
    # step first, then the measurement; both write under $OUT
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_stage/wheels/*.whl && export PYTHONPATH=/tmp/site && python3 benchmarks/gpu_step.py --data .gpu_stage/data --output $OUT/gpu_step --tests
    # on a CPU, in seconds: the same code path at tiny sizes, the capture replaced by the uncaptured step
    python benchmarks/gpu_step.py --dry-run --output runs/gpu_step_dry
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prac_plugin.compat.accelerate_private import release_optimizer, reset_shared_state  # noqa: E402
from prac_plugin.engine.engine import build_engine  # noqa: E402
from prac_plugin.engine.trainer import LevelSchedule, Trainer, create_optimizer  # noqa: E402
from prac_plugin.tickets.masks import MaskEnforcer, TicketMask  # noqa: E402
from prac_plugin.config.recipes import apply_overrides, parse_recipe  # noqa: E402

VARIANTS = {  # name -> (recipe overrides, captured)
    "eager": (["train.cuda_graphs=off", "train.channels_last=false"], False),
    "captured": (["train.cuda_graphs=on", "train.channels_last=false"], True),
    "captured_channels_last": (["train.cuda_graphs=on", "train.channels_last=true"], True),
    "eager_channels_last": (["train.cuda_graphs=off", "train.channels_last=true"], False),
}
LAUNCH_APIS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch",
               "cudaMemcpyAsync", "cudaMemsetAsync")


def gpu_recipe(data: Path) -> dict:
    recipe = yaml.safe_load((ROOT / "recipes" / "cifar10_resnet20_ltr.yaml").read_text())
    recipe["data"]["data_files"] = {"train": str(data / "train.parquet"), "test": str(data / "test.parquet")}
    recipe["data"]["in_memory"] = True
    recipe["train"].update(mixed_precision="bf16", batch_size=128, epochs=1, milestones=[])
    recipe["run"] = {"tracker": "none", "checkpoint_every": "none"}
    return recipe


def dry_recipe() -> dict:
    return {
        "model": {"name": "cifar_resnet20", "kwargs": {"width": 4}},
        "data": {"path": "builtin:digits", "train_split": "train[:80]", "val_fraction": 0.1, "split_seed": 0,
                 "augment": {"random_crop_padding": 1, "hflip": True}},
        # fp32: bf16 convolutions on a CPU without bf16 units take seconds per step
        "train": {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
                  "mixed_precision": "no", "seed": 0},
        "ticket": {"strategy": "ltr", "levels": 1, "fraction": 0.2, "rewind": "0it"},
        "run": {"tracker": "none", "checkpoint_every": "none"},
    }


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Bench:
    """One engine and its trainer; `train(steps)` runs one level's training call of that many steps."""

    def __init__(self, recipe: dict, overrides: list[str], uncaptured: bool):
        reset_shared_state()  # each variant's own Accelerator (channels_last and precision as its recipe says)
        self.recipe = parse_recipe(apply_overrides(recipe, overrides))
        self.engine = build_engine(self.recipe, Path(tempfile.mkdtemp(prefix="prac-gpu-step-")))
        self.engine.use_model(self.engine.model)
        engine = self.engine
        self.trainer = Trainer(engine.accelerator, self.recipe.train, engine.sources, step_mode="uncaptured" if uncaptured else None,
                               log=lambda line: print(f"[gpu_step] {line}", flush=True))
        self.positions = torch.arange(len(engine.data.train))
        self.batch = self.recipe.train.batch_size
        self.steps_per_epoch = LevelSchedule.for_examples(len(self.positions), self.batch, 1).steps_per_epoch
        self.enforcer = MaskEnforcer(engine.unwrapped, TicketMask.dense(engine.unwrapped))
        self.optimizer = engine.accelerator.prepare_optimizer(create_optimizer(engine.unwrapped, self.recipe.train))

    def train(self, steps: int):
        """Seconds for one `Trainer.train` call of ``steps`` steps (a capture, when captured, included)."""
        schedule = LevelSchedule(self.steps_per_epoch, steps, max(1.0, steps / self.steps_per_epoch))
        synchronize()
        started = time.perf_counter()
        result = self.trainer.train(self.engine.model, self.optimizer, self.enforcer, self.positions, schedule, desc="gpu_step")
        synchronize()
        return time.perf_counter() - started, result

    def close(self) -> None:
        release_optimizer(self.engine.accelerator, self.optimizer)
        self.engine.accelerator.free_memory()


def profile_call(bench: Bench, steps: int) -> dict:
    """Totals of one profiled training call: device time, device ops, launch API calls, CPU op time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    on_device = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    with profile(activities=activities) as prof:
        bench.train(steps)
    events = prof.key_averages()
    device = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
    launches = [e for e in events if e.key in LAUNCH_APIS]

    def device_us(event) -> float:
        return getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0))

    return {
        "device_us": sum(device_us(e) for e in device), "device_ops": sum(e.count for e in device),
        "launches": sum(e.count for e in launches), "graph_launches": sum(e.count for e in launches if e.key == "cudaGraphLaunch"),
        "cpu_ops": sum(e.count for e in events if getattr(e, "device_type", None) != DeviceType.CUDA),
        "top_device": sorted(((e.key[:80], device_us(e)) for e in device), key=lambda kv: -kv[1])[:8],
    }


def per_step_profile(bench: Bench, steps: int) -> dict:
    short, long = profile_call(bench, 1), profile_call(bench, 1 + steps)
    figures = {f"{key}_per_step": (long[key] - short[key]) / steps for key in ("device_us", "device_ops", "launches", "graph_launches", "cpu_ops")}
    figures["kernel_ms_per_step"] = figures.pop("device_us_per_step") / 1000
    figures["top_device_us_in_long_call"] = long["top_device"]
    figures["profiled_steps"] = steps
    figures["measured"] = f"profiled calls of 1 and {1 + steps} steps; their difference over {steps} steps"
    return figures


def measure(name: str, recipe: dict, args, dry_run: bool) -> dict:
    overrides, captured = VARIANTS[name]
    if dry_run:
        overrides = [o for o in overrides if not o.startswith("train.cuda_graphs")] + ["train.cuda_graphs=off"]
    started = time.perf_counter()
    bench = Bench(recipe, overrides, uncaptured=dry_run and captured)
    setup_s = time.perf_counter() - started
    spe = bench.steps_per_epoch
    try:
        repeats = []
        bench.train(spe)  # one-time costs (compilation, autotuning, allocator growth) paid before anything is timed
        for _ in range(args.repeat):
            first, _ = bench.train(spe)
            total, result = bench.train((1 + args.epochs) * spe)
            steady_epoch = (total - first) / args.epochs
            # both calls pay the same per-call costs (a capture); on a noisy machine their difference can still come
            # out at or below zero: then the whole call's mean is given, an upper bound, and said so
            timing = "difference" if steady_epoch > 0 else "upper bound: the difference was not positive"
            steady_epoch = steady_epoch if steady_epoch > 0 else total / (1 + args.epochs)
            repeats.append({"first_epoch_s": first, "epochs_call_s": total, "seconds_per_epoch": steady_epoch, "timing": timing,
                            "images_per_s": len(bench.positions) / steady_epoch, "ms_per_step": 1000 * steady_epoch / spe,
                            "capture_and_warmup_s": first - steady_epoch, "train_loss": result.train_loss,
                            "train_acc": result.train_acc, "cuda_graphs": result.cuda_graphs})
        best = min(repeats, key=lambda r: r["seconds_per_epoch"])
        figures = {"status": "ok", "overrides": overrides, "setup_s": setup_s, "steps_per_epoch": spe, "batch_size": bench.batch,
                   "train_examples": len(bench.positions), "epochs_timed": args.epochs, "repeats": repeats,
                   "seconds_per_epoch": best["seconds_per_epoch"], "images_per_s": best["images_per_s"],
                   "ms_per_step": best["ms_per_step"], "cuda_graphs": best["cuda_graphs"],
                   "measured": f"steady epoch = (call of {1 + args.epochs} epochs - call of 1 epoch) / {args.epochs}; best of {args.repeat}"}
        figures["profile"] = per_step_profile(bench, args.profile_steps)
        return figures
    finally:
        bench.close()


def environment() -> dict:
    import accelerate
    import timm

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "timm": timm.__version__,
            "accelerate": accelerate.__version__, "cpu_count": os.cpu_count(),
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, device_memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}")
    else:
        info["device"] = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads"
    return info


def markdown(record: dict) -> str:
    rows = ["| variant | captured | s per epoch | images/s | ms per step | first call - steady epoch, s | kernel ms per step | "
            "kernels per step | launches per step | CPU ops per step |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in record["variants"].items():
        if v.get("status") != "ok":
            rows.append(f"| {name} | failed: {v.get('error', '')[:120]} | | | | | | | | |")
            continue
        p, first = v["profile"], v["repeats"][0]
        rows.append(f"| {name} | {v['cuda_graphs'].get('captured')} | {v['seconds_per_epoch']:.3f} | {v['images_per_s']:,.0f} | "
                    f"{v['ms_per_step']:.2f} | {first['capture_and_warmup_s']:.2f} | {p['kernel_ms_per_step']:.2f} | "
                    f"{p['device_ops_per_step']:.0f} | {p['launches_per_step']:.1f} | {p['cpu_ops_per_step']:.0f} |")
    env = record["environment"]
    head = (f"# gpu_step: eager vs captured training step ({'DRY RUN on a CPU: numbers meaningless' if record['dry_run'] else env.get('device')})\n\n"
            f"torch {env['torch']}, CUDA {env['cuda']}; {record['model']}, batch {record['batch_size']}, {record['mixed_precision']}; "
            f"{record.get('train_examples')} training images; command: `{record['command']}`\n\n")
    tests = record.get("tests")
    tail = f"\n\nCUDA tests of the captured step: {tests}\n" if tests else "\n"
    return head + "\n".join(rows) + tail


def run_tests(out: Path, timeout: float = 240) -> dict:
    """tests/test_cuda_graphs.py under pytest in a subprocess (the CUDA tests run only where CUDA is; in this
    process, the tests' CPU Accelerators would leave Accelerate's process-wide device on the CPU)."""
    import subprocess

    log = out / "tests.txt"
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(ROOT / "tests" / "test_cuda_graphs.py")],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        text, code = f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {timeout} s", "timeout"
    log.write_text(text if isinstance(text, str) else text.decode(errors="replace"))
    summary = next((line for line in reversed(log.read_text().splitlines()) if " passed" in line or " failed" in line or "rror" in line), "")
    return {"status": "passed" if code == 0 else f"exit {code}", "summary": summary, "seconds": time.perf_counter() - started}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder holding CIFAR-10's train.parquet and test.parquet")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on a CPU; the capture replaced by the uncaptured step")
    parser.add_argument("--epochs", type=int, help="epochs of the steady measurement (default 2; dry run 1)")
    parser.add_argument("--repeat", type=int, help="measurements per variant (default 2; dry run 1)")
    parser.add_argument("--profile-steps", type=int, help="steps between the two profiled calls (default 20; dry run 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--tests", action="store_true", help="first run tests/test_cuda_graphs.py (its CUDA tests on a GPU)")
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.epochs = args.epochs or (1 if dry else 2)
    args.repeat = args.repeat or (1 if dry else 2)
    args.profile_steps = args.profile_steps or (2 if dry else 20)
    if not dry and (args.data is None or not torch.cuda.is_available()):
        parser.error("a measurement needs --data and a CUDA GPU; use --dry-run on a CPU")
    threads = torch.get_num_threads()
    if dry:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(1)  # a small shared CPU
    try:
        return _measure_all(args, parser, dry, argv)
    finally:
        torch.set_num_threads(threads)


def _measure_all(args, parser, dry: bool, argv) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.backends.cudnn.benchmark = False  # the engine's default (RESULTS.md: autotuning changed nothing)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    recipe = dry_recipe() if dry else gpu_recipe(args.data)
    record = {"dry_run": dry, "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "environment": environment(), "model": recipe["model"]["name"], "batch_size": recipe["train"]["batch_size"],
              "mixed_precision": recipe["train"]["mixed_precision"],
              "variants": {}}

    def save() -> None:
        for name, text in (("gpu_step.json", json.dumps(record, indent=1, default=str)), ("gpu_step.md", markdown(record))):
            partial = out / f".partial-{name}"
            partial.write_text(text)
            os.replace(partial, out / name)

    if args.tests:
        record["tests"] = run_tests(out)
        print(f"[gpu_step] tests: {record['tests']}", flush=True)
        save()
    for name in [n for n in args.variants.split(",") if n]:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}")
        try:
            record["variants"][name] = figures = measure(name, recipe, args, dry)
            record["train_examples"] = figures["train_examples"]
        except Exception as exc:  # one failed variant is a finding; the others still run
            record["variants"][name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print(f"[gpu_step] {name}: {json.dumps({k: v for k, v in record['variants'][name].items() if k in ('status', 'seconds_per_epoch', 'images_per_s', 'error')})}", flush=True)
        save()
    print(markdown(record), flush=True)
    return 0 if all(v.get("status") == "ok" for v in record["variants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
