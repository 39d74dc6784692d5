"""The ``prac`` command (also ``python -m prac_plugin``)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from .errors import PracError


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import default_output_dir, run_recipe
    from .recipes import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    output = args.output or recipe.run.output_dir or default_output_dir(args.recipe)
    run_recipe(recipe, output)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_summary
    from .rundir import RunDirectory

    for path in args.run_dirs:
        run = RunDirectory.existing(path)
        if not run.completed_levels():
            raise PracError(f"run directory {path!r} has no completed level yet")
        _, table = write_summary(run)
        print(f"## {path}\n\n{table}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prac", description="Find lottery tickets efficiently on timm models and HF datasets.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a recipe (continues an interrupted run in the same output directory)")
    run.add_argument("recipe", help="YAML recipe, e.g. recipes/quickstart.yaml")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable)")
    run.add_argument("--output", "-o", help="run directory (default: run.output_dir or runs/<recipe name>)")
    run.set_defaults(func=_cmd_run)

    report = commands.add_parser("report", help="re-print the table and redraw the plot of run directories")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PracError as exc:
        print(f"prac: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prac: interrupted; re-run the same command to continue after the last completed level", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
