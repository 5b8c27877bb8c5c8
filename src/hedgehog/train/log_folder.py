"""Is the run folder usable: can it be created and written, and does its disk have room?

Checked before torch starts, so that a log folder on a read-only mount, behind a file or on a full disk costs a
second and one paragraph instead of a failed run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hedgehog.utils.errors import LogFolderError

MIN_FREE_BYTES = 64 * 2**20  # room for the logs and checkpoints of a small run
FIX = "Point the run at another folder with paths.log_dir=<folder> (or the environment variable HEDGEHOG_LOG_DIR)"


def check_run_folder(run_dir: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise ``LogFolderError`` if ``run_dir`` cannot be created or written, or its disk has less than
    ``min_free_bytes`` free."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise LogFolderError(
            f"cannot write the run folder {run_dir}: {error.strerror or error}"
            f"{f' ({error.filename})' if error.filename and str(error.filename) != str(run_dir) else ''}. {FIX}."
        ) from None
    free = shutil.disk_usage(run_dir).free
    if free < min_free_bytes:
        raise LogFolderError(
            f"the disk holding the run folder {run_dir} is full: {free / 2**20:.1f} MiB free, and a run needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB for its checkpoints and logs. Free space there, or: {FIX}."
        )
