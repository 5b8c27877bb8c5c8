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


@triton.jit
def hedgehog_step_kernel(
    Q, stride_qb, stride_qh, stride_qd,
    K, stride_kb, stride_kh, stride_kd,
    V, stride_vb, stride_vh, stride_vd,
    MASK,  # [B] int8 (1 = real token)
    WQ, BQ, WK, BK,  # [Hq, D, HID], [Hq, HID], [Hk, D, HID], [Hk, HID] float32, contiguous
    S, Z, SHIFT,  # [B, Hk, 2 HID, DV], [B, Hk, 2 HID], [B, Hk, 2 HID] float32, contiguous, updated in place
    O, stride_ob, stride_oh, stride_od,
    Hk, G, D, HID, DV, HEADROOM,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, TINY: tl.constexpr, EMULATE: tl.constexpr,
):
    """grid ``(B * Hk,)``: one key/value head and all its query heads. The two halves of the features
    (``exp(+u)``, ``exp(-u)``) are kept as two ``[BLOCK_H, BLOCK_DV]`` tiles of the state."""
    pid = tl.program_id(0)
    b = pid // Hk
    hk = pid % Hk
    rd = tl.arange(0, BLOCK_D)
    rh = tl.arange(0, BLOCK_H)
    rv = tl.arange(0, BLOCK_DV)
    d_ok, h_ok, v_ok = rd < D, rh < HID, rv < DV
    hv_ok = h_ok[:, None] & v_ok[None, :]
    # the key's log-features [u, -u], u = k W_k + b_k
    k = tl.load(K + b * stride_kb + hk * stride_kh + rd * stride_kd, mask=d_ok, other=0.0).to(tl.float32)
    w = tl.load(WK + hk * D * HID + rd[:, None] * HID + rh[None, :], mask=d_ok[:, None] & h_ok[None, :], other=0.0)
    u = tl.sum(k[:, None] * w, axis=0)
    if HAS_BIAS:
        u += tl.load(BK + hk * HID + rh, mask=h_ok, other=0.0)
    v = tl.load(V + b * stride_vb + hk * stride_vh + rv * stride_vd, mask=v_ok, other=0.0).to(tl.float32)
    base = pid.to(tl.int64) * 2 * HID
    old_p = tl.load(SHIFT + base + rh, mask=h_ok, other=0.0)
    old_n = tl.load(SHIFT + base + HID + rh, mask=h_ok, other=0.0)
    new_p, new_n = tl.maximum(old_p, u), tl.maximum(old_n, -u)
    if HAS_MASK:  # a padded token changes neither the shift nor the state
        keep = tl.load(MASK + b) != 0
        new_p, new_n = tl.where(keep, new_p, old_p), tl.where(keep, new_n, old_n)
    # earlier keys re-expressed for the new shift, then the new key added
    f_p, f_n = tl.exp(old_p - new_p), tl.exp(old_n - new_n)
    kf_p = tl.exp(u - new_p + HEADROOM)
    kf_n = tl.exp(-u - new_n + HEADROOM)
    if HAS_MASK:
        kf_p, kf_n = tl.where(keep, kf_p, 0.0), tl.where(keep, kf_n, 0.0)
    kf_p, kf_n = tl.where(h_ok, kf_p, 0.0), tl.where(h_ok, kf_n, 0.0)
    s_off = pid.to(tl.int64) * 2 * HID * DV + rh[:, None] * DV + rv[None, :]
    S_p = tl.load(S + s_off, mask=hv_ok, other=0.0) * f_p[:, None] + kf_p[:, None] * v[None, :]
    S_n = tl.load(S + s_off + HID * DV, mask=hv_ok, other=0.0) * f_n[:, None] + kf_n[:, None] * v[None, :]
    z_p = tl.load(Z + base + rh, mask=h_ok, other=0.0) * f_p + kf_p
    z_n = tl.load(Z + base + HID + rh, mask=h_ok, other=0.0) * f_n + kf_n
    tl.store(S + s_off, S_p, mask=hv_ok)
    tl.store(S + s_off + HID * DV, S_n, mask=hv_ok)
    tl.store(Z + base + rh, z_p, mask=h_ok)
    tl.store(Z + base + HID + rh, z_n, mask=h_ok)
    tl.store(SHIFT + base + rh, new_p, mask=h_ok)
    tl.store(SHIFT + base + HID + rh, new_n, mask=h_ok)
    for g in range(G):
        h = hk * G + g
        q = tl.load(Q + b * stride_qb + h * stride_qh + rd * stride_qd, mask=d_ok, other=0.0).to(tl.float32)
        wq = tl.load(WQ + h * D * HID + rd[:, None] * HID + rh[None, :], mask=d_ok[:, None] & h_ok[None, :], other=0.0)
        uq = tl.sum(q[:, None] * wq, axis=0)
        if HAS_BIAS:
            uq += tl.load(BQ + h * HID + rh, mask=h_ok, other=0.0)
        lq_p = tl.where(h_ok, uq + new_p - HEADROOM, -float("inf"))
        lq_n = tl.where(h_ok, -uq + new_n - HEADROOM, -float("inf"))
        m = tl.maximum(tl.max(lq_p, axis=0), tl.max(lq_n, axis=0))  # cancelled by the normaliser
        qf_p, qf_n = tl.exp(lq_p - m), tl.exp(lq_n - m)
        num = tl.sum(qf_p[:, None] * S_p, axis=0) + tl.sum(qf_n[:, None] * S_n, axis=0)
        den = tl.sum(qf_p * z_p, axis=0) + tl.sum(qf_n * z_n, axis=0)
        out = num / safe_denominator(den, TINY)
        tl.store(O + b * stride_ob + h * stride_oh + rv * stride_od, cast(out, O.dtype.element_ty, EMULATE), mask=v_ok)


