"""The ``prac`` command (also ``python -m prac_plugin``).

One module per command in this package (``run``, ``quickstart``, ``recipe``, ...): each adds its sub-parser
(``add_parser``) and runs it (``run``), importing what it needs only when it runs, so building the command line
(``prac --help``) loads no torch. This module assembles the parser in the order of `COMMANDS` and keeps what all
commands share: paths checked before anything runs, and errors as one line with a non-zero exit, no traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Optional

from ..errors import PracError
from ..version import __version__
from . import export, index, prune, quickstart, recipe, report, retrain, run, sanity, select, stability, timm_patch

COMMANDS = (quickstart, recipe, run, select, index, prune, timm_patch, export, report, sanity, retrain, stability)  # --help's order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prac", description="Find lottery tickets efficiently on timm models and HF datasets.")
    parser.add_argument("--version", action="version", version=f"prac_plugin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


# arguments that name a file or folder: an empty one would silently mean the current folder or a default
PATH_ARGUMENTS = ("recipe", "output", "run_dir", "run_dirs", "file", "a", "b", "weights", "mask", "scores", "local")
RESUMING_COMMANDS = ("run", "select", "quickstart")
MAX_MESSAGE = 2000  # characters of one error line; values in messages are cut where they are worded


def _check_paths(args: argparse.Namespace) -> None:
    for name in PATH_ARGUMENTS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and not value.strip():
                flag = f"--{name}" if name in ("output", "mask", "local") else {"run_dirs": "RUN_DIR"}.get(name, name.upper())
                raise PracError(f"{flag} is an empty path {value!r}; give a file or folder name")


def _one_line(message: str) -> str:
    message = message.replace("\n", "\\n")  # one line, whatever a value held
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 200] + " ... " + message[-195:]


def _end_progress_bars() -> None:
    """Close the progress bars an error left open, so that its line starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


LOST_PEER_EXIT = 75  # EX_TEMPFAIL: nothing of this process is at fault; the same command again resumes


def _lost_peer(exc: BaseException) -> bool:
    if "torch.distributed" not in sys.modules:  # no process group was ever joined
        return False
    from ..compat.torch_private import is_lost_peer

    return is_lost_peer(exc)


def _peer_reason(exc: BaseException) -> str:
    """The transport's own words, without its source location and advice: "Read error [127.0.0.1]:38557:
    Connection reset by peer"."""
    text = _one_line(str(exc)).strip()
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0][:300]


def _process_name() -> str:
    import os

    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    return f"process {rank} of {world}" if rank is not None and world is not None else "this process"


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_paths(args)
        return args.func(args)
    except PracError as exc:
        _end_progress_bars()
        print("prac: error: " + _one_line(str(exc)), file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only, foreign or full output location is the user's to fix, not a bug
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        _end_progress_bars()
        where = f" {exc.filename!r}" if exc.filename is not None else ""
        advice = ("free some space or choose an output folder on another disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                  else "choose an output folder you can write to")
        print(f"prac: error: cannot write{where}: {exc.strerror}; {advice}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch.distributed.DistError is one
        if not _lost_peer(exc):
            raise
        _end_progress_bars()
        print(f"prac: error: {_process_name()} lost another process of this run ({_peer_reason(exc)}): a machine or process "
              "stopped. Run the same command again on every machine: completed levels are kept and the running level "
              "resumes from its newest checkpoint", file=sys.stderr)
        return LOST_PEER_EXIT
    except KeyboardInterrupt:
        _end_progress_bars()
        if args.command in RESUMING_COMMANDS:
            print("prac: interrupted; re-run the same command to continue: completed levels are kept and the running level "
                  "resumes from its newest checkpoint (from its start without one)", file=sys.stderr)
        else:
            print("prac: interrupted", file=sys.stderr)
        return 130

