"""Regime variants used only by the ablations of ``experiments/`` (the distillation-loss ablation, exp. 7).

``MSEDistillFinetunedConversionModule`` is the finetuned-conversion regime with the attention-distillation loss
swapped: instead of the paper's soft cross-entropy between the softmax teacher's weights A and the linear
weights Â (eq. 5), the ``distill`` stage minimises the squared error of the weights,
``sum_j (A_ij - Â_ij)^2`` averaged over real queries and heads, summed over layers. Everything else (stages,
budgets, what trains, the teacher's activations flowing through the network) is the regular regime's. The
validation metrics of the distill stage keep reporting KL(teacher || student) and entropies from the library,
so both losses are judged on the same scale. Select it with ``experiment=ablation_glue_distill_mse``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hedgehog.regimes.finetuned_conversion import FinetunedConversionModule


def weight_mse(teacher: Tensor, student: Tensor, mask: Tensor | None) -> Tensor:
    """``sum_j (A_ij - Â_ij)^2`` averaged over heads and real queries; ``[B, H, N, N] x2 -> scalar``."""
    err = (student.float() - teacher.float()).pow(2).sum(dim=-1)  # [B, H, N]
    if mask is None:
        return err.mean()
    keep = mask[:, None, :].to(err.dtype).expand_as(err)
    return (err * keep).sum() / keep.sum().clamp_min(1.0)


class MSEDistillFinetunedConversionModule(FinetunedConversionModule):
    """``FinetunedConversionModule`` whose distill stage minimises the MSE between attention weights."""

    def distill_loss(self, batch: Mapping[str, Any]) -> Tensor:
        from hedgehog.attention import attention_weights, softmax_weights
        from hedgehog.conversion import converted_layers, pop_distillation_loss
        from hedgehog.conversion.layer import key_padding_mask

        layers = converted_layers(self.model)
        losses: list[Tensor] = []

        def hook(layer, args, kwargs):
            q, k, _, attention_mask = args[:4]
            causal, scaling = bool(kwargs["causal"]), kwargs.get("scaling")
            mask = key_padding_mask(attention_mask, k.shape[2])
            with torch.no_grad():
                teacher = softmax_weights(q, k, causal, key_padding_mask=mask, scale=scaling)
            q_lin = q
            if scaling is not None and not math.isclose(scaling * math.sqrt(q.shape[-1]), 1.0, rel_tol=1e-9):
                q_lin = q * (scaling * math.sqrt(q.shape[-1]))  # as ConvertedAttention feeds its maps
            student = attention_weights(layer.feature_map_q(q_lin, is_query=True), layer.feature_map_k(k), causal,
                                        key_padding_mask=mask)
            losses.append(weight_mse(teacher, student, mask))

        handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
        try:
            self.model(**self.model_inputs(batch))
        finally:
            for h in handles:
                h.remove()
        pop_distillation_loss(self.model)  # the library's cross-entropy, not used here
        return torch.stack(losses).sum()
