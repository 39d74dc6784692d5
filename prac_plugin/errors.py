"""The one exception type for mistakes a user can make (bad recipe, data, file or value).

The CLI prints these on one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

import stat
from pathlib import Path
from typing import Any

SHOWN_CHARACTERS = 120  # of a value echoed in a message: enough to recognise it, never a screenful


class PracError(Exception):
    """A user-facing error: the message names the bad value and what is allowed."""


def shown(value: Any, limit: int = SHOWN_CHARACTERS) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with the full length said."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def not_a_file(path: str | Path) -> str:
    """Why ``path`` cannot be read as a file ("does not exist", "is a directory", ...); '' for a regular file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a symbolic link to a missing file" if path.is_symlink() else "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a socket"
    return f"is {kind}, not a regular file"
