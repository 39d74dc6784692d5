"""``prac run``: run a recipe into a run folder (an interrupted run continues where it stopped)."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("run", help="run a recipe (continues an interrupted run in the same output directory)")
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable)")
    parser.add_argument("--output", "-o", help="run directory (default: run.output_dir or runs/<recipe name>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.run_loop import default_output_dir, run_recipe
    from ..config.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    output = args.output or recipe.run.output_dir or default_output_dir(args.recipe)
    run_recipe(recipe, output)  # takes the run folder's lock
    return 0
