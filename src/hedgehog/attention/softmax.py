"""Exact softmax attention (Vaswani et al., 2017): ``softmax(q k^T * scale) v``, scale default ``1/sqrt(D)``.

``softmax_attention`` runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where
the platform has them); ``softmax_weights`` materialises the ``[B, Hq, N, N]`` weights, the teacher of
attention distillation. Grouped-query attention: query head h reads key/value head ``h // (Hq / Hk)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hedgehog.attention.checks import (
    accumulation_dtype,
    check_key_padding_mask,
    check_qk,
    check_qkv,
    full_precision,
)


def _scale(scale: float | None, head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _allowed(causal: bool, mask: Tensor | None, n: int, device: torch.device) -> Tensor | None:
    """Bool ``[B or 1, 1, N, N]``: True where query i may attend to key j."""
    allowed = None
    if causal:
        allowed = torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None]
    if mask is not None:
        keys = mask[:, None, None, :]
        allowed = keys if allowed is None else allowed & keys
    return allowed


@full_precision
def softmax_weights(
    q: Tensor, k: Tensor, causal: bool, key_padding_mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """Softmax attention weights ``softmax(q k^T * scale)`` with causal / padding masks.

    q ``[B, Hq, N, D]``, k ``[B, Hk, N, D]`` (``Hq % Hk == 0``), ``key_padding_mask [B, N]`` (True = real).
    Returns ``[B, Hq, N, N]`` in float32 (float64 for float64 inputs); a row with no allowed key is all zeros.
    """
    fn = "softmax_weights"
    check_qk(fn, q, k, "q", "k", feat="D")
    b, hq, n, d = q.shape
    hk = k.shape[1]
    mask = check_key_padding_mask(fn, key_padding_mask, b, n, q.device)
    acc = accumulation_dtype(q, k)
    scores = torch.einsum("bhgid,bhjd->bhgij", q.to(acc).reshape(b, hk, hq // hk, n, d), k.to(acc))
    scores = scores * _scale(scale, d)
    allowed = _allowed(causal, mask, n, q.device)
    if allowed is None:
        return torch.softmax(scores, dim=-1).reshape(b, hq, n, n)
    allowed = allowed.unsqueeze(2)  # group axis
    # a finite fill (not -inf) keeps fully masked rows NaN-free in forward and backward
    weights = torch.softmax(scores.masked_fill(~allowed, torch.finfo(acc).min), dim=-1)
    return weights.masked_fill(~allowed, 0.0).reshape(b, hq, n, n)


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Exact attention through SDPA. q ``[B, Hq, N, D]``, k ``[B, Hk, N, D]``, v ``[B, Hk, N, Dv]``,
    ``key_padding_mask [B, N]`` (True = real). Returns ``[B, Hq, N, Dv]`` in v's dtype (q, k are cast to it).
    Padded query positions attend to themselves only so that they stay finite."""
    fn = "softmax_attention"
    check_qkv(fn, q, k, v, "q", "k", "v", feat="D")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{fn}: q and k must share the head dim D, got q {list(q.shape)}, k {list(k.shape)}")
    b, hq, n, d = q.shape
    hk = k.shape[1]
    mask = check_key_padding_mask(fn, key_padding_mask, b, n, q.device)
    q, k = q.to(v.dtype), k.to(v.dtype)
    attn_mask, is_causal = None, bool(causal)
    if mask is not None:
        allowed = _allowed(causal, mask, n, q.device)
        # a query row with no allowed key would come back NaN from the fused kernels: let it see itself
        empty = ~allowed.any(dim=-1, keepdim=True)
        eye = torch.eye(n, dtype=torch.bool, device=q.device)[None, None]
        attn_mask, is_causal = allowed | (empty & eye), False
    kwargs = dict(attn_mask=attn_mask, is_causal=is_causal, scale=_scale(scale, d))
    if hq != hk:
        try:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
        except TypeError:  # torch < 2.5 has no enable_gqa
            k, v = k.repeat_interleave(hq // hk, dim=1), v.repeat_interleave(hq // hk, dim=1)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)
