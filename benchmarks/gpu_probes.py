"""In-process measurements for the GPU campaign (benchmarks/gpu_campaign.py runs this file as a subprocess).

Each probe appends one JSON line to ``--out`` the moment it finishes, so that a probe killed at its stage's
deadline still leaves every earlier figure behind. Probes:

    preflight   versions and device, the dataset decoded and moved to the device, then a few steps of every
                strategy (ltr, prac with CEP, cts, structured), precision (fp32, bf16, fp16) and of
                channels_last and train.compile, each a real `run_recipe` on a slice of the data
    eager       the device-resident path of the engine's Trainer: full epochs timed, the per-step cost of
                masking and of the forgetting tracker, a torch.profiler table of a few steps
    extra       the compiled model, the DataLoader path (timm transforms, worker processes), fp32 and
                channels_last epochs
    concurrent  one of K processes started together: each trains the same steps and reports its rate, so
                the campaign can tell whether K runs side by side on one device raise total throughput

Every figure is measured here, nothing is estimated: an "extrapolated" epoch is a measured step time times
the steps of an epoch, and says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prac_plugin.engine.trainer import LevelSchedule, create_optimizer  # noqa: E402
from prac_plugin.tickets.masks import MaskEnforcer, TicketMask  # noqa: E402
from prac_plugin.compat.accelerate_private import release_optimizer  # noqa: E402
from prac_plugin.engine.engine import build_engine  # noqa: E402
from prac_plugin.engine.run_loop import run_recipe  # noqa: E402
from prac_plugin.config.recipes import apply_overrides, parse_recipe  # noqa: E402
from prac_plugin.strategies.prac.forgetting import ForgettingTracker  # noqa: E402


class Results:
    """Appends one JSON object per finished probe to a file (flushed at once)."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, name: str, **fields) -> None:
        line = json.dumps({"name": name, "time": time.time(), **fields}, default=str)
        with self.path.open("a") as handle:
            handle.write(line + "\n")
        print(f"[probe] {line[:400]}", flush=True)


def done_names(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {json.loads(line)["name"] for line in path.read_text().splitlines() if line.strip()}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- preflight ---------------------------------------------------------------------------------------
def environment() -> dict:
    import accelerate
    import datasets
    import safetensors
    import timm

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "timm": timm.__version__, "accelerate": accelerate.__version__, "datasets": datasets.__version__,
        "safetensors": safetensors.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }
    try:
        import torch_pruning

        info["torch_pruning"] = torch_pruning.__version__
    except ImportError as exc:  # structured tickets need it; the campaign goes on without them
        info["torch_pruning"] = f"missing: {exc}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, device_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}")
    else:
        info["device"] = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads"
    return info


def data_to_device(recipe_dict: dict) -> dict:
    """Decode the whole dataset (cached per machine after the first time) and move its images to the device."""
    from prac_plugin.data.sources import load_data

    started = time.perf_counter()
    data = load_data(parse_recipe(recipe_dict).data)
    decoded = time.perf_counter() - started
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    on_device = data.train.images.to(device) if data.train.images is not None else None
    synchronize()
    moved = time.perf_counter() - started
    return {
        "sizes": data.info["sizes"], "in_memory": data.in_memory, "decode_s": decoded, "to_device_s": moved,
        "train_images_mib": None if on_device is None else on_device.numel() * on_device.element_size() / 2**20,
        "device": str(device),
    }


