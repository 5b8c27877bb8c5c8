"""Float64 reference of the sliding-window hybrid, straight from its definition: exp logits on the window,
lam * phi(q).phi(k) (Hedgehog exp features, in log space so any input scale is exact) elsewhere, one softmax."""

from __future__ import annotations

import math

import torch


def hedgehog_logs(x, weight, bias):
    """``[u, -u]``, u = x W_h + b_h, float64: ``[B, H, N, D] -> [B, H, N, 2 d']``."""
    u = torch.einsum("bhnd,hdf->bhnf", x.double(), weight.double())
    if bias is not None:
        u = u + bias.double()[None, :, None, :]
    return torch.cat([u, -u], -1)


def hybrid_log_weights(q, k, wq, bq, wk, bk, beta, window, causal, key_padding_mask=None, scale=None, offset=None):
    """Unnormalised log weights ``[B, Hq, Nq, Nk]`` (-inf where a key is not attended)."""
    b, hq, nq, d = q.shape
    hk, nk = k.shape[1], k.shape[2]
    g = hq // hk
    kk = k.double().repeat_interleave(g, 1)
    scale = 1 / math.sqrt(d) if scale is None else scale
    s = torch.einsum("bhid,bhjd->bhij", q.double(), kk) * scale
    lq = hedgehog_logs(q, wq, bq)  # [B, Hq, Nq, F]
    lk = hedgehog_logs(k, wk, bk).repeat_interleave(g, 1)  # [B, Hq, Nk, F]
    lin = torch.logsumexp(lq[:, :, :, None, :] + lk[:, :, None, :, :], dim=-1) + beta.double()[None, :, None, None]
    offset = nk - nq if offset is None else offset
    rel = torch.arange(offset, offset + nq)[:, None] - torch.arange(nk)[None, :]
    if causal:
        in_w, in_l = (rel >= 0) & (rel < window), rel >= window
    else:
        in_w, in_l = rel.abs() < window, rel.abs() >= window
    logw = torch.where(in_w, s, torch.where(in_l, lin, torch.full_like(s, -math.inf)))
    if key_padding_mask is not None:
        logw = logw.masked_fill(~key_padding_mask[:, None, None, :].bool(), -math.inf)
    return logw


def hybrid_reference(q, k, v, wq, bq, wk, bk, beta, window, causal, key_padding_mask=None, scale=None):
    """Weights ``[B, Hq, N, N]`` and output ``[B, Hq, N, Dv]`` in float64 (rows with no key: zeros)."""
    logw = hybrid_log_weights(q, k, wq, bq, wk, bk, beta, window, causal, key_padding_mask, scale)
    empty = torch.isinf(logw).all(-1, keepdim=True)
    w = torch.softmax(logw.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    out = w @ v.double().repeat_interleave(q.shape[1] // k.shape[1], 1)
    return w, out
