"""The one exception type for user mistakes (bad files, bad arguments).

Command-line tools catch it and print its message as a one-line error; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: its message names the file and what is wrong."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch running out of GPU or CPU memory (a failure of that one input)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text)
