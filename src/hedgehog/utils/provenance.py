"""Which code produced a result: the commit of the ``hedgehog`` package that actually ran, and whether it was on main.

``code_version()`` looks at the git checkout holding the imported ``hedgehog`` package (not the folder ``run.py``
was started from: with an editable install or ``PYTHONPATH`` the two can differ) and returns its commit, whether
tracked files had uncommitted changes (``dirty``) and the checkout's path. ``results.json`` records it as ``git``.

``code_status(git_record, repository)`` says, for a recorded result, whether its code is a commit on ``main`` of
``repository``: the reports mark every other run.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

MAIN_BRANCHES = ("main", "origin/main", "refs/remotes/origin/main")
ON_MAIN = "main"
NOT_ON_MAIN = "not on main"
UNCOMMITTED = "uncommitted changes"
UNKNOWN = "unknown"
MAX_CHANGED_FILES = 20


def _git(repository: str | Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=repository, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


def package_dir() -> Path:
    """The folder of the ``hedgehog`` package that is imported in this process."""
    import hedgehog

    return Path(hedgehog.__file__).resolve().parent


def code_version(source: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "changed_files", "repository"}`` of the git checkout holding ``source`` (default: the
    imported ``hedgehog`` package); ``commit`` and ``dirty`` are None outside a checkout."""
    where = Path(source) if source is not None else package_dir()
    top = _git(where, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0:
        return {"commit": None, "dirty": None, "changed_files": [], "repository": None}
    repository = top.stdout.strip()
    head = _git(repository, "rev-parse", "HEAD")
    status = _git(repository, "status", "--porcelain", "--untracked-files=no")
    changed = [line[3:] for line in status.stdout.splitlines()] if status is not None and status.returncode == 0 else None
    return {
        "commit": head.stdout.strip() if head is not None and head.returncode == 0 else None,
        "dirty": None if changed is None else bool(changed),
        "changed_files": (changed or [])[:MAX_CHANGED_FILES],
        "repository": repository,
    }


def is_on_main(commit: str, repository: str | Path) -> bool | None:
    """Whether ``commit`` is on the main branch of ``repository`` (an ancestor of ``main`` or ``origin/main``);
    None when the repository has no main branch to compare with."""
    return _is_on_main(str(commit), str(repository))


@lru_cache(maxsize=None)
def _is_on_main(commit: str, repository: str) -> bool | None:
    found_main = False
    for branch in MAIN_BRANCHES:
        exists = _git(repository, "rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}")
        if exists is None or exists.returncode != 0:
            continue
        found_main = True
        ancestor = _git(repository, "merge-base", "--is-ancestor", commit, branch)
        if ancestor is not None and ancestor.returncode == 0:
            return True
    return False if found_main else None


def code_status(git_record: dict[str, Any] | None, repository: str | Path) -> str:
    """``main`` (a commit on main, no uncommitted changes), ``uncommitted changes``, ``not on main``, or ``unknown``
    (no commit recorded, or no main branch in ``repository``)."""
    commit = (git_record or {}).get("commit")
    if not commit:
        return UNKNOWN
    on_main = is_on_main(str(commit), repository)
    if on_main is None:
        return UNKNOWN
    if not on_main:
        return NOT_ON_MAIN
    if (git_record or {}).get("dirty"):
        return UNCOMMITTED
    return ON_MAIN


def code_label(git_record: dict[str, Any] | None, repository: str | Path) -> str:
    """The mark a report puts beside a run: empty for code on main, else the status and short commit."""
    status = code_status(git_record, repository)
    if status == ON_MAIN:
        return ""
    commit = (git_record or {}).get("commit")
    return f"{status} ({str(commit)[:8]})" if commit else status
