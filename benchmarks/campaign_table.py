"""RESULTS.md's campaign section, generated from the ledger (benchmarks/results/cells/), never written by hand.

    python benchmarks/campaign_table.py            # print the section
    python benchmarks/campaign_table.py --write    # replace it in benchmarks/RESULTS.md (between its markers)

Per experiment and level: test accuracy mean ± sample std over the seeds present (n shown), cumulative optimizer
steps and wall time (means over the same seeds), and the tickets trained on the full data. Then the papers'
claims, each with a verdict computed from those numbers: "holds", "does not hold", or "not enough seeds yet"
while either side has fewer seeds than the campaign plans (3 for E1-E5, 1 for E6).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_cells import DRY_SCALE, SEEDS, cells, experiment, experiments, level_count, load_recipe  # noqa: E402
from campaign_ledger import LEDGER, Ledger  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- campaign-table:start -->", "<!-- campaign-table:end -->"
HOLDS, FAILS, WAIT = "holds", "does not hold", "not enough seeds yet"

# the claims' thresholds (issue 25), in accuracy points and fractions
MATCH_POINTS = 0.5  # PrAC tickets within 0.5 points of LTR
STEP_SAVING = 0.75  # ... for at least 75% fewer steps
ABOVE_RANDOM_POINTS = 0.5  # PrAC at least 0.5 points above random subsets of the same size
CTS_WALL_RATIO = 1 / 8  # CTS at or above LTR for at most 1/8 of its wall time


def mean_std(values: list[float]) -> tuple[Optional[float], Optional[float], int]:
    n = len(values)
    if not n:
        return None, None, 0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std, n


def fmt_acc(values: list[float]) -> str:
    """Accuracies (fractions) as percent: mean ± std (n)."""
    mean, std, n = mean_std(values)
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "") + f" (n={n})"


def fmt_num(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


class Figures:
    """The ledger's entries, indexed: experiment -> seed -> level -> figures (level cells) / full-data results."""

    def __init__(self, entries: list[dict]):
        self.levels: dict[str, dict[int, dict[int, dict]]] = {}
        self.full: dict[str, dict[int, dict[int, dict]]] = {}
        self.peers: dict[str, int] = {}
        for e in entries:
            target = self.levels if e["kind"] == "level" else self.full if e["kind"] == "retrain" else None
            if target is None:
                continue
            target.setdefault(e["experiment"], {}).setdefault(e["seed"], {})[e["level"]] = e["figures"]
            self.peers[e["experiment"]] = max(self.peers.get(e["experiment"], 1), e.get("cells_side_by_side", 1))

    def acc(self, key: str, level: int) -> dict[int, float]:
        """seed -> test accuracy of the experiment's level."""
        return {seed: levels[level]["test_acc"] for seed, levels in self.levels.get(key, {}).items()
                if level in levels and levels[level].get("test_acc") is not None}

    def full_acc(self, key: str, level: int) -> dict[int, float]:
        """seed -> accuracy of the level's ticket trained on the full data."""
        out = {}
        for seed, levels in self.full.get(key, {}).items():
            figures = levels.get(level)
            if figures is not None:
                value = figures.get("mean", figures.get("accuracy"))
                if value is not None:
                    out[seed] = value
        return out

    def cumulative(self, key: str, level: int, field: str) -> dict[int, float]:
        """seed -> sum of ``field`` over levels 0..level, for seeds that have every one of those levels."""
        out = {}
        for seed, levels in self.levels.get(key, {}).items():
            values = [levels.get(l, {}).get(field) for l in range(level + 1)]
            if all(v is not None for v in values):
                out[seed] = float(sum(values))
        return out

    def deepest(self, key: str) -> int:
        return max((l for levels in self.levels.get(key, {}).values() for l in levels), default=-1)


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def claims(f: Figures, needed: int = len(SEEDS), prac_level: int = 10, retrain_levels=(4, 8, 10), cts_level: int = 1,
           ltr99_level: int = 7) -> list[tuple[str, str]]:
    """(claim with the numbers behind it, verdict) for each of the papers' claims."""
    out = []
    # 1. PrAC tickets match LTR at 89% sparsity for >= 75% fewer steps
    prac, ltr = _paired(f.full_acc("E2", prac_level), f.acc("E1", prac_level))
    prac_steps, ltr_steps = _paired(f.cumulative("E2", prac_level, "optimizer_steps"), f.cumulative("E1", prac_level, "optimizer_steps"))
    n = min(len(prac), len(prac_steps))
    text = (f"PrAC tickets (level {prac_level}, trained on the full data) within {MATCH_POINTS} points of full-data LTR "
            f"for at least {STEP_SAVING:.0%} fewer steps (paper: 83.9% fewer on ResNet-20)")
    if n >= needed:
        gap = 100 * (_mean(prac) - _mean(ltr))
        saving = 1 - _mean(prac_steps) / _mean(ltr_steps)
        verdict = HOLDS if gap >= -MATCH_POINTS and saving >= STEP_SAVING else FAILS
        text += f": {gap:+.2f} points, {saving:.1%} fewer steps to find it (n={n})"
    else:
        verdict = WAIT
        text += f": {n} of {needed} seeds on both sides"
    out.append((text, verdict))
    # 2. PrAC above random subsets of the same size, at each level whose tickets were trained on the full data
    for level in retrain_levels:
        prac, rand = _paired(f.full_acc("E2", level), f.full_acc("E3", level))
        text = f"PrAC at least {ABOVE_RANDOM_POINTS} points above random subsets of its sizes (level {level}, tickets on the full data)"
        if len(prac) >= needed:
            gap = 100 * (_mean(prac) - _mean(rand))
            verdict = HOLDS if gap >= ABOVE_RANDOM_POINTS else FAILS
            text += f": {gap:+.2f} points (n={len(prac)})"
        else:
            verdict = WAIT
            text += f": {len(prac)} of {needed} seeds on both sides"
        out.append((text, verdict))
    # 3. CTS at 99.3% at or above LTR for <= 1/8 of its wall time
    cts, ltr = _paired(f.acc("E4", cts_level), f.acc("E5", ltr99_level))
    cts_wall, ltr_wall = _paired(f.cumulative("E4", cts_level, "wall_time_s"), f.cumulative("E5", ltr99_level, "wall_time_s"))
    n = min(len(cts), len(cts_wall))
    text = (f"CTS at 99.3% sparsity at or above LTR's accuracy for at most 1/8 of its wall time "
            f"(paper: 74.0% vs 68.3%, 7.9 vs 95.2 minutes)")
    if n >= needed:
        gap = 100 * (_mean(cts) - _mean(ltr))
        ratio = _mean(cts_wall) / _mean(ltr_wall)
        verdict = HOLDS if gap >= 0 and ratio <= CTS_WALL_RATIO else FAILS
        text += (f": {100 * _mean(cts):.2f}% vs {100 * _mean(ltr):.2f}% ({gap:+.2f} points), "
                 f"{_mean(cts_wall) / 60:.1f} vs {_mean(ltr_wall) / 60:.1f} minutes (ratio {ratio:.3f}) (n={n})")
    else:
        verdict = WAIT
        text += f": {n} of {needed} seeds on both sides"
    out.append((text, verdict))
    # 4. a PrAC set found with ResNet-20 serves ResNet-56 (one seed planned)
    both = [l for l in range(min(f.deepest("E6"), f.deepest("E6F")) + 1) if set(f.acc("E6", l)) & set(f.acc("E6F", l))]
    level = both[-1] if both else prac_level
    reuse, full = _paired(f.acc("E6", level), f.acc("E6F", level))
    text = (f"E2's PrAC set finds ResNet-56 tickets within {MATCH_POINTS} points of ResNet-56's full-data LTR "
            f"(level {level}{'' if both else ', when both reach it'})")
    if len(reuse) >= 1:
        gap = 100 * (_mean(reuse) - _mean(full))
        verdict = HOLDS if gap >= -MATCH_POINTS else FAILS
        text += f": {gap:+.2f} points (n={len(reuse)})"
    else:
        verdict = WAIT
        text += ": 0 of 1 seeds on both sides"
    out.append((text, verdict))
    return out