def preflight_checks(dry_run: bool) -> dict[str, list[str]]:
    """The few-step runs of preflight: name -> recipe overrides (on top of the sliced base recipe)."""
    ltr = ["ticket.strategy=ltr", "ticket.levels=1", "ticket.rewind=2it"]
    compile_backend = "aot_eager" if dry_run else "true"  # inductor on a 2-core CPU alone takes minutes
    checks = {
        "ltr_fp32": ltr + ["train.mixed_precision=no"],
        "ltr_bf16": ltr + ["train.mixed_precision=bf16"],
        "ltr_fp16_grad_scaler": ltr + ["train.mixed_precision=fp16"],
        "prac_cet_cep": ltr + ["train.mixed_precision=bf16", "data_selection.strategy=prac"],
        "cts": ["ticket={strategy: cts, densities: [0.1], rewind: 2it, search_steps: 10, search_batch_size: 256}",
                "train.mixed_precision=bf16"],
        "structured": ["ticket={strategy: structured, levels: 1, fraction: 0.2, rewind: 2it}", "train.mixed_precision=bf16"],
        "channels_last": ltr + ["train.mixed_precision=bf16", "train.channels_last=true"],
        "compile": ltr + ["train.mixed_precision=bf16", f"train.compile={compile_backend}"],
    }
    if dry_run:
        checks.pop("ltr_fp16_grad_scaler")  # fp16 needs a GPU: the plugin refuses it on a CPU
    return checks


def _section_overrides(items: list[str]) -> dict:
    """`ticket={...}` replaces a whole section; `a.b=c` sets one key."""
    return {item.split("=", 1)[0]: item.split("=", 1)[1] for item in items if "." not in item.split("=", 1)[0]}


def run_check(base: dict, overrides: list[str], folder: Path) -> dict:
    import yaml

    whole = _section_overrides(overrides)
    raw = apply_overrides(base, [item for item in overrides if item.split("=", 1)[0] not in whole])
    for section, text in whole.items():
        raw[section] = yaml.safe_load(text)
    started = time.perf_counter()
    rows = run_recipe(parse_recipe(raw), str(folder), log=lambda *_: None)
    seconds = time.perf_counter() - started
    last = json.loads((folder / f"level_{len(rows) - 1:02d}" / "metrics.json").read_text())
    result = {
        "seconds": seconds, "levels": len(rows), "mixed_precision": last.get("mixed_precision"), "compiled": last.get("compiled"),
        "channels_last": last.get("channels_last"), "train_loss": last.get("train_loss"), "test_acc": last.get("test_acc"),
        "weights_remaining_pct": last.get("weights_remaining_pct"), "optimizer_steps": last.get("optimizer_steps"),
    }
    for key in ("prac_set_size", "cet_count", "cep_count", "cts_search_steps", "macs_remaining_pct"):
        if key in last:
            result[key] = last[key]
    if not all(math.isfinite(v) for v in (result["train_loss"], result["test_acc"]) if v is not None):
        raise RuntimeError(f"non-finite result: train_loss {result['train_loss']}, test_acc {result['test_acc']}")
    if raw["data_selection"].get("strategy") == "prac" and not (folder / "prac" / "round_01.prac.safetensors").is_file():
        raise RuntimeError("no round-1 PrAC set (CET u CEP) was written")
    return result


def preflight(config: dict, results: Results) -> None:
    done = done_names(results.path)
    checks = preflight_checks(config["dry_run"])
    if config.get("checks"):  # a subset (gpu_campaign.py --checks)
        unknown = set(config["checks"]) - set(checks) - {"data_to_device"}
        if unknown:
            raise SystemExit(f"preflight: unknown checks {sorted(unknown)}; known: data_to_device, {', '.join(checks)}")
        checks = {name: overrides for name, overrides in checks.items() if name in config["checks"]}
    if "plan" not in done:  # lets the campaign name the checks a deadline cut off
        first = ["data_to_device"] if not config.get("checks") or "data_to_device" in config["checks"] else []
        results.add("plan", status="ok", checks=[*first, *checks])
    if "environment" not in done:
        results.add("environment", status="ok", **environment())
    if "data_to_device" not in done and (not config.get("checks") or "data_to_device" in config["checks"]):
        _guarded(results, "data_to_device", lambda: data_to_device(config["recipe"]))
    base = apply_overrides(config["recipe"], config["preflight_overrides"])
    work = Path(config["workdir"]) / "preflight"
    for name, overrides in checks.items():
        if name not in done:
            _guarded(results, name, lambda: run_check(base, overrides, work / name))


