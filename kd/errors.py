"""The one error type for user mistakes: the CLI prints its message on one line and exits 2."""

import os
import sys


class KdError(Exception):
    """A problem with the user's input (data, model, config, run folder), not a bug."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """An exception's first line for a one-line error message, else its type name (some carry no text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def say_error(message: str) -> None:
    """`kd: error: <message>`, one line on stderr; under torchrun only the first process says it (every process
    hits the same error)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"kd: error: {message}", file=sys.stderr)
