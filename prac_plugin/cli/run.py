"""``prac run``: run a recipe into a run folder (an interrupted run continues where it stopped); several recipes
one after another, or all at once with ``--together`` (one process each: `prac_plugin.together`)."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("run", help="run a recipe (continues an interrupted run in the same output directory)")
    parser.add_argument("recipe", nargs="+", help="YAML recipe, e.g. recipes/quickstart.yaml; several run one after another, or at once with --together")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable; every recipe)")
    parser.add_argument("--output", "-o", help="run directory (default: run.output_dir or runs/<recipe name>); with several "
                                               "recipes, the folder their run directories go into")
    parser.add_argument("--together", action="store_true", help="run the recipes at the same time, one process each, each "
                                                                "logging to <run directory>.log (fills a GPU one run leaves idle)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.run_loop import default_output_dir, run_recipe
    from ..config.recipes import load_recipe
    from ..together import plan_members, run_together

    recipes = [load_recipe(path, args.set) for path in args.recipe]  # every recipe checked before any runs
    alone = [recipe.run.output_dir or default_output_dir(path) for path, recipe in zip(args.recipe, recipes)]
    if len(recipes) == 1 and not args.together:
        run_recipe(recipes[0], args.output or alone[0])  # takes the run folder's lock
        return 0
    members = plan_members(args.recipe, alone, args.output)
    if args.together:
        return run_together(members, args.set)
    for member, recipe in zip(members, recipes):
        run_recipe(recipe, str(member.output))
    return 0
