"""Errors that stop a run with a short message and exit status 2 (``run.py`` prints them without a traceback).

Each message names the problem (the config key, the file, the step) and the fix.
"""

from __future__ import annotations


class HedgehogError(Exception):
    """Base class: a problem the user can fix; ``run.py`` prints ``str(error)`` and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(HedgehogError):
    """A config value or key that cannot work (unknown key, wrong type, unknown attention name...)."""


class DataNotFoundError(HedgehogError):
    """A data file or folder the run needs is missing."""


class NonFiniteLossError(HedgehogError):
    """Training produced a NaN/inf loss or gradient; raised by ``hedgehog.callbacks.nan_guard.NaNGuard``."""


class RunInterrupted(HedgehogError):
    """The run was interrupted (Ctrl-C); rerunning the same command resumes it."""

    exit_code = 130


class RunPaused(HedgehogError):
    """The sitting ended before the run did (``hedgehog.callbacks.sitting``): the stage's ``last.ckpt`` holds the
    step it reached, no results were written, and rerunning the same command continues from there."""

    exit_code = 3

    def __init__(self, message: str, stage: str = "", step: int = 0) -> None:
        super().__init__(message)
        self.stage = stage
        self.step = step


class RunFolderBusy(HedgehogError):
    """Another live process runs in the same run folder (``hedgehog.train.run_lock``)."""


class CheckpointError(HedgehogError):
    """A checkpoint cannot be read (truncated, damaged, another format) or written (disk full)."""


class DataMismatchError(HedgehogError):
    """A data file differs from what it should be: from the data folder's checksums, or from the data the run
    folder's earlier work was done on."""


class LogFolderError(HedgehogError):
    """The run folder cannot be written, or its disk is full."""


class ModelNotFoundError(HedgehogError):
    """A pretrained model is neither on disk nor downloadable (the Hugging Face hub is unreachable)."""
