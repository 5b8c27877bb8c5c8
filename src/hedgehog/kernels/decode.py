"""One decoding step of causal linear attention for a batch of sequences (the recurrent form, Katharopoulos
et al., 2020, eq. 16-18): ``S += phi(k) v^T``, ``z += phi(k)``, ``y = phi(q) S / phi(q) . z``.

Per token the work is a read and a write of the state ``[F, Dv]`` per key/value head, whatever the context
length: the latency is flat in the number of tokens already seen. The new state goes to fresh tensors (the
step is functional, like ``hedgehog.attention.recurrent_step``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hedgehog.kernels import launch as L
from hedgehog.kernels.tiles import cast, safe_denominator

MAX_FEATURES = 256


@triton.jit
def recurrent_step_kernel(
    Q, stride_qb, stride_qh, stride_qf,
    K, stride_kb, stride_kh, stride_kf,
    V, stride_vb, stride_vh, stride_vd,
    MASK,  # [B] int8 (1 = real token)
    S_IN, stride_sb, stride_sh, stride_sf, stride_sd,
    Z_IN, stride_zb, stride_zh, stride_zf,
    S_OUT, Z_OUT,  # contiguous [B, Hk, F, DV], [B, Hk, F] float32
    O, stride_ob, stride_oh, stride_od,
    Hk, G, F, DV,
    HAS_MASK: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_DV: tl.constexpr, TINY: tl.constexpr,
    EMULATE: tl.constexpr,
):
    """grid ``(B * Hk, cdiv(DV, BLOCK_DV))``: one key/value head, one slice of value columns."""
    pid_bh = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = pid_bh // Hk
    hk = pid_bh % Hk
    rf = tl.arange(0, BLOCK_F)
    rv = pid_d * BLOCK_DV + tl.arange(0, BLOCK_DV)
    f_ok = rf < F
    v_ok = rv < DV
    k = tl.load(K + b * stride_kb + hk * stride_kh + rf * stride_kf, mask=f_ok, other=0.0).to(tl.float32)
    v = tl.load(V + b * stride_vb + hk * stride_vh + rv * stride_vd, mask=v_ok, other=0.0).to(tl.float32)
    if HAS_MASK:
        keep = tl.load(MASK + b) != 0
        k = tl.where(keep, k, 0.0)
        v = tl.where(keep, v, 0.0)
    s_in = S_IN + b.to(tl.int64) * stride_sb + hk.to(tl.int64) * stride_sh
    S = tl.load(s_in + rf[:, None] * stride_sf + rv[None, :] * stride_sd, mask=f_ok[:, None] & v_ok[None, :], other=0.0)
    S = S.to(tl.float32) + k[:, None] * v[None, :]
    z = tl.load(Z_IN + b.to(tl.int64) * stride_zb + hk.to(tl.int64) * stride_zh + rf * stride_zf, mask=f_ok, other=0.0)
    z = z.to(tl.float32) + k
    s_out = S_OUT + pid_bh.to(tl.int64) * F * DV
    tl.store(s_out + rf[:, None] * DV + rv[None, :], S, mask=f_ok[:, None] & v_ok[None, :])
    if pid_d == 0:
        tl.store(Z_OUT + pid_bh.to(tl.int64) * F + rf, z, mask=f_ok)
    for g in range(G):
        h = hk * G + g
        q = tl.load(Q + b * stride_qb + h * stride_qh + rf * stride_qf, mask=f_ok, other=0.0).to(tl.float32)
        num = tl.sum(q[:, None] * S, axis=0)
        den = tl.sum(q * z, axis=0)
        out = num / safe_denominator(den, TINY)
        tl.store(O + b * stride_ob + h * stride_oh + rv * stride_od, cast(out, O.dtype.element_ty, EMULATE), mask=v_ok)


def supported(feature_dim: int) -> bool:
    return L.block(feature_dim, 16) <= MAX_FEATURES


def recurrent_step(
    qf: Tensor, kf: Tensor, v: Tensor, S: Tensor, z: Tensor, key_padding_mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """qf ``[B, Hq, 1, F]``, kf ``[B, Hk, 1, F]``, v ``[B, Hk, 1, Dv]``, state ``S [B, Hk, F, Dv]``, ``z [B, Hk, F]``
    (float32), ``key_padding_mask [B, 1]`` (False: the token leaves the state unchanged).
    Returns ``(y [B, Hq, 1, Dv] in v's dtype, S', z')`` with the new state in fresh float32 tensors."""
    B, Hq, _, F = qf.shape
    Hk, DV = kf.shape[1], v.shape[-1]
    S_out = torch.empty(B, Hk, F, DV, device=qf.device, dtype=torch.float32)
    z_out = torch.empty(B, Hk, F, device=qf.device, dtype=torch.float32)
    out = torch.empty(B, Hq, 1, DV, device=qf.device, dtype=v.dtype)
    block_dv = min(32, L.block(DV, 16))  # elementwise kernel: no tensor-core tile minimum
    mask = key_padding_mask.reshape(B).to(torch.int8).contiguous() if key_padding_mask is not None else qf
    grid = (B * Hk, triton.cdiv(DV, block_dv))
    recurrent_step_kernel[grid](
        qf, qf.stride(0), qf.stride(1), qf.stride(3),
        kf, kf.stride(0), kf.stride(1), kf.stride(3),
        v, v.stride(0), v.stride(1), v.stride(3),
        mask, S, *S.stride(), z, *z.stride(), S_out, z_out,
        out, out.stride(0), out.stride(1), out.stride(3),
        Hk, Hq // Hk, F, DV,
        HAS_MASK=key_padding_mask is not None, BLOCK_F=L.block(F, 16), BLOCK_DV=block_dv, TINY=L.TINY,
        EMULATE=L.interpreting(), num_warps=4,
    )
    return out, S_out, z_out
