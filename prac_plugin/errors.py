"""The one exception type for mistakes a user can make (bad recipe, data, file or value).

The CLI prints these on one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class PracError(Exception):
    """A user-facing error: the message names the bad value and what is allowed."""
