"""Linear attention on features (Katharopoulos et al., 2020, eq. 4-6; Zhang et al., 2024, eq. 2):

``y_i = sum_j (phi(q_i).phi(k_j)) v_j / sum_j phi(q_i).phi(k_j)`` over ``j <= i`` (causal) or all ``j``.

Three forms that agree to rounding: the quadratic weights (``attention_weights``, for distillation and
analysis), the chunked/global ``linear_attention`` (memory linear in N), and the recurrent step for decoding
with the state ``S = sum_j phi(k_j) v_j^T``, ``z = sum_j phi(k_j)``. All accumulate in float32 (float64 for
float64 inputs). Grouped-query attention: query head h reads key/value head ``h // (Hq / Hk)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from hedgehog.attention.backend import kernels_for
from hedgehog.attention.checks import (
    full_precision,
    accumulation_dtype,
    check_floating,
    check_key_padding_mask,
    check_qk,
    check_qkv,
    check_same_device,
    describe,
)


class RecurrentState(NamedTuple):
    """Decoding state of causal linear attention.

    S: ``[B, Hk, F, Dv]`` = sum over seen tokens of ``phi(k_j) v_j^T`` (float32).
    z: ``[B, Hk, F]`` = sum over seen tokens of ``phi(k_j)`` (float32).
    """

    S: Tensor
    z: Tensor

    @classmethod
    def zeros(
        cls, batch: int, num_kv_heads: int, feature_dim: int, value_dim: int,
        device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
    ) -> "RecurrentState":
        """The empty state (no token seen)."""
        return cls(
            torch.zeros(batch, num_kv_heads, feature_dim, value_dim, device=device, dtype=dtype),
            torch.zeros(batch, num_kv_heads, feature_dim, device=device, dtype=dtype),
        )


def safe_denominator(den: Tensor) -> Tensor:
    """Guard the normaliser: a row that attends to nothing (den == 0, hence numerator 0) divides by 1, and
    subnormal values are clamped to the dtype's smallest normal number."""
    den = torch.where(den > 0, den, torch.ones_like(den))
    return den.clamp_min(torch.finfo(den.dtype).tiny)


def _check_state(fn: str, state: object, batch: int, kv_heads: int, features: int, value_dim: int) -> None:
    if not isinstance(state, RecurrentState):
        raise TypeError(f"{fn}: state must be a RecurrentState(S, z) or None, got {describe(state)}")
    if tuple(state.S.shape) != (batch, kv_heads, features, value_dim):
        raise ValueError(f"{fn}: state.S must be [B, Hk, F, Dv] = {[batch, kv_heads, features, value_dim]}, got {describe(state.S)}")
    if tuple(state.z.shape) != (batch, kv_heads, features):
        raise ValueError(f"{fn}: state.z must be [B, Hk, F] = {[batch, kv_heads, features]}, got {describe(state.z)}")


def _masked_keys(kf: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Zero the padded keys' features and values (``mask [B, N]``, True = real)."""
    if mask is None:
        return kf, v
    pad = ~mask[:, None, :, None]
    return kf.masked_fill(pad, 0.0), v.masked_fill(pad, 0.0)


@full_precision
def attention_weights(qf: Tensor, kf: Tensor, causal: bool, key_padding_mask: Tensor | None = None) -> Tensor:
    """Quadratic linear-attention weights ``A_ij = phi(q_i).phi(k_j) / sum_l phi(q_i).phi(k_l)``.

    qf ``[B, Hq, N, F]``, kf ``[B, Hk, N, F]`` (``Hq % Hk == 0``), ``key_padding_mask [B, N]`` (True = real).
    Returns ``[B, Hq, N, N]`` in float32 (float64 for float64 inputs); each row sums to 1 over its allowed keys
    (a row with no allowed key is all zeros).
    """
    fn = "attention_weights"
    check_qk(fn, qf, kf, "qf", "kf")
    b, hq, n, f = qf.shape
    hk = kf.shape[1]
    mask = check_key_padding_mask(fn, key_padding_mask, b, n, qf.device)
    acc = accumulation_dtype(qf, kf)
    q = qf.to(acc).reshape(b, hk, hq // hk, n, f)
    scores = torch.einsum("bhgif,bhjf->bhgij", q, kf.to(acc))
    if causal:
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=qf.device).tril(), 0.0)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, None, :], 0.0)
    weights = scores / safe_denominator(scores.sum(dim=-1, keepdim=True))
    return weights.reshape(b, hq, n, n)