def _guarded(results: Results, name: str, probe) -> None:
    started = time.perf_counter()
    try:
        figures = probe()
    except Exception as exc:  # a failed check is a finding, not the end of the campaign
        results.add(name, status="failed", seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc()[-2500:])
        return
    results.add(name, status="ok", wall_s=time.perf_counter() - started, **figures)


# -- throughput --------------------------------------------------------------------------------------
class NoMask:
    """Stands in for `MaskEnforcer` to time a step without masking."""

    def apply(self) -> None:
        pass

    def mask_gradients(self) -> None:
        pass


class Bench:
    """One engine (accelerator, data, model, trainer) and a way to time N training steps of it."""

    def __init__(self, recipe_dict: dict, overrides: list[str], cudnn_benchmark: bool = True):
        started = time.perf_counter()
        self.recipe = parse_recipe(apply_overrides(recipe_dict, overrides))
        self.tmp = tempfile.mkdtemp(prefix="prac-probe-")
        self.engine = build_engine(self.recipe, Path(self.tmp))
        torch.backends.cudnn.benchmark = cudnn_benchmark  # explicit, whatever the engine's default: probes compare both
        acc = self.engine.accelerator
        self.model = acc.prepare_model(self.engine.model)
        self.unwrapped = acc.unwrap_model(self.model, keep_torch_compile=False)
        self.optimizer = acc.prepare_optimizer(create_optimizer(self.unwrapped, self.recipe.train))
        self.positions = torch.arange(len(self.engine.data.train))
        self.batch = self.recipe.train.batch_size
        self.full = LevelSchedule.for_examples(len(self.positions), self.batch, 1)
        self.dense = MaskEnforcer(self.unwrapped, TicketMask.dense(self.unwrapped))
        self.setup_s = time.perf_counter() - started

    @property
    def steps_per_epoch(self) -> int:
        return self.full.steps_per_epoch

    def steps(self, count: int, enforcer=None, observer=None, level: int = 0) -> float:
        """Seconds for ``count`` training steps (synchronized: the trainer reads its sums at the end)."""
        schedule = LevelSchedule(self.full.steps_per_epoch, count, max(1.0, count / self.full.steps_per_epoch))
        synchronize()
        started = time.perf_counter()
        self.engine.trainer.train(self.model, self.optimizer, enforcer or self.dense, self.positions, schedule, level=level, observer=observer)
        synchronize()
        return time.perf_counter() - started

    def epoch_figures(self, seconds: float, steps: int) -> dict:
        per_step = seconds / steps
        return {"seconds_per_epoch": per_step * self.steps_per_epoch, "images_per_s": self.batch / per_step,
                "ms_per_step": 1000 * per_step, "steps_timed": steps, "steps_per_epoch": self.steps_per_epoch,
                "train_examples": len(self.positions), "batch_size": self.batch}

    def close(self) -> None:
        release_optimizer(self.engine.accelerator, self.optimizer)
        self.engine.accelerator.free_memory()


