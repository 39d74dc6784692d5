"""``prac recipe``: every recipe key with its type, default and help, or a commented starter recipe."""

from __future__ import annotations

import argparse

from ..errors import PracError


def add_parser(commands) -> None:
    parser = commands.add_parser("recipe", help="every recipe key with its type, default and help; or a commented starter recipe")
    parser.add_argument("what", nargs="?", metavar="SECTION", help="a section (train), or a strategy's options (ticket.strategy=cts); default: all")
    parser.add_argument("--example", choices=("ltr", "prac", "cts", "structured"),
                        help="print a commented starter recipe that runs as printed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config.docs import example, reference

    if args.example and args.what:
        raise PracError("give a section to describe or --example NAME, not both")
    print(example(args.example) if args.example else reference(args.what or ""), end="")
    return 0
