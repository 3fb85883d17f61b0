"""Atomic file writes: a reader never sees a half-written output, and nothing is written
outside the folder it belongs to (:func:`~tagclip_cls.runtime.ids.inside_root`)."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, IO

from tagclip_cls.runtime.errors import disk_faults_named
from tagclip_cls.runtime.ids import inside_root

NEW_FILE_MODE = 0o666  # what open(path, "w") asks for; the kernel then applies the umask


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file next to ``path``; returns its descriptor and path.

    Unlike ``tempfile.mkstemp`` (always 0600), it is created with the permissions a plain
    ``open(path, "w")`` gives: ``0o666`` less the umask (or the folder's default ACL), applied
    by the kernel. So nothing reads or changes the process umask, which would race with other
    threads creating files, and a later ``os.umask`` call takes effect on the next write.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE), tmp
        except FileExistsError:  # name taken (about 1 in 2**48): draw another
            continue


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "w",
                 root: str | os.PathLike | None = None) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it into place; refused
    first (:class:`UserError`) when ``path`` leads outside ``root``, the output folder it belongs
    to (default: its own folder, so that at least a link in its place is never followed out). A
    text ``mode`` writes UTF-8 whatever the locale (a class name such as 'café' under ``LANG=C``).
    A write the storage refuses (full, read-only, ...) leaves no temporary file and raises a
    :class:`~tagclip_cls.runtime.errors.WriteError` naming ``path``."""
    path = inside_root(Path(path).parent if root is None else root, path)
    with disk_faults_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        try:
            with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def write_text_atomic(path: str | os.PathLike, text: str, root: str | os.PathLike | None = None) -> None:
    atomic_write(path, lambda f: f.write(text), root=root)


def write_json_atomic(path: str | os.PathLike, obj: Any, root: str | os.PathLike | None = None) -> None:
    atomic_write(path, lambda f: (json.dump(obj, f, indent=1), f.write("\n")), root=root)