def experiment_table(f: Figures, key: str, title: str) -> list[str]:
    levels = sorted({l for seeds in f.levels.get(key, {}).values() for l in seeds})
    if not levels:
        return []
    rows = [f"**{key}**: {title} (cells ran with up to {f.peers.get(key, 1)} side by side; wall times include that sharing)", "",
            "| level | sparsity % | test acc % | steps, cumulative | wall s, cumulative | training examples | ticket on the full data, acc % |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for level in levels:
        per_seed = [s[level] for s in f.levels[key].values() if level in s]
        sparsity = _mean([p["sparsity_pct"] for p in per_seed if p.get("sparsity_pct") is not None])
        examples = _mean([p["train_examples"] for p in per_seed if p.get("train_examples") is not None])
        steps = _mean(list(f.cumulative(key, level, "optimizer_steps").values()))
        wall = _mean(list(f.cumulative(key, level, "wall_time_s").values()))
        rows.append(f"| {level} | {fmt_num(sparsity, 2)} | {fmt_acc(list(f.acc(key, level).values()))} | {fmt_num(steps)} | "
                    f"{fmt_num(wall)} | {fmt_num(examples)} | {fmt_acc(list(f.full_acc(key, level).values()))} |")
    return rows + [""]


def claim_levels(scale: Optional[dict] = None) -> dict:
    """The levels the claims compare, from the campaign's recipes (or a dry run's scale)."""
    depth = {key: level_count(load_recipe(experiment(key), scale)) for key in ("E2", "E4", "E5")}
    retrain = (scale or {}).get("retrain", {}).get("E2", experiment("E2").retrain_levels)
    return {"prac_level": depth["E2"], "retrain_levels": tuple(retrain), "cts_level": depth["E4"], "ltr99_level": depth["E5"]}


def timm_lines(entries: list[dict]) -> list[str]:
    """E7: timm's real train.py with the hook, one ticket round; pass or fail from the checkpoints it wrote."""
    lines = ["### E7: timm's train.py with the hook (bf16, channels_last, --torchcompile)", ""]
    if not entries:
        return lines + ["Not run yet.", ""]
    for e in entries:
        g = e["figures"]
        bad = sum(g.get("pruned_nonzero", {}).values())
        lines.append(f"- seed {e['seed']}: **{'passed' if g.get('passed') else 'failed'}**: rewind point saved: {g.get('rewind_saved')}; "
                     f"{g.get('checkpoints', 0)} checkpoints of the ticket, {bad} of {g.get('pruned_weights', 0):,} pruned weights not "
                     f"exactly zero; top-1 after {g.get('epochs')} epochs: dense {fmt_num(g.get('round0', {}).get('eval_top1'), 2)}%, "
                     f"ticket {fmt_num(g.get('round1', {}).get('eval_top1'), 2)}%; wall {fmt_num(g.get('round0_s'))} + "
                     f"{fmt_num(g.get('round1_s'))} s{' (light: no bf16, channels_last or compile)' if g.get('light') else ''}.")
    return lines + [""]


def render(entries: list[dict], total_cells: Optional[int] = None, scale: Optional[dict] = None) -> str:
    f = Figures(entries)
    dry = any(e.get("dry_run") for e in entries)
    lines = [START, "## Campaign: the papers' comparisons on CIFAR-10 / ResNet-20 (issue 25)", "",
             "Generated by `python benchmarks/campaign_table.py --write` from the ledger in `benchmarks/results/cells/`; "
             "do not edit by hand. Schedule: recipes/campaign/ (40 epochs cosine, batch 128, bf16, rewind to epoch 2, "
             "conv weights only)." + (" DRY-RUN CELLS: numbers meaningless." if dry else ""), "",
             f"Cells done: {len(entries)}" + (f" of {total_cells}" if total_cells else "") + ".", "", "### Claims", ""]
    for text, verdict in claims(f, **claim_levels(scale)):
        lines.append(f"- **{verdict}**: {text}.")
    lines += [""]
    lines += timm_lines([e for e in entries if e.get("kind") == "timm"])
    for spec in experiments():
        lines += experiment_table(f, spec.key, spec.title)
    if not entries:
        lines += ["No cell has run yet: every figure above is waiting for the first GPU call.", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with its campaign section replaced (or inserted after the file's introduction)."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END) + "\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    first = text.find("\n## ")
    return text + "\n" + section if first < 0 else text[:first + 1] + section + "\n" + text[first + 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", type=Path, default=LEDGER)
    parser.add_argument("--write", action="store_true", help=f"replace the section in {RESULTS.name}")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--dry-run", action="store_true", help="a dry run's ledger (gpu_campaign.py --dry-run --ledger ...)")
    args = parser.parse_args()
    scale = DRY_SCALE if args.dry_run else None
    ledger, all_cells = Ledger(args.ledger), cells(scale)
    entries = ledger.entries()
    done = ledger.done(all_cells, scale)
    stale = sorted(set(entries) - done)
    if stale:
        print(f"campaign_table: leaving out {len(stale)} stale or unknown entries: {', '.join(stale[:8])}", file=sys.stderr)
    section = render([entries[i] for i in sorted(done)], total_cells=len(all_cells), scale=scale)
    if args.write:
        args.results.write_text(replace_section(args.results.read_text(), section))
        print(f"wrote the campaign section of {args.results}")
    else:
        print(section, end="")


if __name__ == "__main__":
    main()
