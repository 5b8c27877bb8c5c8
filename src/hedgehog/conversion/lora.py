"""LoRA for stage 2 (finetuning the converted model) through ``peft``, with the targets checked up front."""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from hedgehog.conversion.distillation import feature_map_parameters


def _linear_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def linear_module_names(model: nn.Module) -> list[str]:
    """Full names of the modules LoRA can adapt (``nn.Linear`` and GPT-2's ``Conv1D``), in model order."""
    types = _linear_types()
    return [name for name, module in model.named_modules() if name and isinstance(module, types)]


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of targets: the full name, or its last dotted components."""
    return name == target or name.endswith("." + target)


def _resolve_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """The linear modules that ``target_modules`` selects; ValueError listing the model's linear modules if a
    target selects none."""
    names = linear_module_names(model)
    leaves = sorted({name.rsplit(".", 1)[-1] for name in names})
    if isinstance(target_modules, str):
        targets = [target_modules]
    else:
        targets = list(target_modules)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"apply_lora: target_modules must be module names, e.g. {leaves[:4]}; got {target_modules!r}")
    unmatched = []
    selected = []
    for target in targets:
        if re.fullmatch(r"[\w.]+", target):
            hits = [n for n in names if _matches(n, target)]
        else:  # a regular expression on the full module name, as peft takes a single string
            hits = [n for n in names if re.fullmatch(target, n)]
        if not hits:
            unmatched.append(target)
        selected.extend(hits)
    if unmatched:
        raise ValueError(
            f"apply_lora: target module(s) {unmatched} match no linear module of {type(model).__name__}; "
            f"its linear modules are named {leaves}"
        )
    return sorted(set(selected), key=names.index)


def apply_lora(
    model: nn.Module,
    target_modules: str | Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    *,
    train_feature_maps: bool = True,
    trainable_modules: Sequence[str] = (),
):
    """Wrap ``model`` with LoRA adapters (``peft.get_peft_model``); returns the ``PeftModel``.

    Args:
        target_modules: names of the linear modules to adapt, matched like peft (``"q_proj"`` matches
            ``model.layers.0.self_attn.q_proj``); BERT: ``query, key, value, dense``; GPT-2: ``c_attn, c_proj``.
            A target that matches nothing is a ValueError listing the model's linear module names.
        r, alpha, dropout: LoRA rank, scaling numerator (``alpha / r``) and dropout.
        train_feature_maps: keep the converted layers' feature maps trainable (peft freezes everything else).
        trainable_modules: names of further modules trained in full, e.g. a fresh classification head
            (``("classifier",)`` for BERT, ``("score",)`` for Llama sequence classification).
    """
    from peft import LoraConfig, get_peft_model

    if hasattr(model, "peft_config"):
        raise ValueError(f"apply_lora: {type(model).__name__} already has adapters")
    if not isinstance(r, int) or r < 1:
        raise ValueError(f"apply_lora: r must be a positive int, got {r!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"apply_lora: dropout must be in [0, 1), got {dropout!r}")
    selected = _resolve_targets(model, target_modules)
    extra = []
    for target in trainable_modules:
        hits = [m for n, m in model.named_modules() if n and _matches(n, target)]
        if not hits:
            raise ValueError(f"apply_lora: trainable module {target!r} matches no module of {type(model).__name__}")
        extra.extend(hits)

    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    fan_in_fan_out = any(isinstance(modules[n], Conv1D) for n in selected)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=float(dropout), target_modules=selected, fan_in_fan_out=fan_in_fan_out,
    )
    peft_model = get_peft_model(model, config)
    for p in feature_map_parameters(peft_model):
        p.requires_grad_(bool(train_feature_maps))
    for module in extra:
        for p in module.parameters():
            p.requires_grad_(True)
    return peft_model
