"""A run folder that cannot be written or sits on a full disk is reported before any work, in one paragraph."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import pytest

from hedgehog.train.cli_errors import os_error_message
from hedgehog.utils.errors import LogFolderError
from hedgehog.train.log_folder import MIN_FREE_BYTES, check_run_folder

Usage = namedtuple("Usage", "total used free")


def test_a_writable_folder_with_room_passes(tmp_path):
    check_run_folder(tmp_path / "logs" / "run")
    assert (tmp_path / "logs" / "run").is_dir() and not list((tmp_path / "logs" / "run").iterdir())


def test_a_full_disk_is_reported_with_the_free_space_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    with pytest.raises(LogFolderError) as info:
        check_run_folder(tmp_path / "run")
    message = str(info.value)
    assert "is full: 1.0 MiB free" in message and f"{MIN_FREE_BYTES // 2**20} MiB" in message
    assert "paths.log_dir=<folder>" in message and "\n" not in message


def test_a_folder_behind_a_file_is_reported(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LogFolderError, match="cannot write the run folder .*file/run: Not a directory"):
        check_run_folder(tmp_path / "file" / "run")


def test_file_system_errors_during_a_run_become_one_paragraph():
    full = os_error_message(OSError(errno.ENOSPC, "No space left on device", "/logs/run/csv/metrics.csv"))
    assert full.startswith("no space left to write /logs/run/csv/metrics.csv") and "resumes" in full
    denied = os_error_message(PermissionError(errno.EACCES, "Permission denied", "/logs/run"))
    assert denied.startswith("cannot write /logs/run: Permission denied") and "paths.log_dir=" in denied
    assert os_error_message(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None  # not a write problem
    assert os_error_message(ValueError("not an OSError")) is None
