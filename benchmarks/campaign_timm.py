"""Campaign cell E7 (issue 25): timm's real train.py with the prac hook, one ticket round, on the CIFAR-10 copy.

    python benchmarks/campaign_timm.py --script .gpu_stage/timm/train.py --data .gpu_stage/data --out runs/e7

Round 0 trains cifar_resnet20 densely and saves the rewind point; `prac prune` takes 20% of the conv weights;
round 1 trains the ticket from the rewind point with ``--ticket-mask``. Both rounds in bf16 with channels_last
and ``--torchcompile`` (a GPU run; ``--light`` drops all three for a CPU check). Then every checkpoint round 1
wrote is loaded and its pruned weights counted: the figure is how many are not exactly zero (0 is a pass).
Writes ``e7.json`` in ``--out`` last, so a run killed before the end leaves no result.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATCH = ROOT / "prac_plugin" / "integrations" / "timm" / "patches" / "train.py.diff"
SHARED_SCRIPT = ROOT.parent / "shared" / "timm" / "train_2026-08-08_aa4b585.py"  # what gpu_prepare.sh stages
STAGED_SCRIPT = ROOT / ".gpu_stage" / "timm" / "train.py"


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed with exit {result.returncode}; see {log}:\n"
                         + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return time.perf_counter() - started


def last_row(summary: Path) -> dict:
    with summary.open() as handle:
        rows = list(csv.DictReader(handle))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None) and k != "lr"} if rows else {}


def pruned_nonzero(checkpoint: Path, mask_path: Path) -> tuple[int, int]:
    """(pruned weights that are not exactly zero, pruned weights) in a timm checkpoint."""
    import torch
    from safetensors.torch import load_file

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    bad = total = 0
    for name, keep in load_file(str(mask_path)).items():
        pruned = ~keep.bool()
        total += int(pruned.sum())
        bad += int(torch.count_nonzero(state[name].float()[pruned]))
    return bad, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", type=Path, default=STAGED_SCRIPT if STAGED_SCRIPT.is_file() else SHARED_SCRIPT)
    parser.add_argument("--data", type=Path, required=True, help="folder with train.parquet and test.parquet")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rewind", default="1ep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="test")
    parser.add_argument("--light", action="store_true", help="no bf16, channels_last or compile: a CPU check of the sequence")
    args = parser.parse_args()
    if not args.script.is_file():
        raise SystemExit(f"campaign_timm: no timm train.py at {args.script} (gpu_prepare.sh stages it from ../shared/timm)")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "e7.json").unlink(missing_ok=True)
    script = out / "train.py"
    shutil.copy(args.script, script)
    patched = subprocess.run(["patch", "--forward", "--batch", str(script), str(PATCH)], capture_output=True, text=True)
    if patched.returncode != 0:
        raise SystemExit(f"campaign_timm: the repository's patch does not apply: {patched.stdout}{patched.stderr}")
    device = [] if not args.light else ["--device", "cpu"]
    fast = [] if args.light else ["--amp", "--amp-dtype", "bfloat16", "--channels-last", "--torchcompile", "inductor"]
    train = [sys.executable, str(script), str(out / "hf_cache"), "--dataset", f"hfds/{args.data}", "--train-split", args.train_split,
             "--val-split", args.val_split, "--input-key", "img", "--target-key", "label", "--num-classes", "10", "--img-size", "32",
             "--model", "cifar_resnet20", "-b", "128", "--opt", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "1e-4",
             "--sched", "cosine", "--epochs", str(args.epochs), "--warmup-epochs", "0", "--seed", str(args.seed), "--workers", "4",
             "--output", str(out), *device, *fast]
    figures: dict = {"epochs": args.epochs, "rewind": args.rewind, "light": args.light, "flags": fast}
    figures["round0_s"] = run([*train, "--experiment", "round0", "--save-rewind", args.rewind], out / "round0.log")
    round0 = out / "round0"
    figures["rewind_saved"] = (round0 / "rewind.safetensors").is_file()
    mask = out / "mask1.safetensors"
    run([sys.executable, "-m", "prac_plugin", "prune", str(round0 / "weights.safetensors"), "--model", "cifar_resnet20",
         "--num-classes", "10", "--include", "type:Conv*", "--fraction", "0.2", "-o", str(mask)], out / "prune.log")
    start_epoch = args.rewind.split("ep")[0] if args.rewind.endswith("ep") else "0"
    figures["round1_s"] = run([*train, "--experiment", "round1", "--ticket-mask", str(mask), "--initial-checkpoint",
                               str(round0 / "rewind.safetensors"), "--start-epoch", start_epoch], out / "round1.log")
    checkpoints = sorted((out / "round1").glob("*.pth.tar"))
    counts = {path.name: pruned_nonzero(path, mask) for path in checkpoints}
    figures.update(
        checkpoints=len(checkpoints), pruned_weights=max((t for _, t in counts.values()), default=0),
        pruned_nonzero={name: bad for name, (bad, _) in counts.items()},
        round0=last_row(round0 / "summary.csv"), round1=last_row(out / "round1" / "summary.csv"),
    )
    figures["passed"] = bool(checkpoints) and figures["rewind_saved"] and all(bad == 0 for bad, _ in counts.values())
    (out / ".e7.json").write_text(json.dumps(figures, indent=1))
    (out / ".e7.json").replace(out / "e7.json")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
