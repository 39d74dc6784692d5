"""``prac sanity``: a level's ticket retrained against random, shuffled, re-initialized and inverted variants."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("sanity", help="retrain a level's ticket against random, shuffled, re-initialized and inverted variants")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--level", type=int, help="a completed level of 1 or more (default: the last)")
    parser.add_argument("--seeds", type=int, default=2, help="data-order seeds per variant (default 2; 1 gives no noise estimate)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.sanity import run_sanity, sanity_markdown
    from ..rundir.lock import run_lock

    with run_lock(args.run_dir):
        result = run_sanity(args.run_dir, args.level, args.seeds)
    print(sanity_markdown(result))
    return 0
