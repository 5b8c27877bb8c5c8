"""Triton kernels for the hot paths of ``hedgehog.attention`` (CUDA; ``TRITON_INTERPRET=1`` runs them on a CPU).
A leaf: imports torch and triton only, no other hedgehog package.

A leaf package: the kernels take tensors, shapes and flags and import nothing from ``hedgehog.attention``, which
decides when to call them (``hedgehog.attention.dispatch``, ``linear``) and whose PyTorch code is their
reference. Entry points:

* ``hedgehog_attention(q, k, v, weight_q, bias_q, weight_k, bias_k, ...)`` -- chunked linear attention with the
  Hedgehog feature map computed inside the kernels (``chunked.py``);
* ``linear_attention(qf, kf, v, ...)`` -- the same on ready-made features of any map;
* ``recurrent_step(qf, kf, v, S, z, mask)`` -- one decoding step on the state ``(S, z)`` (``decode.py``);
* ``hedgehog_step(q, k, v, weights..., S, z, shift, headroom, mask)`` -- the same with the stabilised Hedgehog
  maps in the kernel, updating the state in place (``decode.py``; opt-in, see ``hedgehog.attention.dispatch``);
* ``hybrid_attention(q, k, v, weights..., log_balance, window=..., scale=...)`` -- the causal sliding-window +
  Hedgehog hybrid with the map fused (``hybrid.py``). Checked in the interpreter against the PyTorch reference;
  ``hedgehog.attention`` uses it on CUDA only where ``HEDGEHOG_KERNELS_HYBRID=1`` until it has passed the GPU
  suite.

``supports_fused`` / ``supports_features`` / ``supports_decode`` say whether the tiles fit a shape
(``KERNEL_DTYPES`` lists the input dtypes): float16 / bfloat16 / float32 inputs, head dim <= 128, features
<= 128, value dim <= 128 with features x value dim <= 128 x 64 (the state is held in registers).
"""

from __future__ import annotations

import torch

from hedgehog.kernels import chunked, decode
from hedgehog.kernels.chunked import hedgehog_attention, linear_attention
from hedgehog.kernels.decode import hedgehog_step, recurrent_step, supports_hedgehog_step
from hedgehog.kernels.hybrid import hybrid_attention

__all__ = [
    "KERNEL_DTYPES", "hedgehog_attention", "hedgehog_step", "hybrid_attention", "linear_attention", "recurrent_step",
    "supports_decode", "supports_features", "supports_fused", "supports_hedgehog_step",
]

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def supports_fused(head_dim: int, hidden_dim: int, value_dim: int) -> bool:
    """Whether ``hedgehog_attention`` takes heads of width ``head_dim``, a map of ``hidden_dim`` (features = 2 x
    hidden) and values of width ``value_dim``."""
    return chunked.supported(head_dim, 2 * hidden_dim, value_dim, fused=True)


def supports_features(feature_dim: int, value_dim: int) -> bool:
    """Whether ``linear_attention`` takes features of width ``feature_dim`` and values of width ``value_dim``."""
    return chunked.supported(feature_dim, feature_dim, value_dim)


def supports_decode(feature_dim: int) -> bool:
    """Whether ``recurrent_step`` takes features of width ``feature_dim``."""
    return decode.supported(feature_dim)
