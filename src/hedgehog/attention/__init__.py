"""Attention maths: feature maps and their registry, ``attend``, linear / softmax / hybrid attention in every form,
distillation loss, analysis metrics. Imports no other hedgehog package (it loads ``hedgehog.kernels`` by name on CUDA).

Pure PyTorch; the reference that ``hedgehog.kernels`` is tested against. Choose an attention type by name::

    fq = build_feature_map("hedgehog", num_heads=H, head_dim=D)   # None for "softmax"
    fk = build_feature_map("hedgehog", num_heads=H, head_dim=D)
    y = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True)
"""

from hedgehog.attention.registry import (
    ATTENTION_NAMES,
    FEATURE_MAP_NAMES,
    build_feature_map,
    register_feature_map,
)
from hedgehog.attention.feature_maps import FeatureMap, FeaturePair
from hedgehog.attention.linear import RecurrentState, attention_weights, linear_attention, recurrent_step
from hedgehog.attention.softmax import softmax_attention, softmax_weights
from hedgehog.attention.hybrid import (
    HybridState,
    WindowBalance,
    calibrated_log_balance,
    hybrid_attention,
    hybrid_prefill,
    hybrid_step,
    hybrid_weights,
)
from hedgehog.attention.dispatch import attend
from hedgehog.attention.distillation import distillation_loss
from hedgehog.attention.metrics import attention_entropy, fidelity_kl, monotonicity

__all__ = [
    "ATTENTION_NAMES",
    "FEATURE_MAP_NAMES",
    "FeatureMap",
    "FeaturePair",
    "HybridState",
    "WindowBalance",
    "calibrated_log_balance",
    "hybrid_attention",
    "hybrid_prefill",
    "hybrid_step",
    "hybrid_weights",
    "register_feature_map",
    "build_feature_map",
    "attend",
    "linear_attention",
    "attention_weights",
    "softmax_weights",
    "softmax_attention",
    "RecurrentState",
    "recurrent_step",
    "distillation_loss",
    "attention_entropy",
    "monotonicity",
    "fidelity_kl",
]
