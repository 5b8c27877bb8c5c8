"""``results.json``: what a run produced and under which conditions, one file per run folder.

Layout (keys always present; metric names as the regime logs them)::

    {
      "status": "complete",
      "experiment": "mqar_hedgehog", "attention": "hedgehog", "attention_options": {...},
      "model": "gpt_tiny", "data": "mqar", "regime": "causal_lm", "seed": 0,
      "metrics": {"test/acc": 0.98, "test/loss": ..., "val/acc": ..., ...},   # final: test + last stage's val
      "chance": {"acc": {"a random value (1/64)": 0.016, ...}},   # the DataModule's chance_levels(), if any
      "stages": {"train": {"metrics": {"val/acc": ...}, "global_step": 600, "epoch": 1, "wall_time_s": ...}},
      "num_parameters": 123456,
      "config_hash": "3f2a9c1b7d40",
      "git": {"commit": "...", "dirty": false, "changed_files": [], "repository": "/abs/checkout"},   # provenance
      "data_dir": "/abs/data", "data_files": [{"path": "wikitext/wiki.valid.tokens", "bytes": ..., "lines": ...,
                                               "sha256": "..."}],   # hedgehog.train.data_identity
      "wall_time_s": 141.2, "resumed": false,
      "device": {"accelerator": "cpu", "name": "...", "world_size": 1, "precision": "32-true"},
      "versions": {"python": ..., "torch": ..., "lightning": ...},
      "run_dir": "/abs/path", "overrides": ["experiment=mqar", "attention=softmax"]
    }
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from hedgehog.utils.atomic_files import write_text_atomically

RESULTS_FILE = "results.json"
# Nodes that say where things are or how they are reported, not what is computed: left out of the hash.
UNHASHED_KEYS = ("paths", "logger", "callbacks", "hydra", "task_name")


def config_hash(cfg: DictConfig) -> str:
    """12 hex digits identifying what a run computes: the config before interpolation (so machine paths do
    not enter), without paths, loggers and callbacks."""
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    for key in UNHASHED_KEYS:
        container.pop(key, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def device_info(trainer: Any) -> dict[str, Any]:
    """Accelerator, device name, number of processes and precision of ``trainer``."""
    import torch

    accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
    if accelerator == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    else:
        name = platform.processor() or platform.machine() or "cpu"
    return {
        "accelerator": accelerator,
        "name": name,
        "world_size": int(trainer.world_size),
        "num_nodes": int(trainer.num_nodes),
        "precision": str(trainer.precision),
        "cpu_count": os.cpu_count(),
    }


def versions() -> dict[str, str]:
    import lightning
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__}


def as_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metric name -> float, for anything that converts (tensors, numbers); NaN/inf are kept as strings."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            number = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):
            continue
        out[str(key)] = number if math.isfinite(number) else str(number)  # type: ignore[assignment]
    return dict(sorted(out.items()))


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file beside it, fsync, rename)."""
    return write_text_atomically(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_results(path: str | Path) -> dict[str, Any] | None:
    """The parsed ``results.json`` at ``path`` (a file or a run folder), or None if absent or unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
