"""Analysis metrics of attention weights (Zhang et al., 2024, sec. 3.2, figs. 2-4): spikiness (entropy),
monotonicity (rank correlation between q.k and the weight) and fidelity to softmax (KL).

All take ``[B, H, N, N]`` tensors and an optional ``mask [B, N]`` (True = real token: padded queries are left
out of the average and padded keys out of each row). ``reduction="mean"`` gives a scalar over real queries and
heads; ``"none"`` gives ``[B, H, N]`` per query.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hedgehog.attention.checks import check_key_padding_mask, check_weights
from hedgehog.attention.distillation import _check_pair, _masked_mean, row_kl

REDUCTIONS = ("mean", "none")


def _reduce(fn: str, values: Tensor, mask: Tensor | None, reduction: str) -> Tensor:
    if reduction == "none":
        return values
    if reduction != "mean":
        raise ValueError(f"{fn}: unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    return _masked_mean(values, mask)


def attention_entropy(weights: Tensor, mask: Tensor | None = None, *, reduction: str = "mean") -> Tensor:
    """Entropy ``-sum_j A_ij log A_ij`` of each row (0 for one-hot rows, ``log n`` for uniform over n keys).

    weights ``[B, H, N, N]`` (rows summing to 1); returns a scalar or ``[B, H, N]`` (float32/float64).
    """
    fn = "attention_entropy"
    check_weights(fn, "weights", weights)
    mask = check_key_padding_mask(fn, mask, weights.shape[0], weights.shape[2], weights.device)
    w = weights.to(torch.promote_types(weights.dtype, torch.float32))
    return _reduce(fn, -torch.xlogy(w, w).sum(dim=-1), mask, reduction)


def fidelity_kl(teacher: Tensor, student: Tensor, mask: Tensor | None = None, *, reduction: str = "mean") -> Tensor:
    """``KL(teacher_i || student_i)`` per query row (0 when equal), e.g. softmax vs linear weights.

    teacher, student ``[B, H, N, N]``; returns a scalar or ``[B, H, N]``.
    """
    fn = "fidelity_kl"
    mask = _check_pair(fn, teacher, student, mask, "teacher", "student")
    return _reduce(fn, row_kl(teacher, student), mask, reduction)


def _average_ranks(x: Tensor, valid: Tensor) -> Tensor:
    """0-based ranks along the last axis among the ``valid`` entries, ties sharing their average rank."""
    x = x.masked_fill(~valid, float("inf")).contiguous()
    ordered = x.sort(dim=-1).values
    below = torch.searchsorted(ordered, x, side="left")
    up_to = torch.searchsorted(ordered, x, side="right")
    return (below + up_to - 1).to(x.dtype) / 2


def monotonicity(
    scores: Tensor,
    weights: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Spearman rank correlation, per query, between the dot products ``q_i.k_j`` and the weights ``A_ij``.

    scores, weights ``[B, H, N, N]``; keys j > i are excluded when ``causal``, padded keys always. 1 means the
    weight is a monotone function of q.k (as softmax is). Rows with fewer than 2 keys or constant scores or
    weights have no correlation: NaN with ``reduction="none"``, left out of the mean.
    """
    fn = "monotonicity"
    mask = _check_pair(fn, scores, weights, mask, "scores", "weights")
    b, h, n, _ = scores.shape
    dtype = torch.promote_types(torch.promote_types(scores.dtype, weights.dtype), torch.float32)
    valid = torch.ones(n, n, dtype=torch.bool, device=scores.device)
    if causal:
        valid = valid.tril()
    valid = valid.expand(b, h, n, n)
    if mask is not None:
        valid = valid & mask[:, None, None, :]
    rs = _average_ranks(scores.to(dtype), valid)
    rw = _average_ranks(weights.to(dtype), valid)
    vf = valid.to(dtype)
    count = vf.sum(dim=-1)
    rs = (rs - (rs * vf).sum(-1, keepdim=True) / count.clamp_min(1).unsqueeze(-1)) * vf
    rw = (rw - (rw * vf).sum(-1, keepdim=True) / count.clamp_min(1).unsqueeze(-1)) * vf
    cov = (rs * rw).sum(-1)
    var = (rs * rs).sum(-1) * (rw * rw).sum(-1)
    defined = (count >= 2) & (var > 0)
    rho = torch.where(defined, cov / var.clamp_min(torch.finfo(dtype).tiny).sqrt(), torch.full_like(cov, float("nan")))
    if reduction == "none":
        return rho
    if reduction != "mean":
        raise ValueError(f"{fn}: unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    keep = defined if mask is None else defined & mask[:, None, :]
    return torch.where(keep, rho, torch.zeros_like(rho)).sum() / keep.sum().clamp_min(1)
