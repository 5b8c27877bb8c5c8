"""Float64 references written independently of the library: repeated k/v heads, explicit masks, direct sums."""

from __future__ import annotations

import math

import torch


def allowed_mask(n: int, causal: bool, key_padding_mask: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Bool [B, 1, N, N]: query i may use key j."""
    allowed = torch.ones(batch, 1, n, n, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(n, n, dtype=torch.bool).tril()
    if key_padding_mask is not None:
        allowed &= key_padding_mask[:, None, None, :].bool()
    return allowed


def repeat_heads(x: torch.Tensor, hq: int) -> torch.Tensor:
    return x.repeat_interleave(hq // x.shape[1], dim=1)


def linear_weights(qf, kf, causal, key_padding_mask=None):
    qf, kf = qf.double(), repeat_heads(kf.double(), qf.shape[1])
    kernel = (qf.unsqueeze(3) * kf.unsqueeze(2)).sum(-1)  # [B, H, N, N]
    kernel = kernel * allowed_mask(qf.shape[2], causal, key_padding_mask, qf.shape[0])
    total = kernel.sum(-1, keepdim=True)
    # a query whose kernel is 0 for every key (ReLU maps) attends to nothing: a zero row by convention
    return torch.where(total > 0, kernel / total, torch.zeros_like(kernel))


def linear_output(qf, kf, v, causal, key_padding_mask=None):
    w = linear_weights(qf, kf, causal, key_padding_mask)
    return (w.unsqueeze(-1) * repeat_heads(v.double(), qf.shape[1]).unsqueeze(2)).sum(3)


def softmax_probs(q, k, causal, key_padding_mask=None, scale=None):
    q, k = q.double(), repeat_heads(k.double(), q.shape[1])
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1) * scale
    allowed = allowed_mask(q.shape[2], causal, key_padding_mask, q.shape[0])
    e = torch.exp(s - s.amax(-1, keepdim=True)) * allowed
    return e / e.sum(-1, keepdim=True)


def softmax_output(q, k, v, causal, key_padding_mask=None, scale=None):
    w = softmax_probs(q, k, causal, key_padding_mask, scale)
    return w @ repeat_heads(v.double(), q.shape[1])


def padding_mask(batch: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Right padding in row 0, left padding in row 1 (if any), at least one real token per row."""
    mask = torch.ones(batch, n, dtype=torch.bool)
    if n > 1:
        mask[0, n - max(1, n // 3):] = False
        if batch > 1:
            mask[1, : max(1, n // 4)] = False
    return mask
