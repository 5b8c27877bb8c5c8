"""Which data a run read, and whether it is the data it should be.

Every data file a run reads is identified by its size, line count and sha256 (``identify``). Three uses:

1. ``results.json`` records the identities (``data_files``), so a result says what it was computed from;
2. the data folder's own checksums are checked before training (``check_expected``): ``SHA256SUMS`` (the
   ``sha256sum`` format) beside the data and the integrity table of its ``README.md`` (file, bytes, lines,
   sha256), as the shared data folder ships them. A file that differs (truncated, edited) stops the run with a
   message naming the file, what was expected and what was found;
3. the run folder keeps the identities it was started with (``data_identity.json``): a rerun whose data differs
   neither resumes that folder's checkpoints nor serves its results (``compare``).

Which files: ``datamodule.data_files()`` where the DataModule has that method (a new DataModule only has to list
its files there); otherwise the ``*_file``/``*_path`` values of the data config that name existing files.
DataModules that generate their data (MQAR) list none.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

from hedgehog.utils.atomic_files import write_text_atomically
from hedgehog.utils.errors import DataMismatchError

CHECKSUMS_FILE = "SHA256SUMS"
README_FILE = "README.md"
IDENTITY_FILE = "data_identity.json"
CHUNK = 1 << 20
PATH_KEY_SUFFIXES = ("_file", "_path")
# A row of the data README's integrity table: | `path` | bytes | lines | `sha256` |
README_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([\d,]+)\s*\|\s*([\d,]+)\s*\|\s*`([0-9a-f]{64})`\s*\|")


def data_files(datamodule: Any, data_config: Any = None) -> list[Path]:
    """The files ``datamodule`` reads: its ``data_files()``, else the config's ``*_file``/``*_path`` values that
    name existing files. Sorted, without duplicates."""
    listed = getattr(datamodule, "data_files", None)
    if callable(listed):
        files = [Path(p) for p in listed()]
    else:
        files = []
        for key, value in dict(data_config or {}).items():
            if str(key).endswith(PATH_KEY_SUFFIXES) and isinstance(value, (str, Path)) and Path(value).is_file():
                files.append(Path(value))
    return sorted({path.expanduser().resolve() for path in files})


def relative_name(path: Path, data_dir: str | Path | None) -> str:
    """``path`` relative to the data folder where it lies inside it (``wikitext/wiki.valid.tokens``), else absolute."""
    if data_dir is not None:
        try:
            return path.resolve().relative_to(Path(data_dir).expanduser().resolve()).as_posix()
        except ValueError:
            pass
    return str(path.resolve())


def file_identity(path: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """``{"path", "bytes", "lines", "sha256"}`` of one file (lines: newline-terminated lines, plus a last line
    without a newline if there is one)."""
    path = Path(path)
    digest = hashlib.sha256()
    lines = 0
    size = 0
    last = b"\n"
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    lines += last != b"\n"
    return {"path": relative_name(path, data_dir), "bytes": size, "lines": lines, "sha256": digest.hexdigest()}


def identify(files: Iterable[str | Path], data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """``file_identity`` of every file, in order."""
    return [file_identity(path, data_dir) for path in files]


# --- what the data folder says its files should be ----------------------------------------------------------


def expected_identities(data_dir: str | Path | None) -> dict[str, dict[str, Any]]:
    """Relative path -> expected ``sha256`` (and ``bytes``, ``lines`` where the README's table gives them), from
    ``SHA256SUMS`` and ``README.md`` in ``data_dir``; empty when the folder has neither."""
    if data_dir is None:
        return {}
    folder = Path(data_dir).expanduser()
    expected: dict[str, dict[str, Any]] = {}
    readme = folder / README_FILE
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
            row = README_ROW.match(line.strip())
            if row:
                name, size, lines, sha = row.groups()
                expected[_normal(name)] = {"bytes": int(size.replace(",", "")), "lines": int(lines.replace(",", "")),
                                           "sha256": sha}
    checksums = folder / CHECKSUMS_FILE
    if checksums.is_file():
        for line in checksums.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                expected.setdefault(_normal(parts[1]), {})["sha256"] = parts[0]
    return expected


def _normal(name: str) -> str:
    name = name.strip().lstrip("*")  # sha256sum marks binary mode with '*'
    return name[2:] if name.startswith("./") else name


def check_expected(identities: list[dict[str, Any]], data_dir: str | Path | None) -> int:
    """Raise ``DataMismatchError`` for the first file whose identity differs from what the data folder expects;
    return how many files were checked."""
    expected = expected_identities(data_dir)
    checked = 0
    for found in identities:
        wanted = expected.get(found["path"])
        if wanted is None:
            continue
        checked += 1
        if wanted["sha256"] == found["sha256"]:
            continue
        where = Path(data_dir).expanduser() / found["path"]  # type: ignore[arg-type]
        raise DataMismatchError(
            f"data file {where} is not the expected file: {describe(found)}, but {CHECKSUMS_FILE} / {README_FILE} in "
            f"{data_dir} expect {describe(wanted)}. It is truncated or changed: restore it from the source the data "
            f"README names (or point paths.data_dir at an intact copy); if the change is intended, update "
            f"{CHECKSUMS_FILE} and the README's table there."
        )
    return checked


def describe(identity: dict[str, Any]) -> str:
    """``3,760 lines, 1,121,681 bytes, sha256 f0737ed31fc1...`` (the parts that are known)."""
    parts = []
    if "lines" in identity:
        parts.append(f"{identity['lines']:,} lines")
    if "bytes" in identity:
        parts.append(f"{identity['bytes']:,} bytes")
    parts.append(f"sha256 {identity['sha256'][:12]}...")
    return ", ".join(parts)


# --- what the run folder was started with ---------------------------------------------------------------


def compare(recorded: list[dict[str, Any]] | None, current: list[dict[str, Any]]) -> str | None:
    """The first difference between the identities a run folder recorded and the current ones, in words; None if
    they are the same data (files matched by their path relative to the data folder) or nothing was recorded."""
    if recorded is None:
        return None
    before = {item["path"]: item for item in recorded}
    now = {item["path"]: item for item in current}
    for path in sorted(before.keys() | now.keys()):
        if path not in now:
            return f"{path} was read then and is not read now"
        if path not in before:
            return f"{path} is read now and was not then"
        if before[path]["sha256"] != now[path]["sha256"]:
            return f"{path} was {describe(before[path])}; it is now {describe(now[path])}"
    return None


def read_recorded(run_dir: str | Path) -> list[dict[str, Any]] | None:
    """The identities stored in ``run_dir`` by ``record``; None if none were stored."""
    path = Path(run_dir) / IDENTITY_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    files = record.get("data_files") if isinstance(record, dict) else None
    return files if isinstance(files, list) else None


def record(run_dir: str | Path, identities: list[dict[str, Any]], data_dir: str | Path | None) -> Path:
    """Store the identities in ``run_dir/data_identity.json`` (atomically)."""
    content = {"data_dir": None if data_dir is None else str(data_dir), "data_files": identities}
    return write_text_atomically(Path(run_dir) / IDENTITY_FILE, json.dumps(content, indent=2) + "\n")


def stale_run_message(run_dir: str | Path, difference: str, complete: bool) -> str:
    """Why a run folder's earlier work cannot be used with the current data, and what to do."""
    what = "holds results computed" if complete else "holds checkpoints trained"
    return (
        f"the run folder {run_dir} {what} on other data: {difference}. They do not belong to the current data, so "
        f"they are neither served nor resumed. Delete that folder to run again on the current data, or run "
        f"elsewhere with hydra.run.dir=<folder> (or paths.log_dir=<folder>)."
    )
