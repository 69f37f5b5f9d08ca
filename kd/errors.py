"""The one error type for user mistakes: the CLI prints its message on one line and exits 2."""


class KdError(Exception):
    """A problem with the user's input (data, model, config, run folder), not a bug."""

    exit_code = 2
