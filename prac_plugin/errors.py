"""The one exception type for mistakes a user can make (bad recipe, data, file or value).

The CLI prints these on one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from typing import Any

SHOWN_CHARACTERS = 120  # of a value echoed in a message: enough to recognise it, never a screenful


class PracError(Exception):
    """A user-facing error: the message names the bad value and what is allowed."""


def shown(value: Any, limit: int = SHOWN_CHARACTERS) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with the full length said."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
