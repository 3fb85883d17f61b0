"""Exceptions for user mistakes in stage 3: :class:`~tagclip_cls.runtime.errors.UserError` subclasses,
so that every tool's ``run_cli`` prints them as one line, as any other user mistake."""
from tagclip_cls.runtime.errors import UserError


class SegUserError(UserError):
    """A mistake in the user's input (path, config, data) rather than a bug.

    A DataLoader worker re-raises it in the main process with the worker's traceback folded into
    the message; its text is then that message's last line without the class name."""

    def __str__(self) -> str:
        last = (super().__str__().strip().splitlines() or [type(self).__name__])[-1]
        for cls in type(self).__mro__:
            prefix = f"{cls.__module__}.{cls.__qualname__}: "
            if issubclass(cls, SegUserError) and last.startswith(prefix):
                return last[len(prefix):]
        return last


class MissingFileError(SegUserError, FileNotFoundError):
    """A file or folder named by the config or the command line does not exist."""
