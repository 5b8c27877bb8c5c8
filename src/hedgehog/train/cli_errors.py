"""One voice for every error a user can fix: a short paragraph on stderr, exit status 2, no traceback.

``run.py`` runs inside ``errors_in_one_paragraph(config_dir)``. It turns into one paragraph:

- ``HedgehogError`` (bad config values, missing data, bad checkpoints, a busy run folder...), exit ``error.exit_code``;
- Hydra's composition errors: an unknown config-group option (``experiment=nope``: the choices, listed compactly),
  a key that does not exist (``foo.bar=1``), an override that does not parse;
- file-system errors of the run's own files: a log folder that cannot be created or written, a full disk.

Anything else is a bug and keeps its traceback. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from hedgehog.utils.errors import HedgehogError

USAGE_ERROR = 2
PLACEHOLDER = "<attention>"
MAX_KEYS_LISTED = 30
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def report(message: str, exit_code: int = USAGE_ERROR) -> SystemExit:
    """Print ``error: <message>`` on stderr and return the ``SystemExit`` to raise."""
    print(f"\nerror: {message}\n", file=sys.stderr, flush=True)
    return SystemExit(exit_code)


@contextlib.contextmanager
def errors_in_one_paragraph(config_dir: str | Path) -> Iterator[None]:
    """Report user errors raised inside the block as one paragraph and exit; let every other error through."""
    try:
        yield
    except HedgehogError as error:
        raise report(str(error), error.exit_code) from None
    except Exception as error:
        message = hydra_error_message(error, Path(config_dir)) or os_error_message(error)
        if message is None:
            raise
        raise report(message) from None


# --- Hydra ----------------------------------------------------------------------------------------------


def hydra_error_message(error: BaseException, config_dir: Path) -> str | None:
    """One paragraph for Hydra's composition and override errors; None for any other error."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        return unknown_option_message(str(error.missing_cfg_file), config_dir, list(error.options or []))
    if isinstance(error, OverrideParseException):
        return (
            f"cannot read the override {error.override!r}: {_one_line(error.message)}. Overrides look like "
            f"key=value (change), +key=value (add), ~key (remove); quote values with spaces or commas: key='a,b'."
        )
    if isinstance(error, ConfigCompositionException):
        cause = error.__cause__
        full_key = getattr(cause, "full_key", None)
        if full_key and "not in struct" in str(cause):
            typed = re.search(r"Could not override '([^']+)'", str(error))
            return unknown_key_message(typed.group(1) if typed else str(full_key), str(full_key),
                                       getattr(cause, "parent_node", None))
        return (
            f"cannot apply the command line: {_one_line(str(error))}. Overrides look like key=value (change), "
            f"+key=value (add), ~key (remove); `python run.py --cfg job` prints the composed config."
        )
    return None


def unknown_option_message(missing: str, config_dir: Path, hydra_options: list[str] | None = None) -> str:
    """``experiment/nope`` -> unknown experiment 'nope', did you mean..., the choices of conf/experiment/. Hydra's
    own groups (``hydra/launcher/nope``) list the options Hydra found."""
    group, _, name = missing.partition("/")
    if group == "hydra":
        group, _, name = missing.rpartition("/")
        options = ", ".join(hydra_options or []) or "none"
        return f"unknown {group} {name!r}{_did_you_mean(name, hydra_options or [])}. Choices: {options}."
    choices = group_options(config_dir, group)
    if not choices:
        return f"no config {missing!r}: conf/{missing}.yaml does not exist."
    hint = _did_you_mean(name, choices)
    return (
        f"unknown {group} {name!r}{hint}: conf/{group}/{name}.yaml does not exist. Choices: "
        f"{compact_choices(choices, _attention_names(config_dir))}. Pick one with {group}=<name>."
    )


def unknown_key_message(typed: str, missing: str, parent: object) -> str:
    """``foo.bar=1`` where ``foo`` does not exist -> the keys that do exist there, and how to add one on purpose."""
    from omegaconf import DictConfig

    parent_key, _, leaf = missing.rpartition(".")
    existing = sorted(str(k) for k in parent.keys()) if isinstance(parent, DictConfig) else []
    where = f"{parent_key!r} has" if parent_key else "the config has"
    listed = ", ".join(existing[:MAX_KEYS_LISTED]) + (", ..." if len(existing) > MAX_KEYS_LISTED else "")
    return (
        f"unknown key {typed!r}: {where} no key {leaf!r}{_did_you_mean(leaf, existing)}. Keys there: "
        f"{listed or 'none'}. Fix the spelling, or add a new key on purpose with +{typed}=<value>."
    )


def group_options(config_dir: Path, group: str) -> list[str]:
    """The option names of a config group: ``conf/<group>/**/*.yaml`` without the suffix (``glue/sst2``), leaving
    out files starting with ``_`` (shared defaults)."""
    folder = config_dir / group
    if not folder.is_dir():
        return []
    return sorted(
        path.relative_to(folder).with_suffix("").as_posix()
        for path in folder.rglob("*.yaml")
        if not path.name.startswith("_")
    )


def compact_choices(names: list[str], attention_names: list[str]) -> str:
    """Option names in few words: ``mqar, mqar_<attention>, ..., glue/<name> (cola, mnli, ...)`` where a family
    exists for at least three attention types, with the attention types listed once at the end."""
    families: dict[str, list[str]] = defaultdict(list)
    folders: dict[str, list[str]] = defaultdict(list)
    items: list[str] = []
    for name in names:
        folder, slash, leaf = name.rpartition("/")
        if slash:
            folders[folder].append(leaf)
            continue
        head, underscore, tail = name.rpartition("_")
        if underscore and tail in attention_names:
            families[head].append(name)
        else:
            items.append(name)
    used_placeholder = False
    for head, members in families.items():
        if len(members) >= 3:
            items.append(f"{head}_{PLACEHOLDER}")
            used_placeholder = True
        else:
            items.extend(members)
    items.sort()
    items += [f"{folder}/<name> ({', '.join(leaves)})" for folder, leaves in sorted(folders.items())]
    text = ", ".join(items)
    if used_placeholder:
        text += f" (where {PLACEHOLDER} is one of {', '.join(attention_names)})"
    return text


def _attention_names(config_dir: Path) -> list[str]:
    try:
        from hedgehog.train.validation import attention_choices

        return list(attention_choices())
    except Exception:  # the registry cannot be read: the attention yaml files name the types too
        return group_options(config_dir, "attention")


# --- files ----------------------------------------------------------------------------------------------


def os_error_message(error: BaseException) -> str | None:
    """One paragraph for a full disk or a file the run cannot create or write; None for other errors."""
    if not isinstance(error, OSError) or error.errno not in WRITE_ERRNOS | FULL_ERRNOS:
        return None
    where = error.filename or "a file of the run"
    fix = "Point the run at another folder with paths.log_dir=<folder> (or the environment variable HEDGEHOG_LOG_DIR)"
    if error.errno in FULL_ERRNOS:
        return (
            f"no space left to write {where} ({error.strerror}). Free space on that disk, or: {fix}. Rerunning the "
            f"same command resumes from the last checkpoint."
        )
    return f"cannot write {where}: {error.strerror}. {fix}, a folder you can write to."


# --- helpers --------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip()).rstrip(".")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
