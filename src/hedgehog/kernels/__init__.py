"""Triton kernels for the hot paths of ``hedgehog.attention`` (CUDA only; the PyTorch code there is the fallback
and the reference). A leaf: imports torch and triton only, no other hedgehog package.

``hedgehog.attention`` calls the three ``try_*`` functions below when the backend allows it and the inputs are
on CUDA (see ``hedgehog.attention.backend``); each returns its result, or None for a case the kernels do not
cover, and then the PyTorch path runs:

* ``try_fused_attend`` -- Hedgehog attention with the feature map fused into the chunked kernels
  (``chunked.hedgehog_attention``): exp activation, per-head ``weight [H, D, d']``, ``bias [H, d']``.
* ``try_linear_attention`` -- linear attention on ready-made features (``chunked.linear_attention``).
* ``try_recurrent_step`` -- one decoding step (``decode.recurrent_step``).

Limits: float16 / bfloat16 / float32 inputs (float64 stays on the reference), head dim <= 128, features
<= 128, value dim <= 128 with features x value dim <= 128 x 64 (the state is held in registers).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hedgehog.attention.checks import check_key_padding_mask
from hedgehog.attention.feature_maps.base import FeatureMap
from hedgehog.attention.feature_maps.hedgehog import HedgehogFeatureMap
from hedgehog.attention.linear import RecurrentState
from hedgehog.kernels import chunked, decode

__all__ = ["try_fused_attend", "try_linear_attention", "try_recurrent_step", "fusable_hedgehog"]

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_PARAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _on_cuda(*tensors: Tensor | None) -> bool:
    return all(t.is_cuda for t in tensors if t is not None)


def fusable_hedgehog(fm: FeatureMap | None, heads: int, head_dim: int) -> bool:
    """A Hedgehog map with the exp activation whose forward is the stock one, with ``heads`` heads."""
    return (
        isinstance(fm, HedgehogFeatureMap)
        and type(fm).forward is HedgehogFeatureMap.forward
        and type(fm).project is HedgehogFeatureMap.project
        and fm.activation == "exp"
        and fm.num_heads == heads
        and fm.head_dim == head_dim
        and fm.weight.dtype in _PARAM_DTYPES
        and (fm.bias is None or fm.bias.dtype in _PARAM_DTYPES)
    )


def try_fused_attend(
    q: Tensor, k: Tensor, v: Tensor, *, feature_map_q: FeatureMap | None, feature_map_k: FeatureMap | None,
    causal: bool, key_padding_mask: Tensor | None = None, scale: float | None = None, positions: Tensor | None = None,
    log_balance: Tensor | None = None,
) -> Tensor | None:
    """``attend`` with Hedgehog maps on both sides as one fused kernel, or None if not applicable.

    q ``[B, Hq, N, D]``, k ``[B, Hk, N, D]``, v ``[B, Hk, N, Dv]``; ``scale`` and ``positions`` are not used by
    Hedgehog maps. Returns ``[B, Hq, N, Dv]`` in v's dtype.
    """
    b, hq, n, d = q.shape
    hk, dv = k.shape[1], v.shape[-1]
    if n == 0 or q.dtype not in _KERNEL_DTYPES or k.dtype != q.dtype or v.dtype not in _KERNEL_DTYPES:
        return None
    if not (fusable_hedgehog(feature_map_q, hq, d) and fusable_hedgehog(feature_map_k, hk, d)):
        return None
    if getattr(feature_map_q, "window", None) is not None:
        return None
    if feature_map_q.hidden_dim != feature_map_k.hidden_dim:
        return None
    params = [feature_map_q.weight, feature_map_q.bias, feature_map_k.weight, feature_map_k.bias]
    if not _on_cuda(q, k, v, *params) or not chunked.supported(d, feature_map_q.feature_dim, dv, fused=True):
        return None
    mask = check_key_padding_mask("attend", key_padding_mask, b, n, q.device)
    return chunked.hedgehog_attention(
        q, k, v, feature_map_q.weight, feature_map_q.bias, feature_map_k.weight, feature_map_k.bias,
        causal=causal, key_padding_mask=mask, stable=feature_map_q.stable,
    )


def try_linear_attention(
    qf: Tensor, kf: Tensor, v: Tensor, *, causal: bool, key_padding_mask: Tensor | None = None
) -> Tensor | None:
    """``linear_attention`` on ready-made features ``[B, Hq, N, F]`` / ``[B, Hk, N, F]``, or None."""
    n, f, dv = qf.shape[2], qf.shape[-1], v.shape[-1]
    if n == 0 or any(t.dtype not in _KERNEL_DTYPES for t in (qf, kf, v)) or not _on_cuda(qf, kf, v):
        return None
    if not chunked.supported(f, f, dv):
        return None
    return chunked.linear_attention(qf, kf, v, causal=causal, key_padding_mask=key_padding_mask)


def try_recurrent_step(
    qf: Tensor, kf: Tensor, v: Tensor, state: RecurrentState | None, key_padding_mask: Tensor | None = None
) -> tuple[Tensor, RecurrentState] | None:
    """``recurrent_step`` (one token per sequence) as one kernel, or None. The state stays float32."""
    b, hq, n, f = qf.shape
    hk, dv = kf.shape[1], v.shape[-1]
    if n != 1 or any(t.dtype not in _KERNEL_DTYPES for t in (qf, kf, v)) or not decode.supported(f):
        return None
    if state is None:
        state = RecurrentState.zeros(b, hk, f, dv, qf.device)
    if state.S.dtype != torch.float32 or state.z.dtype != torch.float32:
        return None
    if not _on_cuda(qf, kf, v, state.S, state.z, key_padding_mask):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in (qf, kf, v, state.S, state.z)):
        return None  # the decode kernel has no backward
    out, S, z = decode.recurrent_step(qf, kf, v, state.S, state.z, key_padding_mask)
    return out, RecurrentState(S, z)
