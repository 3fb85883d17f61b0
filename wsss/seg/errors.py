"""Exceptions for user mistakes in stage 3 (tools turn them into one-line messages)."""


class SegUserError(Exception):
    """A mistake in the user's input (path, config, data) rather than a bug."""


class MissingFileError(SegUserError, FileNotFoundError):
    """A file or folder named by the config or the command line does not exist."""
