"""OmegaConf resolvers used by ``conf/`` (``${hh.<name>:...}``); importing this module registers them.

``run.py`` imports it before Hydra composes the config; tests that compose configs import it too.
"""

from __future__ import annotations

import hashlib
import re
import sys
from typing import Any

from omegaconf import OmegaConf

MAX_NAME_LENGTH = 120


def short_hash(text: str, length: int = 8) -> str:
    """First ``length`` hex digits of sha256(text): stable across runs, machines and Python versions."""
    return hashlib.sha256(str(text).encode()).hexdigest()[:length]


def run_name(experiment: str | None, overrides: str | None = "") -> str:
    """Folder name of a run: ``<experiment>`` or ``<experiment>__<overrides>`` (Hydra's override_dirname).

    Deterministic, so rerunning the same command lands in the same folder and resumes. Characters that are
    awkward in paths become ``_``; names longer than 120 characters are cut and suffixed with a hash of the
    full name, so two different override lists never share a folder.
    """
    name = "default" if experiment is None or experiment == "" else str(experiment)
    if overrides:
        name = f"{name}__{overrides}"
    name = re.sub(r"[^A-Za-z0-9._=,+\-]", "_", name)
    if len(name) > MAX_NAME_LENGTH:
        name = f"{name[: MAX_NAME_LENGTH - 9]}-{short_hash(name)}"
    return name


def sweep_name(experiment: str | None, exclude_keys: Any = ()) -> str:
    """Folder name of a multirun: ``run_name`` of the experiment and the command line's overrides (sweeps
    included, e.g. ``attention=softmax,hedgehog``; ``hydra.*`` and ``exclude_keys`` left out).

    Read from ``sys.argv`` because Hydra resolves the sweep folder again inside every job, whose own overrides
    are that job's values only; the command line is the same for the sweep and all its jobs.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    excluded = {str(key) for key in (exclude_keys or ())}
    arguments = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    overrides = OverridesParser.create().parse_overrides(arguments)
    kept = sorted(
        o.input_line for o in overrides if not o.key_or_group.startswith("hydra") and o.key_or_group not in excluded
    )
    return run_name(experiment, ",".join(kept))


def precision_for(accelerator: str | None) -> str:
    """``bf16-mixed`` where the run will be on a CUDA device (``gpu``/``cuda``, or ``auto`` with one visible)."""
    accelerator = str(accelerator or "auto").lower()
    if accelerator in ("gpu", "cuda"):
        return "bf16-mixed"
    if accelerator == "auto":
        import torch

        if torch.cuda.is_available():
            return "bf16-mixed"
    return "32-true"


def register() -> None:
    for name, function in {
        "hh.run_name": run_name,
        "hh.sweep_name": sweep_name,
        "hh.short_hash": short_hash,
        "hh.precision_for": precision_for,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register()
