"""Attention distillation (stage 1, Zhang et al., 2024, sec. 4.2) on a converted model.

In distillation mode every converted layer computes, from the same q and k, the teacher's softmax attention and
its own, adds ``cross_entropy`` x ``distillation_loss(teacher, student)`` (soft cross-entropy minus the teacher's
entropy, eq. 5) plus ``mse`` x the MSE between the two attention outputs (``set_distillation``'s weights; the
paper's loss is cross_entropy=1, mse=0; attention transfer as in LoLCATs is cross_entropy=0, mse=1000) to a
per-layer accumulator and passes the *softmax* output on, so the network computes exactly the teacher's
activations and no second copy of the model is needed. Only the feature maps should train::

    freeze_except_feature_maps(model)
    with distillation(model):
        model(**batch)
        loss = pop_distillation_loss(model)   # summed over layers
    loss.backward()
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

from hedgehog.conversion.convert import conversion_info, converted_layers


def _layers(model: nn.Module, fn: str):
    layers = converted_layers(model)
    if not layers:
        info = conversion_info(model)
        if info is not None and info["attention"] == "softmax":
            raise ValueError(f"{fn}: the model was converted to 'softmax', which has no feature maps to distil")
        raise ValueError(f"{fn}: {type(model).__name__} is not converted; call hedgehog.convert(model, attention=...) first")
    return layers


def set_distillation(
    model: nn.Module, enabled: bool, *, cross_entropy: float | None = None, mse_weight: float | None = None,
    metrics: bool | None = None,
) -> None:
    """Switch distillation mode on or off for every converted layer.

    ``cross_entropy`` / ``mse_weight`` (each kept when None; at first 1 and 0): weights of the soft
    cross-entropy on the attention weights and of the attention-output MSE in each layer's loss. ``metrics``
    (kept when None): record teacher/student entropy and KL per layer (``teacher_student_metrics``; needs the
    N x N weights). Switching off drops any loss not yet popped.
    """
    for layer in _layers(model, "set_distillation"):
        layer.set_loss_weights(cross_entropy=cross_entropy, mse=mse_weight)
        layer.distilling = bool(enabled)
        if metrics is not None:
            layer.record_metrics = bool(metrics)
        if not enabled:
            layer.pop_loss()


def is_distilling(model: nn.Module) -> bool:
    """Whether the converted layers are in distillation mode."""
    layers = converted_layers(model)
    return bool(layers) and all(layer.distilling for layer in layers)


@contextlib.contextmanager
def distillation(
    model: nn.Module, *, cross_entropy: float | None = None, mse_weight: float | None = None,
    metrics: bool | None = None,
) -> Iterator[nn.Module]:
    """``with distillation(model): ...`` runs the block in distillation mode, then restores the previous mode."""
    layers = _layers(model, "distillation")
    previous = [(layer.distilling, dict(layer.loss_weights), layer.record_metrics) for layer in layers]
    set_distillation(model, True, cross_entropy=cross_entropy, mse_weight=mse_weight, metrics=metrics)
    try:
        yield model
    finally:
        for layer, (mode, weights, record) in zip(layers, previous):
            layer.distilling, layer.loss_weights, layer.record_metrics = mode, weights, record


def pop_distillation_loss(model: nn.Module) -> Tensor:
    """Sum over layers of the distillation losses accumulated since the last pop, and reset them.

    Raises RuntimeError when no distillation forward ran since the last pop.
    """
    losses = [loss for layer in _layers(model, "pop_distillation_loss") if (loss := layer.pop_loss()) is not None]
    if not losses:
        raise RuntimeError(
            "pop_distillation_loss: no distillation loss accumulated; run a forward pass inside "
            "set_distillation(model, True) / with distillation(model) first"
        )
    return torch.stack([loss.float() for loss in losses]).sum() if len(losses) > 1 else losses[0].float()


def feature_map_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of every converted layer's feature maps (empty for parameter-free maps)."""
    return [p for layer in converted_layers(model) for p in layer.parameters()]


def freeze_except_feature_maps(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter of ``model`` except the feature maps' (stage 1); returns the trainable ones."""
    trainable = feature_map_parameters(model)
    if not trainable:
        _layers(model, "freeze_except_feature_maps")
        raise ValueError(
            f"freeze_except_feature_maps: the {conversion_info(model)['attention']!r} feature maps have no "
            "trainable parameters; nothing would train in distillation"
        )
    keep = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return trainable


def teacher_student_metrics(model: nn.Module) -> list[dict[str, float]]:
    """Per layer, from the last distillation forward: ``teacher_entropy``, ``student_entropy`` (mean row
    entropy of the softmax and linear weights over real queries and heads) and ``kl`` (KL(teacher || student))."""
    out = []
    for index, layer in enumerate(_layers(model, "teacher_student_metrics")):
        if layer.last_metrics is None:
            raise RuntimeError(
                "teacher_student_metrics: no distillation forward with metrics recorded yet; run one inside "
                "distillation(model)"
            )
        out.append({"layer": index, **{k: float(v) for k, v in layer.last_metrics.items()}})
    return out
