"""Sanity checks of a ticket (Frankle et al. 2021, "Missing the Mark"; Su et al. 2020, "Random Tickets").

A real ticket must lose accuracy when its mask is replaced by random pruning at the same per-layer densities
or shuffled within each layer, when its surviving weights are re-initialized, and when its magnitude scores
are inverted. The ticket and every check are retrained with the run's recipe and schedule from the rewind
point to the end, with N data-order seeds; the ticket passes a check when mean(ticket) - mean(check)
exceeds the larger of the two standard deviations. With one seed the noise is unknown.

For unstructured masks "random at the same per-layer densities" and "shuffled within each layer" are the
same distribution of masks; both are kept as named: ``shuffle`` permutes the ticket's own layer mask,
``random`` draws fresh positions with the layer's count.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import PracError
from ..rundir.files import atomic_write_json, atomic_write_text
from ..tickets.masks import TicketMask, keep_largest
from ..rundir.folder import FORMAT_VERSION
from ..engine.retrain import Retrainer, require_analysis
from ..rundir.completed import chosen_level, require_files

CHECKS = {
    "random": "random pruning at the same per-layer densities",
    "shuffle": "mask shuffled within each layer",
    "reinit": "surviving weights re-initialized",
    "inverted": "inverted scores (smallest magnitudes kept)",
}
REINIT_SEED_OFFSET = 1_000_003  # fresh initializations never reuse the run's own seed


def _from_flat(mask: TicketMask, flat: Callable[[str, torch.Tensor], torch.Tensor]) -> TicketMask:
    return TicketMask({name: flat(name, m.flatten()).view_as(m) for name, m in mask.masks.items()})


def shuffled_mask(mask: TicketMask, generator: torch.Generator) -> TicketMask:
    """Each layer's mask permuted at random: the same per-layer count, positions scrambled."""
    return _from_flat(mask, lambda _, m: m[torch.randperm(m.numel(), generator=generator)])


def random_mask(mask: TicketMask, generator: torch.Generator) -> TicketMask:
    """Fresh random positions per layer, as many as the ticket keeps there."""

    def draw(_, m: torch.Tensor) -> torch.Tensor:
        flags = torch.zeros_like(m)
        flags[torch.randperm(m.numel(), generator=generator)[: int(m.sum())]] = True
        return flags

    return _from_flat(mask, draw)


def inverted_mask(ticket: TicketMask, previous: TicketMask, scores: dict[str, torch.Tensor]) -> TicketMask:
    """Per layer, the ticket's count of the *smallest*-magnitude ``scores`` among the weights alive in ``previous``."""

    def invert(name: str, m: torch.Tensor) -> torch.Tensor:
        alive = previous.masks[name].flatten().nonzero().squeeze(1)
        kept = keep_largest(-scores[name].detach().abs().float().flatten()[alive], int(m.sum()))
        flags = torch.zeros_like(m)
        flags[alive[kept]] = True
        return flags

    return _from_flat(ticket, invert)


