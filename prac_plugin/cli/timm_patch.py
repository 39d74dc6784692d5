"""``prac timm-patch``: print the lines to add to timm's ``train.py``, as a patch."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("timm-patch", help="print the lines to add to timm's train.py, as a patch: prac timm-patch | patch train.py")
    parser.add_argument("--script", choices=("current", "v1.0.22"), default="current",
                        help="current: the task-based train.py of timm 1.0.23 and later (default); v1.0.22: the earlier loop")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..integrations.timm.hook import PATCHES

    print(PATCHES[args.script].read_text(), end="")
    return 0
