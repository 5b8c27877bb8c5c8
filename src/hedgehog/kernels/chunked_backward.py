"""Backward kernels of chunked linear attention, with the Hedgehog feature map's gradients fused.

With ``y_i = num_i / den_i``, ``num_i = sum_j A_ij v_j``, ``den_i = sum_j A_ij``, ``A_ij = phi(q_i).phi(k_j)``
and upstream gradient ``dy_i``: ``g_i = dy_i / den_i``, ``delta_i = -(dy_i . y_i) / den_i`` and
``dA_ij = g_i . v_j + delta_i``. Then

* ``dphi(q_i) = g_i S_i^T + delta_i z_i + (intra-chunk part)`` -- a forward walk (``chunk_dq_kernel``);
* ``dphi(k_j) = R_j v_j + r_j`` and ``dv_j = R_j^T phi(k_j)`` with the reverse states
  ``R_j = sum_{i >= j} phi(q_i) g_i^T``, ``r_j = sum_{i >= j} delta_i phi(q_i)`` -- a backward walk
  (``chunk_dkv_kernel``) that starts each segment from the sum of the later segments' contributions
  (``chunk_rstate_kernel`` + the segment scan); the query heads of a GQA group add into one reverse state.

The features are recomputed from q, k (never stored). For ``phi = exp(+-(x W + b) - m)`` (``m`` a detached
per-token shift): ``du = dphi_pos phi_pos - dphi_neg phi_neg``, ``dx = du W^T``, ``dW = x^T du``,
``db = sum du``; each program adds its ``dW``/``db`` atomically into per-head float32 buffers.
"""

from __future__ import annotations

import triton
import triton.language as tl

from hedgehog.kernels.chunked_forward import key_tile
from hedgehog.kernels.tiles import (
    cast, exp_feature_grad, feature_tile, head_base, load_maps, load_rows, load_state, mm, qkv_bases, query_head,
    safe_denominator, store_state,
)


@triton.jit
def _upstream(do_base, stride_dn, stride_dd, den_base, rows, row_ok, DV, BLOCK_DV: tl.constexpr, TINY: tl.constexpr):
    """``g = dy / den`` ``[BLOCK_N, BLOCK_DV]`` (float32), the raw normaliser and whether it passes gradient
    (the guard ``den -> max(den, tiny)`` or 1 when ``den <= 0`` passes none)."""
    rv = tl.arange(0, BLOCK_DV)
    do = load_rows(do_base, stride_dn, stride_dd, rows, row_ok, rv, rv < DV).to(tl.float32)
    den = tl.load(den_base + rows, mask=row_ok, other=1.0)
    return do / safe_denominator(den, TINY)[:, None], den >= TINY


@triton.jit
def _delta(o_base, stride_on, stride_od, rows, row_ok, g, live, DV, BLOCK_DV: tl.constexpr):
    """``delta = -(dy . y) / den = -(g . y)`` where the normaliser passes gradient, else 0."""
    rv = tl.arange(0, BLOCK_DV)
    o = load_rows(o_base, stride_on, stride_od, rows, row_ok, rv, rv < DV).to(tl.float32)
    return tl.where(live, -tl.sum(g * o, axis=1), 0.0)


