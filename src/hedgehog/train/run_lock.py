"""One owner per run folder: ``run.lock`` holds the pid and host of the process that runs in it.

Two starts of the same command share one run folder (its name comes from the command). Without a lock they
write the same CSV, checkpoints and W&B run at once. ``RunLock(run_dir)`` takes the folder before anything is
built; a second start stops with ``RunFolderBusy`` naming the process that holds it.

The lock is an exclusive ``flock`` on ``run.lock``: the kernel releases it when its process ends, however it
ends (``kill -9`` included), so a lock left by a dead process is taken over, with a message naming that process.
Where the file system does not support ``flock``, the pid and host in the file decide: a process that no longer
exists on this host has left a stale lock, which is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hedgehog.utils.errors import RunFolderBusy

LOCK_FILE = "run.lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_launched_worker() -> bool:
    """True in a process that a distributed launcher started for a rank other than 0 (Lightning, torchrun, SLURM):
    such a process shares the run folder with rank 0, which holds the lock."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0").strip() or "0"
        if value.isdigit() and int(value) != 0:
            return True
    return False


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def read_lock(path: Path) -> dict[str, Any]:
    """The owner record in a lock file (``{}`` when empty or unreadable)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def describe_owner(record: dict[str, Any]) -> str:
    if not record:
        return "another process"
    started = record.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"process {record.get('pid')} on host {record.get('host')} (started {when}: {record.get('command', '?')})"


class RunLock:
    """Context manager that holds ``<run_dir>/run.lock`` while a run works in ``run_dir``.

    ``taken_over`` is the record of the dead process whose lock was taken over, if any.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.taken_over: dict[str, Any] | None = None
        self._file: Any = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise ``RunFolderBusy``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            locked = self._flock(handle)
            previous = read_lock(self.path)
            if locked is False or (locked is None and self._held_elsewhere(previous)):
                raise RunFolderBusy(
                    f"the run folder {self.run_dir} is in use by {describe_owner(previous)}. Two runs of the same "
                    f"command would write the same checkpoints and logs. Wait for it to finish (rerunning then resumes "
                    f"or reports its results), or run this one elsewhere: hydra.run.dir=<folder> or "
                    f"paths.log_dir=<folder>. If that process is gone, delete {self.path}."
                )
            if previous and previous.get("pid") != os.getpid():
                self.taken_over = previous
            self._write_owner(handle)
        except BaseException:
            handle.close()
            raise
        self._file = handle

    def release(self) -> None:
        """Give the lock up (the file is emptied, then unlocked and closed)."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
        self._file.close()  # closing releases the flock
        self._file = None

    @staticmethod
    def _flock(handle: Any) -> bool | None:
        """True: locked; False: another process holds it; None: the file system has no flock."""
        try:
            import fcntl
        except ImportError:
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            return None  # ENOLCK, EOPNOTSUPP...: fall back to the pid and host in the file
        return True

    @staticmethod
    def _held_elsewhere(record: dict[str, Any]) -> bool:
        """Without flock: is the recorded owner a live process (another host's owner is assumed alive)?"""
        if not record or record.get("pid") == os.getpid():
            return False
        if record.get("host") != socket.gethostname():
            return True
        return process_alive(int(record.get("pid", -1)))

    @staticmethod
    def _write_owner(handle: Any) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
