"""Save and load converted models as Hugging Face folders.

``save_converted(model, path)`` writes what ``save_pretrained`` writes (config.json with a ``hedgehog`` section
``{"attention": ..., "options": {...}}``, the model's weights with LoRA adapters merged in, generation config)
plus ``hedgehog_feature_maps.safetensors`` with every converted layer's feature-map tensors. The folder also
loads with plain ``from_pretrained`` as the original softmax architecture (with the finetuned weights);
``load_converted(path)`` loads it, converts it again and restores the feature maps.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from hedgehog.conversion.convert import CONFIG_SECTION, _unwrap, conversion_info, convert

FEATURE_MAPS_FILE = "hedgehog_feature_maps.safetensors"
_FEATURE_MAP_KEY = ".hedgehog."


def _merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the transformers model inside a peft LoRA model with every adapter merged into its base
    weight (``W + scaling * B A``), under the base model's own key names."""
    from peft.tuners.lora import LoraLayer

    base = _unwrap(model)
    state = {}
    for key, value in base.state_dict().items():
        if "lora_" in key or ".original_module." in key:
            continue
        key = key.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        state[key] = value
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not getattr(module, "merged", False):
            weight = module.get_base_layer().weight
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            state[f"{name}.weight"] = (weight + delta).detach().to(weight.dtype)
    return state


def save_converted(model: nn.Module, path: str | os.PathLike, *, tokenizer=None, max_shard_size: str = "5GB") -> Path:
    """Write a converted model (optionally a peft LoRA model over one) to the folder ``path``; returns it.

    LoRA adapters are merged into the saved weights; the live model is not changed. ``tokenizer`` (optional)
    is saved alongside.
    """
    from safetensors.torch import save_file

    base = _unwrap(model)
    if conversion_info(base) is None:
        raise ValueError(
            f"save_converted: {type(base).__name__} is not converted; use its save_pretrained, or convert it first"
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = _merged_state_dict(model) if base is not model else base.state_dict()
    feature_maps = {k: v.detach().contiguous().cpu() for k, v in state.items() if _FEATURE_MAP_KEY in k}
    weights = {k: v for k, v in state.items() if _FEATURE_MAP_KEY not in k}
    base.save_pretrained(path, state_dict=weights, max_shard_size=max_shard_size)
    save_file(feature_maps, str(path / FEATURE_MAPS_FILE), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def _model_class(config, model_class):
    import transformers

    if model_class is not None:
        return model_class
    architectures = getattr(config, "architectures", None) or []
    for name in architectures:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ValueError(
        f"load_converted: config.architectures = {architectures!r} names no transformers class; pass model_class="
    )


def load_converted(path: str | os.PathLike, *, model_class=None, **kwargs) -> nn.Module:
    """Load a folder written by ``save_converted`` into an equal converted model.

    ``model_class`` defaults to the class in ``config.architectures``; ``kwargs`` go to ``from_pretrained``
    (``dtype``, ``device_map``, ...). Feature maps are restored in float32 (float64 for a float64 model).
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"load_converted: {path} has no config.json; give a folder written by save_converted")
    config = AutoConfig.from_pretrained(path)
    info = getattr(config, CONFIG_SECTION, None)
    if not isinstance(info, dict) or "attention" not in info:
        raise ValueError(
            f"load_converted: {path}/config.json has no '{CONFIG_SECTION}' section; it is not a converted model "
            "(load it with from_pretrained)"
        )
    delattr(config, CONFIG_SECTION)
    model = _model_class(config, model_class).from_pretrained(path, config=config, **kwargs)
    if hasattr(model.config, CONFIG_SECTION):
        delattr(model.config, CONFIG_SECTION)
    convert(model, info["attention"], **info.get("options", {}))
    file = path / FEATURE_MAPS_FILE
    expected = {k for k in model.state_dict() if _FEATURE_MAP_KEY in k}
    if expected:
        if not file.is_file():
            raise FileNotFoundError(f"load_converted: {file} is missing; the folder was not written by save_converted")
        saved = load_file(str(file))
        missing, unexpected = expected - set(saved), set(saved) - expected
        if missing or unexpected:
            raise ValueError(
                f"load_converted: {file.name} does not fit the model: missing {sorted(missing)[:4]}, "
                f"unexpected {sorted(unexpected)[:4]}"
            )
        model.load_state_dict(saved, strict=False)
    if not model.training:
        model.eval()
    return model
