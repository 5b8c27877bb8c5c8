"""Attention distillation (Zhang et al., 2024, eq. 5): train the feature maps so that linear-attention weights
match the frozen teacher's softmax weights.

``loss = mean over real queries and heads of  sum_j -A_ij log Â_ij  -  H(A_i)``, i.e. the soft cross-entropy of
the paper minus the teacher's entropy (constant for the student: same gradients, exactly 0 when Â = A). This
equals ``KL(A_i || Â_i)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hedgehog.attention.checks import check_floating, check_key_padding_mask, check_weights


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values [B, H, N]`` over heads and the queries where ``mask [B, N]`` is True."""
    if mask is None:
        return values.mean()
    m = mask[:, None, :].to(values.dtype).expand_as(values)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def row_kl(teacher: Tensor, student: Tensor) -> Tensor:
    """``KL(teacher_i || student_i)`` per row: ``[B, H, N, N] x2 -> [B, H, N]`` in float32 (or float64)."""
    dtype = torch.promote_types(torch.promote_types(teacher.dtype, student.dtype), torch.float32)
    t, s = teacher.to(dtype), student.to(dtype)
    tiny = torch.finfo(dtype).tiny
    # keys the teacher ignores contribute 0 and no gradient; clamping keeps log finite where Â underflows
    cross = -(t * torch.log(s.clamp_min(tiny))).sum(dim=-1)
    entropy = -torch.xlogy(t, t).sum(dim=-1)
    return cross - entropy


def _check_pair(fn: str, teacher: Tensor, student: Tensor, mask: Tensor | None, tn: str, sn: str) -> Tensor | None:
    check_weights(fn, tn, teacher)
    check_weights(fn, sn, student)
    if teacher.shape != student.shape:
        raise ValueError(f"{fn}: {tn} and {sn} must have the same shape [B, H, N, N], got {list(teacher.shape)} and {list(student.shape)}")
    return check_key_padding_mask(fn, mask, teacher.shape[0], teacher.shape[2], teacher.device)


def distillation_loss(teacher_weights: Tensor, student_weights: Tensor, mask: Tensor | None = None) -> Tensor:
    """Hedgehog's distillation loss between softmax (teacher) and linear (student) attention weights.

    teacher_weights, student_weights: ``[B, H, N, N]``, rows summing to 1 (from ``softmax_weights`` and
    ``attention_weights``). mask: ``[B, N]`` bool, True on real query tokens. Returns a scalar (float32):
    soft cross-entropy minus the teacher's entropy, averaged over real queries and heads; 0 iff equal.
    """
    mask = _check_pair("distillation_loss", teacher_weights, student_weights, mask, "teacher_weights", "student_weights")
    return _masked_mean(row_kl(teacher_weights, student_weights), mask)


def attention_output_mse(teacher_out: Tensor, student_out: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between attention outputs ``[B, H, N, Dv]`` over real queries (``mask [B, N]``),
    an optional extra distillation term on outputs rather than weights."""
    fn = "attention_output_mse"
    check_floating(fn, "teacher_out", teacher_out, "[B, H, N, Dv]", 4)
    check_floating(fn, "student_out", student_out, "[B, H, N, Dv]", 4)
    if teacher_out.shape != student_out.shape:
        raise ValueError(f"{fn}: teacher_out and student_out must have the same shape, got {list(teacher_out.shape)} and {list(student_out.shape)}")
    mask = check_key_padding_mask(fn, mask, teacher_out.shape[0], teacher_out.shape[2], teacher_out.device)
    dtype = torch.promote_types(torch.promote_types(teacher_out.dtype, student_out.dtype), torch.float32)
    err = (teacher_out.to(dtype) - student_out.to(dtype)).pow(2).mean(dim=-1)
    return _masked_mean(err, mask)
