"""Checkpoints that are written atomically and checked before they are loaded.

Writing: ``AtomicCheckpointIO`` is the Lightning checkpoint plugin of every Trainer ``run.py`` builds. It
serialises the checkpoint into a temporary file beside the target, fsyncs it and renames it into place
(``hedgehog.utils.atomic_files``), keeping the checkpoint it replaces as ``<name>.previous``. Lightning's own
writer goes through a temporary file in the system temp folder and *copies* it when the log folder is on another
file system, which a full disk can cut short. A write that fails leaves the earlier checkpoint untouched and
stops the run with a ``CheckpointError`` saying so.

Reading: ``checkpoint_problem(path)`` says why a file is not a loadable checkpoint (empty, truncated, damaged,
another format), without loading its tensors into memory. ``resume_checkpoint(stage_dir)`` picks the checkpoint a
stage resumes from: ``last.ckpt`` if it loads, else the previous one (the damaged file is moved aside to
``last.ckpt.damaged``), else a ``CheckpointError`` that names the file, what is wrong with it and how to start over.
"""

from __future__ import annotations

import errno
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from hedgehog.utils.atomic_files import previous_version, write_atomically
from hedgehog.utils.errors import CheckpointError

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on any file system and keep the replaced file as ``.previous``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        path = Path(path)
        try:
            write_atomically(path, lambda file: torch.save(checkpoint, file), keep_previous=True)
        except OSError as error:
            kept = f"The earlier checkpoint {path} is unchanged" if path.exists() else "No checkpoint was kept"
            if error.errno in FULL_DISK_ERRNOS:
                raise CheckpointError(
                    f"cannot write the checkpoint {path}: no space left on its disk ({error.strerror}). {kept}. Free "
                    f"space, or move the logs with paths.log_dir=<folder on another disk>, then rerun the same command "
                    f"to resume."
                ) from None
            raise CheckpointError(
                f"cannot write the checkpoint {path}: {error.strerror or error}. {kept}. Make the folder writable or "
                f"move the logs with paths.log_dir=<folder>, then rerun the same command to resume."
            ) from None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a loadable Lightning checkpoint, in a few words; None if it loads.

    Checks, cheapest first: the file exists and is not empty; it is a complete zip archive (the format of
    ``torch.save``; a truncated file has lost the archive's directory at its end); every member passes its
    CRC; ``torch.load`` (memory-mapped: tensors are not read into memory) gives a dict with a ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        return "the file does not exist"
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    if not zipfile.is_zipfile(path):
        return f"it is truncated or not a PyTorch checkpoint ({size:,} bytes; no complete zip archive)"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"it is damaged ({error})"
    if damaged is not None:
        return f"it is damaged (member {damaged} fails its checksum)"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # unpickling errors of every kind
        return f"it does not load ({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''})"
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return f"it is not a Lightning checkpoint (a {type(checkpoint).__name__} without 'state_dict')"
    return None


def resume_checkpoint(last: str | Path, stage: str, run_dir: str | Path) -> Path | None:
    """The checkpoint stage ``stage`` resumes from: ``last`` if it loads, else its previous version; None if
    there is neither (a fresh start). Raises ``CheckpointError`` when files exist but none loads."""
    last = Path(last)
    previous = previous_version(last)
    if not last.exists() and not previous.exists():
        return None
    problem = checkpoint_problem(last) if last.exists() else None
    if last.exists() and problem is None:
        return last
    previous_problem = checkpoint_problem(previous) if previous.exists() else "there is none"
    if previous_problem is None:
        if last.exists():
            damaged = last.with_name(last.name + DAMAGED_SUFFIX)
            os.replace(last, damaged)
            log.warning("checkpoint %s does not load: %s; moved it to %s and resuming from %s", last, problem,
                        damaged, previous)
            print(f"[{stage}] {last} does not load ({problem}); moved to {damaged.name}; resuming from "
                  f"{previous.name}", flush=True)
        return previous
    about_last = f"{last} does not load: {problem}" if last.exists() else f"{last} is missing"
    raise CheckpointError(
        f"cannot resume stage {stage!r}: the checkpoint {about_last}; its previous version {previous.name}: "
        f"{previous_problem}. To start this stage over, delete {last}"
        f"{' and ' + previous.name if previous.exists() else ''} and rerun the same command; to start the whole run "
        f"over, delete the run folder {run_dir}."
    )


def checked_weights(path: str | Path, stage: str) -> Path:
    """``path`` (a finished stage's ``final.ckpt``) if it loads; ``CheckpointError`` with the way out otherwise."""
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(
            f"the final weights of the finished stage {stage!r}, {path}, do not load: {problem}. Delete "
            f"{path.parent / 'done.json'} to train that stage again (from its last.ckpt if that loads), or delete "
            f"the run folder to start over."
        )
    return path
