"""``prac stability``: linear mode connectivity of a level's ticket (error along the path, barrier)."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("stability", help="linear mode connectivity of a level's ticket: error along the path, barrier")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--level", type=int, help="a completed level (default: the last)")
    parser.add_argument("--points", type=int, default=11, help="points along the interpolation, endpoints included (default 11)")
    parser.add_argument("--recompute-bn", action="store_true", help="recompute BatchNorm statistics on the training split at each point")
    parser.add_argument("--start", choices=("rewind", "init"), default="rewind", help="where both copies start (default: rewind)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.stability import run_stability, stability_text
    from ..rundir.lock import run_lock

    with run_lock(args.run_dir):
        result = run_stability(args.run_dir, args.level, args.points, args.recompute_bn, args.start)
    print(stability_text(result))
    return 0
