"""``prac recipe``: every recipe key with its type, default and help, or a commented starter recipe."""

from __future__ import annotations

import argparse

from ..errors import PracError


class _LazyChoices:
    """argparse choices read only when needed (a value given, or the command's help): building the parser reads
    no strategy."""

    def __init__(self, names):
        self._names = names

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, value) -> bool:
        return value in self._names()


def _example_names() -> list[str]:
    from ..config.docs import example_names

    return example_names()


def add_parser(commands) -> None:
    parser = commands.add_parser("recipe", help="every recipe key with its type, default and help; or a commented starter recipe")
    parser.add_argument("what", nargs="?", metavar="SECTION", help="a section (train), or a strategy's options (ticket.strategy=cts); default: all")
    example = parser.add_argument("--example", help="print a commented starter recipe that runs as printed")
    example.choices = _LazyChoices(_example_names)  # set after add_argument, which would read them at once
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config.docs import example, reference

    if args.example and args.what:
        raise PracError("give a section to describe or --example NAME, not both")
    print(example(args.example) if args.example else reference(args.what or ""), end="")
    return 0
