"""``prac select``: find a PrAC set (the dense round and ``data_selection.select_rounds`` pruned rounds, not the
whole ticket search) and write its index file."""

from __future__ import annotations

import argparse

from ..errors import PracError


def add_parser(commands) -> None:
    parser = commands.add_parser("select", help="find a PrAC set (dense round + data_selection.select_rounds) and write its index file")
    parser.add_argument("recipe", help="YAML recipe with data_selection.strategy: prac")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable)")
    parser.add_argument("--output", "-o", help="run directory (default: runs/<recipe name>-select)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.run_loop import default_output_dir, run_recipe
    from ..config.recipes import apply_overrides, load_recipe_dict, parse_recipe
    from ..rundir.folder import RunDirectory
    from ..index_files.format import PracIndex
    from .. import registry
    from .index import print_description

    raw = apply_overrides(load_recipe_dict(args.recipe), args.set)
    recipe = parse_recipe(raw)
    final_index = registry.spec("data_selection", recipe.data_selection.strategy).final_index  # a selection's index file
    if final_index is None:
        selecting = [n for n in registry.available("data_selection") if registry.spec("data_selection", n).final_index]
        raise PracError(f"prac select needs data_selection.strategy: {' or '.join(selecting)} (the recipe has {recipe.data_selection.strategy!r})")
    levels_option = registry.get("ticket", recipe.ticket.strategy).traits.levels_option
    if levels_option is None:
        raise PracError(f"prac select needs a ticket strategy with a number of levels to set, such as ltr; "
                        f"ticket.strategy {recipe.ticket.strategy!r} has none")
    # the dense round plus select_rounds pruned rounds: enough for CET and CEP, not the whole ticket search
    recipe = parse_recipe(apply_overrides(raw, [f"ticket.{levels_option}={recipe.data_selection.select_rounds}"]))
    output = args.output or default_output_dir(args.recipe) + "-select"
    run_recipe(recipe, output)  # takes the run folder's lock
    path = str(RunDirectory(output).path / final_index)
    print(f"PrAC index file: {path}")
    print_description(PracIndex.load(path))
    return 0
