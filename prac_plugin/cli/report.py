"""``prac report``: one run's table and plot again, or several runs compared."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands) -> None:
    parser = commands.add_parser("report", help="one run: re-print its table and redraw its plot; several: compare them")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--output", "-o", help="folder for report.{md,csv,json,png} (default: report/ beside the runs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.compare import write_comparison
    from ..rundir.completed import completed_run
    from ..rundir.lock import run_lock
    from ..rundir.report import run_summary, summary_table, write_summary

    if len(args.run_dirs) == 1 and not args.output:  # one run: its own summary
        with run_lock(args.run_dirs[0], read_only=True) as writable:
            finished = completed_run(args.run_dirs[0])[0]
            table = write_summary(finished, refuse_shorter=True)[1] if writable else summary_table(run_summary(finished))
        print(f"## {args.run_dirs[0]}\n\n{table}")
        if not writable:
            print(f"prac: note: {args.run_dirs[0]!r} cannot be written: the table is printed, its summary files are left as they are",
                  file=sys.stderr)
        return 0
    print(write_comparison(args.run_dirs, args.output)[1])
    return 0
