"""Several recipes at once (``prac run A.yaml B.yaml --together``): one ``prac run`` process per recipe, all
started together, each into its own run folder and log.

Why processes: a run whose steps are bound by kernel launches leaves most of a GPU idle, and independent runs
(seeds, strategies, the PrAC/random controls) fill it; on the H200 five processes side by side trained 2.06-2.18x the
images per second of one (benchmarks/RESULTS.md). Each child is an ordinary run: it locks its folder, checkpoints,
and resumes when the same command runs again. Every recipe is read and checked before any process starts, so a
mistake in one starts none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import PracError


@dataclass
class Member:
    """One recipe of a joint run: where its run folder and its log go."""

    recipe: str
    output: Path

    @property
    def log(self) -> Path:
        return self.output.with_name(self.output.name + ".log")


def plan_members(recipes: Sequence[str], outputs: Sequence[str], parent: Optional[str]) -> list[Member]:
    """Each recipe's run folder: under ``parent`` (``--output``) by the folder name it would have alone, or where
    it would go alone; two recipes may not share one."""
    members = [Member(r, Path(parent) / Path(o).name if parent else Path(o)) for r, o in zip(recipes, outputs)]
    seen: dict[Path, str] = {}
    for member in members:
        key = member.output.resolve()
        if key in seen:
            raise PracError(f"recipes {seen[key]!r} and {member.recipe!r} would both run into {str(member.output)!r}; "
                            "give one a different run.output_dir or file name")
        seen[key] = member.recipe
    return members


def _threads_each(count: int) -> str:
    """CPU threads per child: the cores shared out, unless the user chose (OMP_NUM_THREADS)."""
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // count))


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "its log could not be read"
    errors = [line for line in lines if line.startswith("prac: ")]
    return errors[-1].removeprefix("prac: error: ").removeprefix("prac: ") if errors else (lines[-1] if lines else "no output")


STATUS_EVERY_S = 60.0  # how often a joint run says where each member stands
INTERRUPT_GRACE_S = 10.0  # how long an interrupted joint run lets its members stop on their own


def progress(log: Path, width: int = 100) -> str:
    """A member's latest progress as its log shows it: the last update of its progress bar (the bar drawn over
    itself with carriage returns), else its last line."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return "no log yet"
    updates = [u.strip() for line in tail.splitlines() for u in line.split("\r") if u.strip()]
    return updates[-1][:width] if updates else "starting"


def _wait(children: list, members: Sequence[Member], say: Callable[[str], None], every: float) -> list[int]:
    """Every child's exit code, saying each running member's progress every ``every`` seconds."""
    next_status = time.monotonic() + every
    while any(child.poll() is None for child in children):
        time.sleep(0.2)
        if every > 0 and time.monotonic() >= next_status:
            next_status += every
            for member, child in zip(members, children):
                if child.poll() is None:
                    say(f"  {member.recipe}: {progress(member.log)}")
    return [child.returncode for child in children]


def run_together(members: Sequence[Member], overrides: Sequence[str], say: Callable[[str], None] = print,
                 status_every: float = STATUS_EVERY_S) -> int:
    """Start every member's ``prac run`` at once, wait for all (saying where each stands every
    ``status_every`` seconds), and say how each ended; 0 when all completed, 2 when any failed, 130 when
    interrupted (each child then keeps what it has, and the same command resumes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PracError("prac run --together starts its own processes; under accelerate launch or torchrun launch one "
                        "prac run per recipe instead")
    env = {**os.environ, "OMP_NUM_THREADS": _threads_each(len(members))}
    children = []
    for member in members:
        member.output.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "prac_plugin", "run", member.recipe, "--output", str(member.output)]
        command += [arg for value in overrides for arg in ("--set", value)]
        with open(member.log, "w") as log:
            children.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        say(f"started {member.recipe} -> {member.output} (log: {member.log})")
    started = time.perf_counter()
    try:
        codes = _wait(children, members, say, status_every)
    except KeyboardInterrupt:
        # Ctrl-C at a terminal reaches every child as well (one process group); a second SIGINT would interrupt
        # its own clean stop, so only a child still running after a grace period (the parent alone was
        # signalled) gets one
        for child in children:
            try:
                child.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGINT)
        for child in children:
            child.wait()
        say("prac: interrupted; re-run the same command to continue every run where it stopped")
        return 130
    failed = 0
    for member, code in zip(members, codes):
        if code == 0:
            say(f"done    {member.recipe} -> {member.output}")
        else:
            failed += 1
            say(f"prac: error: {member.recipe} failed (exit {code}): {_last_error(member.log)}; its log: {member.log}")
    say(f"{len(members) - failed} of {len(members)} runs completed together in {time.perf_counter() - started:.1f} s")
    return 2 if failed else 0