def supports_hedgehog_step(head_dim: int, hidden_dim: int, value_dim: int) -> bool:
    """Whether ``hedgehog_step`` takes heads of width ``head_dim``, maps of ``hidden_dim`` and values of
    ``value_dim`` (two ``[hidden, value]`` state tiles and a ``[head, hidden]`` weight tile in registers)."""
    bd, bh, bv = (L.block(x, 16) for x in (head_dim, hidden_dim, value_dim))
    return bd <= 128 and bh <= 128 and bv <= 128 and bh * bv <= 64 * 64 and bd * bh <= 128 * 64


def hedgehog_step(
    q: Tensor, k: Tensor, v: Tensor, weight_q: Tensor, bias_q: Tensor | None, weight_k: Tensor,
    bias_k: Tensor | None, S: Tensor, z: Tensor, shift: Tensor, headroom: float,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """One decoding step of stabilised Hedgehog linear attention with the feature maps in the kernel; the state
    is updated **in place**.

    q ``[B, Hq, 1, D]``, k ``[B, Hk, 1, D]``, v ``[B, Hk, 1, Dv]``; ``weight_* [H, D, hid]``, ``bias_* [H, hid]``;
    state ``S [B, Hk, 2 hid, Dv]``, ``z [B, Hk, 2 hid]`` of key features shifted by ``shift [B, Hk, 2 hid]`` less
    ``headroom`` (``hedgehog.attention.feature_maps.hedgehog``), all float32 and contiguous. The shift becomes the
    elementwise max of itself and the new key's log-features ``[u, -u]``, the state is rescaled to it, the key is
    added, and each query reads the state with its features shifted up by the same amount (and by its own max,
    which the normaliser cancels). ``key_padding_mask [B, 1]`` False: the token changes nothing.
    Returns ``y [B, Hq, 1, Dv]`` in v's dtype.
    """
    B, Hq, _, D = q.shape
    Hk, DV = k.shape[1], v.shape[-1]
    hid = weight_q.shape[-1]
    for name, t in (("S", S), ("z", z), ("shift", shift)):
        if t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError(f"hedgehog_step: {name} must be a contiguous float32 tensor, got {t.dtype}")
    wq, wk = weight_q.detach().float().contiguous(), weight_k.detach().float().contiguous()
    has_bias = bias_q is not None and bias_k is not None
    bq = bias_q.detach().float().contiguous() if has_bias else wq
    bk = bias_k.detach().float().contiguous() if has_bias else wk
    out = torch.empty(B, Hq, 1, DV, device=q.device, dtype=v.dtype)
    mask = key_padding_mask.reshape(B).to(torch.int8).contiguous() if key_padding_mask is not None else q
    hedgehog_step_kernel[(B * Hk,)](
        q, q.stride(0), q.stride(1), q.stride(3),
        k, k.stride(0), k.stride(1), k.stride(3),
        v, v.stride(0), v.stride(1), v.stride(3),
        mask, wq, bq, wk, bk, S, z, shift,
        out, out.stride(0), out.stride(1), out.stride(3),
        Hk, Hq // Hk, D, hid, DV, float(headroom),
        HAS_MASK=key_padding_mask is not None, HAS_BIAS=has_bias, BLOCK_D=L.block(D, 16),
        BLOCK_H=L.block(hid, 16), BLOCK_DV=L.block(DV, 16), TINY=L.TINY, EMULATE=L.interpreting(), num_warps=4,
    )
    return out
