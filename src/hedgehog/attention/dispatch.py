"""``attend``: the single entry point that attention layers call, whatever the attention type."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from hedgehog.attention.backend import kernels_for
from hedgehog.attention.checks import check_key_padding_mask, check_qkv, describe
from hedgehog.attention.feature_maps.base import FeatureMap
from hedgehog.attention.hybrid import hybrid_attention
from hedgehog.attention.linear import linear_attention
from hedgehog.attention.softmax import softmax_attention


HYBRID_KERNELS_ENV = "HEDGEHOG_KERNELS_HYBRID"


def hybrid_kernels_enabled() -> bool:
    """The hybrid's fused kernels are used on CUDA only when ``HEDGEHOG_KERNELS_HYBRID=1``: they match the
    reference in Triton's interpreter but have not yet run on a GPU."""
    return os.environ.get(HYBRID_KERNELS_ENV, "0") not in ("", "0")


DECODE_MAPS_ENV = "HEDGEHOG_KERNELS_DECODE_MAPS"


def decode_maps_enabled() -> bool:
    """The decoding step with the Hedgehog maps in the kernel is used on CUDA only when
    ``HEDGEHOG_KERNELS_DECODE_MAPS=1``: it matches the reference in Triton's interpreter but has not yet run on a
    GPU."""
    return os.environ.get(DECODE_MAPS_ENV, "0") not in ("", "0")


def fused_decode_step(q: Tensor, k: Tensor, v: Tensor, fq: FeatureMap, fk: FeatureMap, state, key_shift: Tensor | None,
                      key_padding_mask: Tensor | None = None) -> Tensor | None:
    """One decoding step of stabilised Hedgehog linear attention with the maps in the kernel, updating ``state``
    (``S [B, Hk, F, Dv]``, ``z [B, Hk, F]``) and ``key_shift [B, Hk, F]`` **in place**; q ``[B, Hq, 1, D]``, k, v
    ``[B, Hk, 1, .]``. Returns the output ``[B, Hq, 1, Dv]``, or None (nothing changed) where the kernel does not
    apply: not enabled (``decode_maps_enabled``), not CUDA, gradients needed, maps that are not plain stabilised
    Hedgehog maps, or a state that is not contiguous float32. The reference is ``pair`` + ``recurrent_step``."""
    if not decode_maps_enabled() or key_shift is None or state is None or q.shape[2] != 1:
        return None
    kernels = kernels_for(q, k, v, state.S, state.z, key_shift)
    if kernels is None:
        return None
    args = fq.fused_kernel_args(fk, q, k)
    if args is None or args["window"] is not None or not args["stable"]:
        return None
    if (args["bias_q"] is None) != (args["bias_k"] is None):
        return None
    tensors = (state.S, state.z, key_shift)
    if any(t.dtype != torch.float32 or not t.is_contiguous() for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *fq.parameters(), *fk.parameters())):
        return None  # the kernel has no backward
    if not kernels.supports_hedgehog_step(q.shape[-1], args["weight_q"].shape[-1], v.shape[-1]):
        return None
    mask = check_key_padding_mask("fused_decode_step", key_padding_mask, q.shape[0], 1, q.device)
    return kernels.hedgehog_step(q, k, v, args["weight_q"], args["bias_q"], args["weight_k"], args["bias_k"],
                                 state.S, state.z, key_shift, args["key_headroom"], mask)


def _fused(q: Tensor, k: Tensor, v: Tensor, fq: FeatureMap, fk: FeatureMap, causal: bool,
           key_padding_mask: Tensor | None, scale: float | None, log_balance: Tensor | None) -> Tensor | None:
    """The feature map's own fused kernel (``FeatureMap.fused_kernel_args``), when the backend, the device, the
    dtypes and the shapes allow it; None otherwise (the PyTorch path runs)."""
    kernels = kernels_for(q, k, v)
    if kernels is None or q.shape[2] == 0:
        return None
    args = fq.fused_kernel_args(fk, q, k)
    if args is None or any(p.device != q.device for p in args.values() if isinstance(p, Tensor)):
        return None
    if q.dtype not in kernels.KERNEL_DTYPES or k.dtype != q.dtype or v.dtype not in kernels.KERNEL_DTYPES:
        return None
    if not kernels.supports_fused(q.shape[-1], args["weight_q"].shape[-1], v.shape[-1]):
        return None
    mask = check_key_padding_mask("attend", key_padding_mask, q.shape[0], q.shape[2], q.device)
    window = args.pop("window")
    if window is None:
        return kernels.hedgehog_attention(q, k, v, causal=causal, key_padding_mask=mask, **args)
    if not (causal and hybrid_kernels_enabled()) or log_balance is None or log_balance.device != q.device:
        return None
    args.pop("stable")
    return kernels.hybrid_attention(
        q, k, v, log_balance=log_balance, window=window, scale=q.shape[-1] ** -0.5 if scale is None else scale,
        key_padding_mask=mask, **args,
    )


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map_q: FeatureMap | None,
    feature_map_k: FeatureMap | None,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    positions: Tensor | None = None,
    log_balance: Tensor | None = None,
) -> Tensor:
    """Attention of q ``[B, Hq, N, D]`` over k ``[B, Hk, N, D]``, v ``[B, Hk, N, Dv]`` (``Hq % Hk == 0``).

    Both maps None: exact softmax attention via SDPA (``scale`` default ``1/sqrt(D)``). Maps with a ``window``
    (``hedgehog_window``): the sliding-window hybrid (``hybrid_attention``, softmax logits scaled by ``scale``,
    per-head balance ``log_balance [Hq]``, default 0). Otherwise linear attention on ``feature_map_q.pair(feature_map_k, q,
    k)`` (features stabilised together); ``scale`` is then unused (each map carries its own scaling) and
    ``positions`` ([N] or [B, N]) reach the maps. On CUDA the Triton kernels (``hedgehog.kernels``) are tried
    first, see ``hedgehog.attention.backend``.
    ``key_padding_mask [B, N]`` bool, True on real tokens. Returns ``[B, Hq, N, Dv]`` in v's dtype.
    """
    fn = "attend"
    check_qkv(fn, q, k, v, "q", "k", "v", feat="D")
    if (feature_map_q is None) != (feature_map_k is None):
        raise ValueError(
            f"{fn}: feature_map_q and feature_map_k must both be FeatureMaps (linear attention) or both None "
            f"(softmax), got {describe(feature_map_q)} and {describe(feature_map_k)}"
        )
    if feature_map_q is None:
        return softmax_attention(q, k, v, causal, key_padding_mask=key_padding_mask, scale=scale)
    for name, fm in (("feature_map_q", feature_map_q), ("feature_map_k", feature_map_k)):
        if not isinstance(fm, FeatureMap):
            raise TypeError(f"{fn}: {name} must be a FeatureMap from build_feature_map or None, got {describe(fm)}")

    window = getattr(feature_map_q, "window", None)
    if window is not None and log_balance is None:  # no balance given: lam = 1 for every head
        log_balance = q.new_zeros(q.shape[1], dtype=torch.float32)

    out = _fused(q, k, v, feature_map_q, feature_map_k, causal, key_padding_mask, scale, log_balance)
    if out is not None:
        return out

    pair = feature_map_q.pair(feature_map_k, q, k, positions=positions, key_padding_mask=key_padding_mask)
    if window is not None:
        return hybrid_attention(q, k, v, pair, window=window, log_balance=log_balance, causal=causal,
                                key_padding_mask=key_padding_mask, scale=scale)
    return linear_attention(pair.q, pair.k, v, causal, key_padding_mask=key_padding_mask)
