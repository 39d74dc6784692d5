"""Linear mode connectivity of a ticket (Frankle et al. 2020, "Linear Mode Connectivity and the LTH").

Two copies of a level's ticket start from the same weights (the rewind point, or initialization) and train
to the end with different data orders; the error is measured along the straight line between the two
results. The barrier is the largest error on the path minus the mean of the endpoints' errors: a stable
(matching) ticket has a barrier near zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from ..errors import PracError
from ..rundir.files import atomic_write_json
from ..rundir.report import pyplot, save_figure
from ..rundir.folder import FORMAT_VERSION
from ..engine.retrain import STARTS, Retrainer, require_analysis
from ..rundir.completed import chosen_level, require_files

State = dict[str, torch.Tensor]


def interpolate(a: State, b: State, alpha: float) -> State:
    """(1 - alpha) a + alpha b for floating tensors (exact at both ends and for a == b); integer buffers
    (BatchNorm's batch counts) from the nearer end."""
    return {k: torch.lerp(v, b[k], alpha) if v.is_floating_point() else (v if alpha < 0.5 else b[k]) for k, v in a.items()}


def norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_norm_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset the BatchNorm running statistics and average them afresh over ``batches`` in train mode, without
    gradients (an interpolated network's stored statistics belong to neither endpoint); returns the layer count."""
    layers = norm_layers(model)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts equally
    model.train()
    for images in batches:
        model(images)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.train(was_training)
    return len(layers)


def error_along_path(model: nn.Module, a: State, b: State, alphas: list[float], evaluate: Callable[[], float],
                     recompute: Optional[Callable[[nn.Module], object]] = None) -> list[float]:
    """Load each interpolated state into ``model`` (recomputing statistics when asked) and return ``evaluate()``."""
    errors = []
    for alpha in alphas:
        model.load_state_dict(interpolate(a, b, alpha))
        if recompute is not None:
            recompute(model)
        errors.append(evaluate())
    return errors


def barrier(errors: list[float]) -> float:
    """Maximum error along the path minus the mean of the endpoints' errors."""
    return max(errors) - (errors[0] + errors[-1]) / 2


def run_stability(path: str | Path, level: Optional[int] = None, points: int = 11, recompute_bn: bool = False,
                  start: str = "rewind") -> dict:
    """Train two copies of a level's ticket from ``start`` with different data orders, measure the error along
    their interpolation; write ``stability/level_LL_{start}[_bn].{json,png}`` and return the result."""
    if points < 3:
        raise PracError(f"--points {points} must be at least 3 (the two endpoints and the path between them)")
    if start not in STARTS:
        raise PracError(f"--start {start!r} is not one of {', '.join(STARTS)}")
    run, level = chosen_level(path, level)
    require_analysis(run, "stability", "linear mode connectivity")
    require_files(run, [run.relative(run.mask_path(level))], "linear mode connectivity")
    retrainer = Retrainer(run, start)
    model = retrainer.unwrapped
    mask = retrainer.load_mask(level)
    seeds = [retrainer.seed, retrainer.seed + 1]
    ends = [retrainer.train(mask, retrainer.start_weights, seed, level, desc=f"stability copy seed {seed}") for seed in seeds]
    recompute = None
    if recompute_bn:
        source, batch_size = retrainer.engine.sources["train"], retrainer.recipe.train.batch_size
        positions = torch.arange(len(source.split))

        def recompute(m: nn.Module) -> int:  # un-augmented training split, as the statistics at evaluation time
            return recompute_norm_statistics(m, (images for images, _, _ in source.batches(positions, batch_size, training=False)))

    alphas = [i / (points - 1) for i in range(points)]
    errors = error_along_path(model, ends[0], ends[1], alphas, lambda: 1.0 - retrainer.accuracy(), recompute)
    result = {
        "format_version": FORMAT_VERSION, "run": str(run.path), "level": level, "weights_remaining_pct": run.level_metrics(level)["weights_remaining_pct"],
        "start": start, "start_step": retrainer.start_step, "total_steps": retrainer.schedule.total_steps, "seeds": seeds,
        "split": retrainer.split, "recompute_bn": recompute_bn, "norm_layers": len(norm_layers(model)),
        "alphas": alphas, "errors": errors, "endpoint_errors": [errors[0], errors[-1]], "barrier": barrier(errors),
    }
    if retrainer.engine.accelerator.is_main_process:
        variant = f"_{start}{'_bn' if recompute_bn else ''}"
        atomic_write_json(run.analysis_path("stability", level, ".json", variant), result)
        plot_path(result, run.analysis_path("stability", level, ".png", variant))
    return result


def stability_text(result: dict) -> str:
    """The error along the path and the barrier, as Markdown."""
    lines = [f"Linear mode connectivity, level {result['level']} ({result['weights_remaining_pct']:.2f}% of weights remaining), "
             f"from the {result['start']} point (step {result['start_step']} of {result['total_steps']}), seeds {result['seeds']}"
             + (", normalization statistics recomputed" if result["recompute_bn"] else ""),
             "", f"| alpha | {result['split']} error % |", "|---:|---:|"]
    lines += [f"| {a:.2f} | {100 * e:.2f} |" for a, e in zip(result["alphas"], result["errors"])]
    ends = result["endpoint_errors"]
    lines += ["", (f"Barrier: {100 * result['barrier']:.2f} points (max error {100 * max(result['errors']):.2f}% "
                   f"minus the endpoints' mean {50 * (ends[0] + ends[1]):.2f}%)")]
    if result["recompute_bn"] and not result["norm_layers"]:
        lines.append("The model has no BatchNorm layers: recomputing statistics changed nothing.")
    return "\n".join(lines) + "\n"


def plot_path(result: dict, path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    ax.plot(result["alphas"], [100 * e for e in result["errors"]], marker="o")
    ax.set_xlabel("interpolation alpha (0: copy 1, 1: copy 2)")
    ax.set_ylabel(f"{result['split']} error (%)")
    ax.set_title(f"level {result['level']} from {result['start']}: barrier {100 * result['barrier']:.2f} points")
    ax.grid(True, alpha=0.3)
    save_figure(fig, path)
