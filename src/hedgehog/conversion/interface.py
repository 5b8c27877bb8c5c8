"""The hook into transformers: an attention function and a mask function registered under one name.

Models whose attention modules call ``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, ...)``
(BERT, GPT-2, Llama and most current architectures) pass that function the module, q (after RoPE)
``[B, Hq, N, D]``, k and v ``[B, Hk, N, D]`` (grouped-query heads not repeated), the mask built for the
same name, ``scaling`` and ``dropout``. Setting ``config._attn_implementation = ATTENTION_IMPLEMENTATION``
routes every layer here, where the module's ``hedgehog`` child (``ConvertedAttention``) does the work.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from hedgehog.conversion.layer import ConvertedAttention

ATTENTION_IMPLEMENTATION = "hedgehog_linear"
MODULE_ATTRIBUTE = "hedgehog"


def padding_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function=None,
    attention_mask: Tensor | None = None,
    **kwargs,
) -> Tensor | None:
    """Mask function for ``ATTENTION_IMPLEMENTATION``: the key padding as bool ``[B, kv_length]`` (True = real),
    or None without padding. Causality is not encoded here: each layer reads ``module.is_causal``."""
    if attention_mask is None:
        return None
    if attention_mask.ndim != 2:
        return attention_mask
    mask = attention_mask[:, -kv_length:].to(torch.bool)
    if mask.shape[-1] == kv_length and bool(mask.all()):
        return None
    return mask


def linear_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, None]:
    """Attention function for ``ATTENTION_IMPLEMENTATION``: returns ``([B, N, Hq, Dv], None)`` like SDPA's."""
    converted = getattr(module, MODULE_ATTRIBUTE, None)
    if not isinstance(converted, ConvertedAttention):
        raise RuntimeError(
            f"{type(module).__name__} reached the '{ATTENTION_IMPLEMENTATION}' attention without a converted "
            f"'{MODULE_ATTRIBUTE}' child; build the model with hedgehog.convert (or load_converted)"
        )
    causal = kwargs.get("is_causal")
    if causal is None:
        causal = getattr(module, "is_causal", True)
    out = converted(query, key, value, attention_mask, causal=bool(causal), scaling=scaling, dropout=dropout)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the attention and mask functions with transformers (idempotent); returns the name."""
    AttentionInterface.register(ATTENTION_IMPLEMENTATION, linear_attention_forward)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, padding_mask)
    return ATTENTION_IMPLEMENTATION


# importing hedgehog.conversion is enough for converted models (e.g. unpickled in a worker) to run
register()