@triton.jit
def chunk_rstate_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    WQ, WQL, BQ,
    SHIFT,  # [B, Hk, 2, BLOCK_H] float32: the key shift (FEATURE == 1)
    O, stride_ob, stride_oh, stride_on, stride_od,
    DO, stride_db, stride_dh, stride_dn, stride_dd,
    DEN,  # [B * Hq, N] float32 (forward normaliser, unguarded)
    DELTA,  # [B * Hq, N] float32 out: delta_i
    RDELTA,  # [B * Hq, nseg, E] float32 out: the segment's sum phi(q) g^T and sum delta phi(q)
    Hq, G, N, XD, F, DV, SEG, nseg,
    FEATURE: tl.constexpr, SHIFT_Q: tl.constexpr, SPLIT_W: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
    TINY: tl.constexpr,
):
    """One query head over one segment: ``delta`` per token and the segment's reverse-state contribution."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk = query_head(pid_bh, Hq, G)
    rn = tl.arange(0, BLOCK_N)
    q_base = head_base(Q, b, h, stride_qb, stride_qh)
    o_base = head_base(O, b, h, stride_ob, stride_oh)
    do_base = head_base(DO, b, h, stride_db, stride_dh)
    den_base = DEN + pid_bh.to(tl.int64) * N
    wq, wql, bq, _, _, _, sp, sn = load_maps(WQ, WQL, BQ, WQ, WQL, BQ, SHIFT, b, h, hk, Hq // G,
                                             FEATURE, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    R, r = load_state(RDELTA, pid_bh, pid_s, 0, 0, False, BLOCK_F, BLOCK_DV)
    seg_start = pid_s * SEG
    seg_end = tl.minimum(seg_start + SEG, N)
    for start in range(seg_start, seg_end, BLOCK_N):
        rows = start + rn
        row_ok = rows < N
        xq, phq = feature_tile(q_base, stride_qn, stride_qd, rows, row_ok, XD, F, wq, wql, bq, sp, sn,
                               FEATURE, SHIFT_Q, SPLIT_W, BLOCK_X, XDOT, DOT, PREC, EMULATE)
        g, live = _upstream(do_base, stride_dn, stride_dd, den_base, rows, row_ok, DV, BLOCK_DV, TINY)
        delta = _delta(o_base, stride_on, stride_od, rows, row_ok, g, live, DV, BLOCK_DV)
        tl.store(DELTA + pid_bh.to(tl.int64) * N + rows, delta, mask=row_ok)
        R += mm(tl.trans(phq), g, DOT, PREC, EMULATE)
        r += tl.sum(phq.to(tl.float32) * delta[:, None], axis=0)
    store_state(RDELTA, pid_bh, pid_s, nseg, R, r, BLOCK_F, BLOCK_DV)


@triton.jit
def chunk_dq_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    K, stride_kb, stride_kh, stride_kn, stride_kd,
    V, stride_vb, stride_vh, stride_vn, stride_vd,
    MASK, stride_mb,
    WQ, WQL, BQ, WK, WKL, BK,
    SHIFT,  # [B, Hk, 2, BLOCK_H] float32: the key shift (FEATURE == 1)
    STATE, stride_st_bh, stride_st_s,  # forward state before each segment (or the total), [B * Hk, ., E]
    O, stride_ob, stride_oh, stride_on, stride_od,
    DO, stride_db, stride_dh, stride_dn, stride_dd,
    DEN,  # [B * Hq, N] float32 (forward normaliser, unguarded)
    DELTA,  # [B * Hq, N] float32: delta_i, written here when COMPUTE_DELTA else read
    DQ, stride_gb, stride_gh, stride_gn, stride_gd,
    DW, DB,  # [Hq, BLOCK_X, BLOCK_H], [Hq, BLOCK_H] float32, accumulated atomically (FEATURE == 1)
    Hq, G, N, XD, F, DV, SEG,
    CAUSAL: tl.constexpr, FEATURE: tl.constexpr, SHIFT_Q: tl.constexpr, SPLIT_W: tl.constexpr,
    HAS_STATE: tl.constexpr, HAS_MASK: tl.constexpr, COMPUTE_DELTA: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
    TINY: tl.constexpr,
):
    """Gradient of one query head over one segment (and of its map's weight and bias)."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk = query_head(pid_bh, Hq, G)
    rn = tl.arange(0, BLOCK_N)
    rx = tl.arange(0, BLOCK_X)
    rf = tl.arange(0, BLOCK_F)
    rh = tl.arange(0, BLOCK_H)
    q_base, k_base, v_base = qkv_bases(
        Q, K, V, b, h, hk, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh
    )
    o_base = head_base(O, b, h, stride_ob, stride_oh)
    do_base = head_base(DO, b, h, stride_db, stride_dh)
    dq_base = head_base(DQ, b, h, stride_gb, stride_gh)
    mask_base = MASK + b.to(tl.int64) * stride_mb
    den_base = DEN + pid_bh.to(tl.int64) * N
    delta_base = DELTA + pid_bh.to(tl.int64) * N
    wq, wql, bq, wk, wkl, bk, sp, sn = load_maps(WQ, WQL, BQ, WK, WKL, BK, SHIFT, b, h, hk, Hq // G,
                                                 FEATURE, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    S, z = load_state(STATE, b * (Hq // G) + hk, pid_s, stride_st_bh, stride_st_s, HAS_STATE, BLOCK_F, BLOCK_DV)
    dW = tl.zeros([BLOCK_X, BLOCK_H], dtype=tl.float32)
    db = tl.zeros([BLOCK_H], dtype=tl.float32)

    seg_start = pid_s * SEG
    seg_end = tl.minimum(seg_start + SEG, N)
    for start in range(seg_start, seg_end, BLOCK_N):
        rows = start + rn
        row_ok = rows < N
        xq, phq = feature_tile(q_base, stride_qn, stride_qd, rows, row_ok, XD, F, wq, wql, bq, sp, sn,
                               FEATURE, SHIFT_Q, SPLIT_W, BLOCK_X, XDOT, DOT, PREC, EMULATE)
        g, live = _upstream(do_base, stride_dn, stride_dd, den_base, rows, row_ok, DV, BLOCK_DV, TINY)
        if COMPUTE_DELTA:
            delta = _delta(o_base, stride_on, stride_od, rows, row_ok, g, live, DV, BLOCK_DV)
            tl.store(delta_base + rows, delta, mask=row_ok)
        else:
            delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        dphq = mm(g, tl.trans(S), DOT, PREC, EMULATE) + delta[:, None] * z[None, :]
        if CAUSAL:
            xk, phk, v, keep = key_tile(
                k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, start, N, XD, F, DV,
                wk, wkl, bk, sp, sn, FEATURE, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
            )
            dA = mm(g, tl.trans(v), DOT, PREC, EMULATE) + delta[:, None]
            dA = tl.where(rows[:, None] >= rows[None, :], dA, 0.0)
            dphq += mm(dA, phk, DOT, PREC, EMULATE)
            S += mm(tl.trans(phk), v, DOT, PREC, EMULATE)
            z += tl.sum(phk.to(tl.float32), axis=0)
        if FEATURE == 1:
            du = exp_feature_grad(dphq, phq)
            dx = mm(du, tl.trans(wq), XDOT, PREC, EMULATE)
            dW += mm(tl.trans(xq), du, XDOT, PREC, EMULATE)
            db += tl.sum(du, axis=0)
            tl.store(
                dq_base + rows[:, None].to(tl.int64) * stride_gn + rx[None, :] * stride_gd,
                cast(dx, DQ.dtype.element_ty, EMULATE), mask=row_ok[:, None] & (rx < XD)[None, :],
            )
        else:
            tl.store(
                dq_base + rows[:, None].to(tl.int64) * stride_gn + rf[None, :] * stride_gd,
                cast(dphq, DQ.dtype.element_ty, EMULATE), mask=row_ok[:, None] & (rf < F)[None, :],
            )
    if FEATURE == 1:
        tl.atomic_add(DW + h * BLOCK_X * BLOCK_H + rx[:, None] * BLOCK_H + rh[None, :], dW)
        tl.atomic_add(DB + h * BLOCK_H + rh, db)


@triton.jit
def chunk_dkv_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    K, stride_kb, stride_kh, stride_kn, stride_kd,
    V, stride_vb, stride_vh, stride_vn, stride_vd,
    MASK, stride_mb,
    WQ, WQL, BQ, WK, WKL, BK,
    SHIFT,  # [B, Hk, 2, BLOCK_H] float32: the key shift (FEATURE == 1)
    RSTATE, stride_rs_bh, stride_rs_s,  # reverse state after each segment (or the total), [B * Hq, ., E]
    DO, stride_db, stride_dh, stride_dn, stride_dd,
    DEN, DELTA,  # [B * Hq, N] float32
    DK, stride_gkb, stride_gkh, stride_gkn, stride_gkd,  # [B, Hk, N, .] (G == 1) or [B, Hq, N, .] float32 parts
    DV_, stride_gvb, stride_gvh, stride_gvn, stride_gvd,
    DW, DB,  # [Hk, BLOCK_X, BLOCK_H], [Hk, BLOCK_H] float32, accumulated atomically (FEATURE == 1)
    Hq, G, N, XD, F, DV, SEG,
    CAUSAL: tl.constexpr, FEATURE: tl.constexpr, SHIFT_Q: tl.constexpr, SPLIT_W: tl.constexpr,
    HAS_STATE: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
    TINY: tl.constexpr,
):
    """One query head's share of the key/value gradients over one segment, walking its chunks last to first.

    Grid ``(nseg, B * Hq)``: query head ``h`` reads key/value head ``h // G``. With grouped-query heads
    (``G > 1``) each program writes its own float32 part ``[B, Hq, N, .]`` and the host sums the ``G`` parts of a
    group (every program then loads one query map and one reverse state, and the grid has ``Hq`` rows, not
    ``Hk``); with ``G == 1`` it writes the gradients themselves."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk = query_head(pid_bh, Hq, G)
    rn = tl.arange(0, BLOCK_N)
    rx = tl.arange(0, BLOCK_X)
    rf = tl.arange(0, BLOCK_F)
    rh = tl.arange(0, BLOCK_H)
    rv = tl.arange(0, BLOCK_DV)
    q_base, k_base, v_base = qkv_bases(
        Q, K, V, b, h, hk, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh
    )
    do_base = head_base(DO, b, h, stride_db, stride_dh)
    den_base = DEN + pid_bh.to(tl.int64) * N
    delta_base = DELTA + pid_bh.to(tl.int64) * N
    out_h = tl.where(G > 1, h, hk)
    dk_base = head_base(DK, b, out_h, stride_gkb, stride_gkh)
    dv_base = head_base(DV_, b, out_h, stride_gvb, stride_gvh)
    mask_base = MASK + b.to(tl.int64) * stride_mb
    wq, wql, bq, wk, wkl, bk, sp, sn = load_maps(WQ, WQL, BQ, WK, WKL, BK, SHIFT, b, h, hk, Hq // G,
                                                 FEATURE, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    R, r = load_state(RSTATE, pid_bh, pid_s, stride_rs_bh, stride_rs_s, HAS_STATE, BLOCK_F, BLOCK_DV)
    dW = tl.zeros([BLOCK_X, BLOCK_H], dtype=tl.float32)
    db = tl.zeros([BLOCK_H], dtype=tl.float32)

    seg_start = pid_s * SEG
    seg_end = tl.minimum(seg_start + SEG, N)
    n_chunks = tl.cdiv(seg_end - seg_start, BLOCK_N)
    for i in range(n_chunks):
        start = seg_start + (n_chunks - 1 - i) * BLOCK_N
        rows = start + rn
        row_ok = rows < N
        xk, phk, v, keep = key_tile(
            k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, start, N, XD, F, DV,
            wk, wkl, bk, sp, sn, FEATURE, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
        )
        dphk = mm(v, tl.trans(R), DOT, PREC, EMULATE) + r[None, :]
        dv = mm(phk, R, DOT, PREC, EMULATE)
        if CAUSAL:
            xq, phq = feature_tile(q_base, stride_qn, stride_qd, rows, row_ok, XD, F, wq, wql, bq, sp, sn,
                                   FEATURE, SHIFT_Q, SPLIT_W, BLOCK_X, XDOT, DOT, PREC, EMULATE)
            gq, live = _upstream(do_base, stride_dn, stride_dd, den_base, rows, row_ok, DV, BLOCK_DV, TINY)
            delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
            # transposed scores: rows are keys j, columns queries i, kept where j <= i
            causal = rows[:, None] <= rows[None, :]
            scores_t = tl.where(causal, mm(phk, tl.trans(phq), DOT, PREC, EMULATE), 0.0)
            dscores_t = tl.where(causal, mm(v, tl.trans(gq), DOT, PREC, EMULATE) + delta[None, :], 0.0)
            dphk += mm(dscores_t, phq, DOT, PREC, EMULATE)
            dv += mm(scores_t, gq, DOT, PREC, EMULATE)
            R += mm(tl.trans(phq), gq, DOT, PREC, EMULATE)
            r += tl.sum(phq.to(tl.float32) * delta[:, None], axis=0)
        tl.store(
            dv_base + rows[:, None].to(tl.int64) * stride_gvn + rv[None, :] * stride_gvd,
            cast(tl.where(keep[:, None], dv, 0.0), DV_.dtype.element_ty, EMULATE),
            mask=row_ok[:, None] & (rv < DV)[None, :],
        )
        if FEATURE == 1:
            du = exp_feature_grad(dphk, phk)  # phk is 0 on padded keys
            dx = mm(du, tl.trans(wk), XDOT, PREC, EMULATE)
            dW += mm(tl.trans(xk), du, XDOT, PREC, EMULATE)
            db += tl.sum(du, axis=0)
            tl.store(
                dk_base + rows[:, None].to(tl.int64) * stride_gkn + rx[None, :] * stride_gkd,
                cast(dx, DK.dtype.element_ty, EMULATE), mask=row_ok[:, None] & (rx < XD)[None, :],
            )
        else:
            tl.store(
                dk_base + rows[:, None].to(tl.int64) * stride_gkn + rf[None, :] * stride_gkd,
                cast(tl.where(keep[:, None], dphk, 0.0), DK.dtype.element_ty, EMULATE),
                mask=row_ok[:, None] & (rf < F)[None, :],
            )
    if FEATURE == 1:
        tl.atomic_add(DW + hk * BLOCK_X * BLOCK_H + rx[:, None] * BLOCK_H + rh[None, :], dW)
        tl.atomic_add(DB + hk * BLOCK_H + rh, db)
