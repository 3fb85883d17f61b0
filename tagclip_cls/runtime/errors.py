"""The one exception type for user mistakes (bad files, bad arguments).

Command-line tools catch it and print its message as a one-line error (:func:`one_line`);
anything else is a bug and keeps its traceback.
"""
import unicodedata

#: the characters that end a line or steer a terminal: controls and line/paragraph separators
_UNPRINTABLE = ("Cc", "Zl", "Zp")


class UserError(Exception):
    """A problem with the user's input: its message names the file and what is wrong."""


def one_line(text: str) -> str:
    """``text`` with every control character and line separator escaped as Python writes it
    (``\\n``, ``\\x1b``, ``\\u2028``): a message that quotes a file name or id the user chose
    stays one line, and can't move the cursor."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _UNPRINTABLE else ch
                   for ch in text)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch running out of GPU or CPU memory (a failure of that one input)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text)