def eager(config: dict, results: Results) -> None:
    """The engine's device-resident epoch, cuDNN autotuning off and on in the same process, where a step's time
    goes (profiler), a bare model step on one fixed batch, and the per-step cost of masking and of the tracker."""
    bench = Bench(config["recipe"], config["throughput_overrides"], cudnn_benchmark=False)
    results.add("engine_setup", status="ok", seconds=bench.setup_s, train_examples=len(bench.positions))
    epochs = config["timed_epochs"]
    for autotune in (False, True):
        torch.backends.cudnn.benchmark = autotune
        warm = bench.steps(config["warmup_steps"])  # with autotuning: the search for the fastest kernels happens here
        seconds = bench.steps(epochs * bench.steps_per_epoch)
        name = "device_resident_epoch" if autotune else "device_resident_epoch_no_autotune"
        results.add(name, status="ok", warmup_s=warm, epochs_timed=epochs, measured="whole epochs", cudnn_benchmark=autotune,
                    **bench.epoch_figures(seconds, epochs * bench.steps_per_epoch))
        profile(bench, config, results, f"profile{'' if autotune else '_no_autotune'}")
    model_only(bench, config, results)

    # per-step cost of masking and of the forgetting tracker: variants interleaved, medians of the rounds
    sparse = MaskEnforcer(bench.unwrapped, TicketMask.dense(bench.unwrapped).prune_magnitude(bench.unwrapped, 0.8))
    tracker = ForgettingTracker(len(bench.engine.data.train), bench.engine.accelerator.device)
    variants = {"no_mask": (NoMask(), None), "mask": (sparse, None), "mask_and_tracker": (sparse, tracker.update)}
    count = config["cost_steps"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(config["cost_rounds"]):
        for name, (enforcer, observer) in variants.items():
            times[name].append(bench.steps(count, enforcer, observer) / count)
    median = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    results.add("per_step_costs", status="ok", steps_per_round=count, rounds=config["cost_rounds"],
                ms_per_step={k: 1000 * v for k, v in median.items()},
                masking_ms=1000 * (median["mask"] - median["no_mask"]),
                tracker_ms=1000 * (median["mask_and_tracker"] - median["mask"]),
                masking_pct=100 * (median["mask"] / median["no_mask"] - 1),
                tracker_pct=100 * (median["mask_and_tracker"] / median["mask"] - 1))
    bench.close()


def model_only(bench: Bench, config: dict, results: Results) -> None:
    """Forward, loss, backward and optimizer step on one fixed batch: the step without the data path, the
    learning-rate setting, masking and the running metrics of the Trainer."""
    import torch.nn.functional as F

    from prac_plugin.engine.trainer import _direct_optimizer

    source = bench.engine.sources["train"]
    images, labels, _ = next(source.batches(bench.positions[: bench.batch], bench.batch, True, torch.Generator().manual_seed(0)))
    optimizer = _direct_optimizer(bench.engine.accelerator, bench.optimizer)
    model = bench.model
    model.train()

    def run(count: int) -> float:
        synchronize()
        started = time.perf_counter()
        for _ in range(count):
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize()
        return time.perf_counter() - started

    run(config["warmup_steps"])
    count = config["cost_steps"] * 2
    seconds = run(count)
    results.add("model_only_step", status="ok", measured=f"{count} steps on one fixed batch", cudnn_benchmark=torch.backends.cudnn.benchmark,
                **bench.epoch_figures(seconds, count))


def profile(bench: Bench, config: dict, results: Results, name: str = "profile") -> None:
    """Where a step's time goes: the top operators and kernels by device time and by CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    steps = config["profile_steps"]
    with torch_profile(activities=activities) as prof:
        wall = bench.steps(steps)
    events = prof.key_averages()
    on_device = torch.cuda.is_available()
    tables = [events.table(sort_by="self_cuda_time_total" if on_device else "self_cpu_time_total", row_limit=25, max_name_column_width=70)]
    if on_device:
        tables.append(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70))
    with open(config["profile_file"], "a") as handle:
        handle.write(f"== {name}: torch.profiler over {steps} training steps (batch {bench.batch}, cudnn.benchmark "
                     f"{torch.backends.cudnn.benchmark}); wall {wall:.3f} s with the profiler on\n\n" + "\n\n".join(tables) + "\n\n")

    def device_us(event) -> float:
        return getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0))

    def top(key, pool) -> list[dict]:
        return [{"name": e.key[:90], "ms_per_step": key(e) / 1000 / steps, "calls_per_step": e.count / steps}
                for e in sorted(pool, key=key, reverse=True)[:10]]

    # operators carry their kernels' device time too: device busy time sums the kernels, memcpys and memsets alone
    from torch.autograd import DeviceType

    device_events = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
    launches = [e for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")]
    syncs = [e for e in events if "Synchronize" in e.key or e.key in ("cudaMemcpyAsync", "cudaStreamSynchronize")]
    results.add(
        name, status="ok", steps=steps, wall_ms_per_step=1000 * wall / steps, cudnn_benchmark=torch.backends.cudnn.benchmark,
        device_busy_ms_per_step=sum(device_us(e) for e in device_events) / 1000 / steps if on_device else None,
        cpu_ms_per_step=sum(e.self_cpu_time_total for e in events) / 1000 / steps,
        kernel_launches_per_step=sum(e.count for e in launches) / steps if launches else None,
        launch_cpu_ms_per_step=sum(e.self_cpu_time_total for e in launches) / 1000 / steps if launches else None,
        memcpy_and_sync_cpu_ms_per_step={e.key: e.self_cpu_time_total / 1000 / steps for e in syncs},
        top=top(device_us, device_events) if on_device else top(lambda e: e.self_cpu_time_total, events),
        top_cpu=top(lambda e: e.self_cpu_time_total, events),
    )


def extra(config: dict, results: Results) -> None:
    base = config["throughput_overrides"]
    done = done_names(results.path)
    variants = {  # the compiled model last: a cold compile is the one that may run into the stage's deadline
        "dataloader_epoch": base + ["data.in_memory=false", f"data.num_workers={config['dataloader_workers']}"],
        "fp32_epoch": [*base, "train.mixed_precision=no"],
        "channels_last_epoch": base + ["train.channels_last=true"],
        "compiled_epoch": base + [f"train.compile={config['compile_backend']}"],
    }
    for name, overrides in variants.items():
        if name not in done:
            _guarded(results, name, lambda: _variant_epoch(name, config, overrides))


def _variant_epoch(name: str, config: dict, overrides: list[str]) -> dict:
    bench = Bench(config["recipe"], overrides, cudnn_benchmark=True)
    try:
        warm = bench.steps(config["warmup_steps"])  # includes compilation for the compiled model
        if name == "compiled_epoch":
            # full batches only: the last, smaller batch of an epoch recompiles once per process for a dynamic shape
            count = min(config["compiled_steps"], bench.steps_per_epoch - 1)
            seconds, measured = bench.steps(count), f"{count} steps, extrapolated to an epoch"
        else:
            count = bench.steps_per_epoch
            seconds, measured = bench.steps(count), "one whole epoch (worker start included)" if "dataloader" in name else "one whole epoch"
        figures = bench.epoch_figures(seconds, count)
        return {"setup_s": bench.setup_s, "warmup_s": warm, "warmup_steps": config["warmup_steps"], "measured": measured,
                "overrides": overrides, **figures}
    finally:
        bench.close()


def concurrent(config: dict, results: Results, index: int, count: int, barrier: Path) -> None:
    bench = Bench(config["recipe"], config["throughput_overrides"])
    bench.steps(config["warmup_steps"])
    (barrier / f"ready_{index}").touch()
    deadline = time.time() + config["barrier_timeout_s"]
    while len(list(barrier.glob("ready_*"))) < count and time.time() < deadline:
        time.sleep(0.05)
    together = len(list(barrier.glob("ready_*")))
    steps = config["concurrent_steps"]
    started = time.time()
    seconds = bench.steps(steps)
    results.add(f"concurrent_{index}", status="ok", processes=count, started_together=together, start=started, end=started + seconds,
                **bench.epoch_figures(seconds, steps))
    bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("preflight", "eager", "extra", "concurrent"))
    parser.add_argument("--config", type=Path, required=True, help="JSON written by gpu_campaign.py")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file the results are appended to")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--barrier", type=Path)
    args = parser.parse_args()
    config = json.loads(args.config.read_text())
    results = Results(args.out)
    if args.probe == "preflight":
        preflight(config, results)
    elif args.probe == "eager":
        eager(config, results)
    elif args.probe == "extra":
        extra(config, results)
    else:
        concurrent(config, results, args.index, args.count, args.barrier)


if __name__ == "__main__":
    main()