def reinitialized(weights: dict[str, torch.Tensor], mask: TicketMask, fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` with every masked tensor taken from a fresh initialization (the mask stays the ticket's).

    Only the prunable tensors change: the check asks whether the survivors' values matter, so biases,
    normalization layers and unpruned layers keep their start values.
    """
    return {name: (fresh[name].clone() if name in mask.masks else value) for name, value in weights.items()}


def verdict(ticket: list[float], check: list[float]) -> dict:
    """Margin of the ticket over a check, the noise (larger std over seeds) and pass/fail (None: noise unknown)."""
    margin = statistics.mean(ticket) - statistics.mean(check)
    if min(len(ticket), len(check)) < 2:
        return {"margin": margin, "noise": None, "passed": None}
    noise = max(statistics.stdev(ticket), statistics.stdev(check))
    return {"margin": margin, "noise": noise, "passed": margin > noise}


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def run_sanity(path: str | Path, level: Optional[int] = None, seeds: int = 2) -> dict:
    """Retrain a level's ticket and its sanity-check variants; write ``sanity/level_LL.{json,md}``; the result."""
    if seeds < 1:
        raise PracError(f"--seeds {seeds} must be at least 1")
    run, level = chosen_level(path, level)
    if level == 0:
        raise PracError("level 0 is the dense network: nothing was pruned, so there is no ticket to check; choose a level of 1 or more")
    strategy = require_analysis(run, "sanity", "the sanity checks")
    magnitude = strategy.traits.magnitude_masks
    require_files(run, [run.relative(run.mask_path(level)), run.relative(run.mask_path(level - 1))]
                  + ([run.relative(run.weights_path(level - 1))] if magnitude else []), "the sanity checks")
    retrainer = Retrainer(run)
    ticket = retrainer.load_mask(level)
    checks = [name for name in CHECKS if magnitude or name != "inverted"]  # a searched mask has no magnitude scores
    if magnitude:
        previous = retrainer.load_mask(level - 1)
        inverted = inverted_mask(ticket, previous, run.level_weights(level - 1))
    start = retrainer.start_weights
    seed_list = [retrainer.seed + i for i in range(seeds)]
    accuracy: dict[str, list[float]] = {name: [] for name in ["ticket"] + checks}
    for seed in seed_list:
        generator = torch.Generator().manual_seed(seed)
        variants = {
            "ticket": (ticket, start),
            "random": (random_mask(ticket, generator), start),
            "shuffle": (shuffled_mask(ticket, generator), start),
            "reinit": (ticket, reinitialized(start, ticket, retrainer.fresh_init(REINIT_SEED_OFFSET + seed))),
        }
        if magnitude:
            variants["inverted"] = (inverted, start)
        for name, (mask, weights) in variants.items():
            retrainer.train(mask, weights, seed, level, desc=f"sanity {name} seed {seed}")
            accuracy[name].append(retrainer.accuracy())
    metrics = run.level_metrics(level)
    result = {
        "format_version": FORMAT_VERSION, "run": str(run.path), "level": level, "weights_remaining_pct": metrics["weights_remaining_pct"],
        "split": retrainer.split, "start": retrainer.start, "start_step": retrainer.start_step,
        "total_steps": retrainer.schedule.total_steps, "seeds": seed_list,
        "variants": {name: {"accuracy": values, **_mean_std(values)} for name, values in accuracy.items()},
        "checks": {name: {"description": CHECKS[name], **verdict(accuracy["ticket"], accuracy[name])} for name in checks},
    }
    if not magnitude:
        result["skipped"] = {"inverted": "the ticket strategy keeps no magnitude scores to invert"}
    if retrainer.engine.accelerator.is_main_process:
        atomic_write_json(run.analysis_path("sanity", level, ".json"), result)
        atomic_write_text(run.analysis_path("sanity", level, ".md"), sanity_markdown(result))
    return result


def _pct(summary: dict) -> str:
    std = summary["std"]
    return f"{100 * summary['mean']:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def sanity_markdown(result: dict) -> str:
    """The sanity table: accuracy of the ticket and each check, the margin, the noise and the verdict."""
    n = len(result["seeds"])
    lines = [
        f"# Sanity checks: level {result['level']} of {result['run']} ({result['weights_remaining_pct']:.2f}% of weights remaining)",
        "",
        (f"Each variant retrained from the {result['start']} point (step {result['start_step']} of {result['total_steps']}) to the end "
         f"on the full training split with {n} data-order seed{'s' if n > 1 else ''} ({', '.join(map(str, result['seeds']))}); "
         f"{result['split']} accuracy, mean ± std over seeds. Pass: the ticket beats the check by more than the larger std."),
        "",
        f"| variant | {result['split']} acc % | ticket − variant (points) | noise (points) | verdict |",
        "|---|---:|---:|---:|---|",
        f"| ticket | {_pct(result['variants']['ticket'])} | | | |",
    ]
    for name, check in result["checks"].items():
        noise = "unknown" if check["noise"] is None else f"{100 * check['noise']:.2f}"
        word = {True: "pass", False: "fail", None: "noise unknown (1 seed)"}[check["passed"]]
        lines.append(f"| {check['description']} | {_pct(result['variants'][name])} | {100 * check['margin']:+.2f} | {noise} | {word} |")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"| {CHECKS[name]} | - | | | skipped: {reason} |")
    checks = result["checks"].values()
    if n < 2:
        ahead = sum(c["margin"] > 0 for c in checks)
        lines += ["", (f"Noise unknown with one seed: the ticket is ahead of {ahead} of {len(checks)} checks; "
                       "run with --seeds 2 or more for a verdict.")]
    else:
        failed = [c["description"] for c in checks if not c["passed"]]
        lines += ["", f"The ticket passes all {len(checks)} checks." if not failed else
                      f"The ticket fails {len(failed)} of {len(checks)} checks: {'; '.join(failed)}."]
    return "\n".join(lines) + "\n"
