"""Writing files so that a crash or a full disk never leaves a truncated one in place.

``write_atomically(path, write)`` writes through a temporary file *beside* ``path`` (same folder, so the same
file system), flushes and fsyncs it, then renames it over ``path`` and fsyncs the folder: a reader sees the old
file or the new one, never a mix. With ``keep_previous`` the file it replaces is kept as ``<name>.previous``,
a fallback should the new one ever turn out unreadable. If writing fails (a full disk), the temporary file is
removed and ``path`` is left as it was.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Callable

PREVIOUS_SUFFIX = ".previous"


def previous_version(path: str | Path) -> Path:
    """Where ``write_atomically(..., keep_previous=True)`` keeps the file it replaced."""
    path = Path(path)
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object], keep_previous: bool = False) -> Path:
    """Create or replace ``path`` with what ``write(binary_file)`` writes, atomically (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_version(path))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_folder(path.parent)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """``write_atomically`` for UTF-8 text."""
    return write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def fsync_folder(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