def _global(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Bidirectional: ``num = q (k^T v)``, ``den = q (sum_j k_j)``; q ``[B, Hk, G, N, F]``."""
    kv = torch.einsum("bhnf,bhnd->bhfd", k, v)
    num = torch.einsum("bhgnf,bhfd->bhgnd", q, kv)
    den = torch.einsum("bhgnf,bhf->bhgn", q, k.sum(dim=2))
    return num, den


def _causal_chunked(
    q: Tensor, k: Tensor, v: Tensor, chunk: int, initial: RecurrentState | None
) -> tuple[Tensor, Tensor, RecurrentState]:
    """Causal form in chunks of ``chunk`` tokens: quadratic with a causal mask inside a chunk, plus the state
    of all earlier chunks (exclusive cumulative sums of ``k^T v`` and ``k``). q ``[B, Hk, G, N, F]``."""
    b, hk, g, n, f = q.shape
    dv = v.shape[-1]
    pad = (-n) % chunk
    if pad:  # zero features past the end: they neither attend nor are attended to
        q, k, v = F.pad(q, (0, 0, 0, pad)), F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    c = (n + pad) // chunk
    qc = q.reshape(b, hk, g, c, chunk, f)
    kc = k.reshape(b, hk, c, chunk, f)
    vc = v.reshape(b, hk, c, chunk, dv)

    tril = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    scores = torch.einsum("bhgcif,bhcjf->bhgcij", qc, kc).masked_fill(~tril, 0.0)
    num = torch.einsum("bhgcij,bhcjd->bhgcid", scores, vc)
    den = scores.sum(dim=-1)

    kv = torch.einsum("bhcjf,bhcjd->bhcfd", kc, vc)  # [B, Hk, C, F, Dv]
    ksum = kc.sum(dim=3)  # [B, Hk, C, F]
    kv_incl, ksum_incl = kv.cumsum(dim=2), ksum.cumsum(dim=2)
    # exclusive sums by shifting (not by subtracting, which cancels badly in fp32)
    kv_prev = torch.cat([torch.zeros_like(kv[:, :, :1]), kv_incl[:, :, :-1]], dim=2)
    ksum_prev = torch.cat([torch.zeros_like(ksum[:, :, :1]), ksum_incl[:, :, :-1]], dim=2)
    final_S, final_z = kv_incl[:, :, -1], ksum_incl[:, :, -1]
    if initial is not None:
        s0, z0 = initial.S.to(q.dtype), initial.z.to(q.dtype)
        kv_prev = kv_prev + s0[:, :, None]
        ksum_prev = ksum_prev + z0[:, :, None]
        final_S, final_z = final_S + s0, final_z + z0
    num = num + torch.einsum("bhgcif,bhcfd->bhgcid", qc, kv_prev)
    den = den + torch.einsum("bhgcif,bhcf->bhgci", qc, ksum_prev)
    num = num.reshape(b, hk, g, n + pad, dv)[:, :, :, :n]
    den = den.reshape(b, hk, g, n + pad)[:, :, :, :n]
    return num, den, RecurrentState(final_S, final_z)


@full_precision
def linear_attention(
    qf: Tensor,
    kf: Tensor,
    v: Tensor,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    chunk_size: int = 64,
    *,
    return_state: bool = False,
    initial_state: RecurrentState | None = None,
) -> Tensor | tuple[Tensor, RecurrentState]:
    """Linear attention ``y_i = sum_j (qf_i.kf_j) v_j / sum_j qf_i.kf_j`` (j <= i if causal).

    qf ``[B, Hq, N, F]``, kf ``[B, Hk, N, F]``, v ``[B, Hk, N, Dv]`` with ``Hq % Hk == 0`` (GQA, no repeat of
    k/v is materialised); ``key_padding_mask [B, N]`` bool, True on real tokens (padded keys get zero weight).
    Causal: chunks of ``chunk_size`` (any N; memory linear in N). Bidirectional: global sums.
    Accumulates in float32 (float64 for float64 inputs); returns ``[B, Hq, N, Dv]`` in v's dtype.
    Causal only: ``return_state=True`` also returns the ``RecurrentState`` after the last token (prefill);
    ``initial_state`` continues from an earlier state.
    """
    fn = "linear_attention"
    check_qkv(fn, qf, kf, v, "qf", "kf", "v")
    b, hq, n, f = qf.shape
    hk, dv = kf.shape[1], v.shape[-1]
    mask = check_key_padding_mask(fn, key_padding_mask, b, n, qf.device)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be a positive int, got {chunk_size!r}")
    if (return_state or initial_state is not None) and not causal:
        raise ValueError(f"{fn}: return_state / initial_state need causal=True (a recurrent state is causal)")
    if initial_state is not None:
        _check_state(fn, initial_state, b, hk, f, dv)
        check_same_device(fn, qf=qf, state=initial_state.S)

    if not return_state and initial_state is None and n > 0:
        kernels = kernels_for(qf, kf, v)
        if (
            kernels is not None and all(t.dtype in kernels.KERNEL_DTYPES for t in (qf, kf, v))
            and kernels.supports_features(f, dv)
        ):
            return kernels.linear_attention(qf, kf, v, causal=causal, key_padding_mask=mask)

    acc = accumulation_dtype(qf, kf, v)
    q = qf.to(acc).reshape(b, hk, hq // hk, n, f)
    k, vv = _masked_keys(kf.to(acc), v.to(acc), mask)
    state = None
    if n == 0:
        num, den = q.new_zeros(b, hk, hq // hk, 0, dv), q.new_zeros(b, hk, hq // hk, 0)
        state = initial_state if initial_state is not None else RecurrentState.zeros(b, hk, f, dv, qf.device, acc)
    elif causal:
        num, den, state = _causal_chunked(q, k, vv, chunk_size, initial_state)
    else:
        num, den = _global(q, k, vv)
    out = (num / safe_denominator(den).unsqueeze(-1)).reshape(b, hq, n, dv).to(v.dtype)
    return (out, state) if return_state else out


@full_precision
def recurrent_step(
    qf: Tensor,
    kf: Tensor,
    v: Tensor,
    state: RecurrentState | None = None,
    key_padding_mask: Tensor | None = None,
) -> tuple[Tensor, RecurrentState]:
    """One decoding step of causal linear attention: ``S += kf^T v``, ``z += kf``, ``y = qf S / qf z``.

    qf ``[B, Hq, 1, F]``, kf ``[B, Hk, 1, F]``, v ``[B, Hk, 1, Dv]``; ``state`` from ``linear_attention(...,
    return_state=True)`` or a previous step (None = empty); ``key_padding_mask [B, 1]`` (False: this token
    is padding and leaves the state unchanged). Returns ``(y [B, Hq, 1, Dv] in v's dtype, new state)``.
    """
    fn = "recurrent_step"
    check_qkv(fn, qf, kf, v, "qf", "kf", "v")
    if qf.shape[2] != 1:
        raise ValueError(f"{fn}: qf, kf, v must hold one token (N = 1), got qf {describe(qf)}; use linear_attention for N > 1")
    b, hq, _, f = qf.shape
    hk, dv = kf.shape[1], v.shape[-1]
    mask = check_key_padding_mask(fn, key_padding_mask, b, 1, qf.device)
    acc = accumulation_dtype(qf, kf, v)
    if state is None:
        state = RecurrentState.zeros(b, hk, f, dv, qf.device, acc)
    else:
        _check_state(fn, state, b, hk, f, dv)
        check_floating(fn, "state.S", state.S, "[B, Hk, F, Dv]", 4)
        check_same_device(fn, qf=qf, state=state.S)
        acc = torch.promote_types(acc, state.S.dtype)
    kernels = kernels_for(qf, kf, v, state.S, state.z)
    if (
        kernels is not None and state.S.dtype == torch.float32 and state.z.dtype == torch.float32
        and all(t.dtype in kernels.KERNEL_DTYPES for t in (qf, kf, v)) and kernels.supports_decode(f)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in (qf, kf, v, state.S, state.z)))
    ):  # the decode kernel has no backward
        out, S, z = kernels.recurrent_step(qf, kf, v, state.S, state.z, mask)
        return out, RecurrentState(S, z)
    k, vv = _masked_keys(kf.to(acc), v.to(acc), mask)
    k, vv = k[:, :, 0], vv[:, :, 0]
    S = state.S.to(acc) + k.unsqueeze(-1) * vv.unsqueeze(-2)
    z = state.z.to(acc) + k
    q = qf[:, :, 0].to(acc).reshape(b, hk, hq // hk, f)
    num = torch.einsum("bhgf,bhfd->bhgd", q, S)
    den = torch.einsum("bhgf,bhf->bhg", q, z)
    out = (num / safe_denominator(den).unsqueeze(-1)).reshape(b, hq, 1, dv).to(v.dtype)
    return out, RecurrentState(S, z)
