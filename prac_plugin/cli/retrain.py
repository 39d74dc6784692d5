"""``prac retrain``: levels' tickets trained on the full training split, as the PrAC paper measures tickets found on
a subset."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("retrain", help="train levels' tickets (mask + rewind weights) on the full training split, "
                                 "as the PrAC paper measures tickets found on a subset")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory of a ticket.strategy: ltr run")
    parser.add_argument("--level", type=int, nargs="+", help="completed levels of 1 or more (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="data-order seeds per level (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.full_data import full_data_markdown, train_on_full_data
    from ..rundir.lock import run_lock

    with run_lock(args.run_dir):
        results = train_on_full_data(args.run_dir, args.level, args.seeds)
    print(full_data_markdown(results), end="")
    return 0
