"""Start-up cost of prac's commands and of the timm hook, as whole commands, against ``python -c "import timm"``.

Each command runs in a fresh interpreter, the commands alternating round by round so that a busy machine slows
them alike; the figure per command is the median over the rounds of its CPU time (user + system of the child)
and its wall time, and the ratio of its CPU time to the baseline's in the same rounds. Each command also reports
which of torch, timm, datasets, torch-pruning and Accelerate it imported.

- ``import timm`` (the baseline) and ``import timm, prac_plugin.timm``: what the patch's first added line costs
  on top of timm's own import (target: 0.3 s or less, nothing imported beyond what the hook uses);
- ``prac --help`` and ``prac recipe``: the command line's start-up (target: no torch at all);
- timm's real ``train.py --help``, unpatched and patched with ``prac timm-patch`` (needs ../shared/timm).

Whole commands on a shared machine differ by a second from run to run, more than the hook's import costs, so the
hook's import is also timed inside one process, right after ``import timm`` (CPU time of the import statement
alone, median over the rounds): that figure resolves tenths of a second.

With ``--before DIR`` (another checkout of prac_plugin, e.g. the main branch) the hook's import and
``prac --help`` are also timed with that checkout first on the path, in the same rounds.

    python benchmarks/startup.py [--rounds 5] [--before ../main] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT.parent / "shared" / "timm" / "train_2026-08-08_aa4b585.py"
HEAVY = ("torch", "timm", "datasets", "torch_pruning", "accelerate")
REPORT = "import sys, atexit; atexit.register(lambda: print('MODULES=' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))"


def _probe(code: str) -> list[str]:
    """``python -c`` arguments running ``code`` and then naming the heavy modules it imported (on stderr)."""
    return [sys.executable, "-c", REPORT.format(heavy=HEAVY) + "\n" + code]


CLI = "import sys; sys.argv = {argv!r}\nfrom prac_plugin.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"


def commands(folder: Path, before: str | None = None) -> dict[str, list[str]]:
    cli = CLI
    out = {
        "import timm": _probe("import timm"),
        "import timm, prac_plugin.timm": _probe("import timm, prac_plugin.timm"),
        "prac --help": _probe(cli.format(argv=["prac", "--help"])),
        "prac recipe": _probe(cli.format(argv=["prac", "recipe"])),
    }
    if SCRIPT.is_file():
        original, patched = folder / "original.py", folder / "patched.py"
        shutil.copy(SCRIPT, original)
        shutil.copy(SCRIPT, patched)
        diff = ROOT / "prac_plugin" / "integrations" / "timm" / "patches" / "train.py.diff"
        subprocess.run(["patch", "--quiet", "--forward", "--batch", str(patched), str(diff)], check=True)
        for name, path in (("train.py --help", original), ("patched train.py --help", patched)):
            out[name] = _probe(f"import sys, runpy; sys.argv = [{str(path)!r}, '--help']\ntry:\n"
                               f"    runpy.run_path({str(path)!r}, run_name='__main__')\nexcept SystemExit:\n    pass")
    if before:
        first = f"import sys; sys.path.insert(0, {str(Path(before).resolve())!r})\n"
        out["before: import timm, prac_plugin.timm"] = _probe(first + "import timm, prac_plugin.timm")
        out["before: prac --help"] = _probe(first + cli.format(argv=["prac", "--help"]))
    return out


IN_PROCESS = ("import time, timm\nstarted = time.process_time()\nimport prac_plugin.timm\n"
              "print('IMPORT_S', time.process_time() - started)")


def in_process(env: dict, before: str | None) -> float:
    code = (f"import sys; sys.path.insert(0, {str(Path(before).resolve())!r})\n" if before else "") + IN_PROCESS
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return float(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("IMPORT_S")))


def run_once(command: list[str], env: dict) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{command[:3]} failed: {result.stderr[-2000:]}")
    modules = next((line[len("MODULES="):] for line in result.stderr.splitlines() if line.startswith("MODULES=")), "?")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--before", metavar="DIR", help="another prac_plugin checkout to time the hook and prac --help of too")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as folder:
        todo = commands(Path(folder), args.before)
        for command in todo.values():  # warm the page cache and the bytecode caches once
            run_once(command, env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in todo}
        imported: dict[str, str] = {}
        for _ in range(args.rounds):
            for name, command in todo.items():
                cpu, wall, modules = run_once(command, env)
                times[name].append((cpu, wall))
                imported[name] = modules
        hook_import = {"this checkout": [], **({"before": []} if args.before else {})}
        for _ in range(args.rounds):
            for name in hook_import:
                hook_import[name].append(in_process(env, args.before if name == "before" else None))
    base = statistics.median(cpu for cpu, _ in times["import timm"])
    rows = []
    print(f"{args.rounds} rounds; CPU and wall: medians (s); ratio: CPU time / `import timm`'s CPU time")
    print("| command | CPU s | wall s | ratio | + CPU s vs import timm | imports |")
    print("|---|---:|---:|---:|---:|---|")
    for name, values in times.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        rows.append({"command": name, "cpu_s": cpu, "wall_s": wall, "ratio": cpu / base, "imports": imported[name]})
        print(f"| `{name}` | {cpu:.2f} | {wall:.2f} | {cpu / base:.2f} | {cpu - base:+.2f} | {imported[name] or 'none of them'} |")
    pairs = [("import timm, prac_plugin.timm", "import timm"), ("patched train.py --help", "train.py --help"),
             ("before: import timm, prac_plugin.timm", "import timm")]
    for with_hook, without in pairs:
        if with_hook in times:
            added = [a[0] - b[0] for a, b in zip(times[with_hook], times[without])]
            print(f"added by the hook, `{with_hook}` - `{without}` per round (CPU s): median {statistics.median(added):+.2f}, "
                  f"rounds {', '.join(f'{x:+.2f}' for x in added)}")
    for name, values in hook_import.items():
        print(f"`import prac_plugin.timm` after `import timm`, in one process, {name} (CPU s): median {statistics.median(values):.3f}, "
              f"rounds {', '.join(f'{x:.3f}' for x in values)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "rows": rows, "hook_import_in_process_s": hook_import}, indent=2) + "\n")


if __name__ == "__main__":
    main()
