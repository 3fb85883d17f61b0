"""The one exception type for user mistakes (bad files, bad arguments).

Command-line tools catch it and print its message as a one-line error (:func:`one_line`);
anything else is a bug and keeps its traceback.
"""
import errno
import os
import unicodedata
from contextlib import contextmanager
from typing import Iterator

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


#: errno values of a write refused by the storage (full, over quota, read-only, no permission,
#: failing), not by a bug: a tool reports them in one line instead of a traceback
DISK_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "EFBIG")
                        if hasattr(errno, name))


class WriteError(UserError, OSError):
    """An output that could not be written, named by its final path (not the temporary file):
    a :class:`UserError` for the tools' one-line ``error: PATH: strerror``, and still an
    :class:`OSError` (with ``errno``) for callers that treat a failed write as optional."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


@contextmanager
def disk_faults_named(path: str | os.PathLike) -> Iterator[None]:
    """Within ``with``: a write the storage refuses (see :data:`DISK_ERRNOS`) is raised as a
    :class:`WriteError` naming ``path``, the file being written; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from None
