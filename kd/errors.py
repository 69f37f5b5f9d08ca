"""The one error type for user mistakes: the CLI prints its message on one line and exits 2."""


class KdError(Exception):
    """A problem with the user's input (data, model, config, run folder), not a bug."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """An exception's first line for a one-line error message, else its type name (some carry no text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
