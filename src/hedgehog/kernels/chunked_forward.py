"""Forward kernels of chunked causal / bidirectional linear attention (Katharopoulos et al., 2020, eq. 4-6).

``y_i = (phi(q_i) S_i) / (phi(q_i) . z_i)`` with ``S_i = sum_j phi(k_j) v_j^T`` and ``z_i = sum_j phi(k_j)``
over ``j <= i`` (causal) or all ``j``. The sequence is cut into segments of ``SEG`` tokens, each a run of
chunks of ``BLOCK_N`` tokens, so that long sequences still spread over all multiprocessors:

1. ``segment_states_kernel`` -- per (batch, kv head, segment): ``sum phi(k) v^T`` and ``sum phi(k)``.
2. ``segment_scan_kernel`` (scan.py) -- exclusive prefix sums over segments (causal) or the total.
3. ``chunk_output_kernel`` -- per (batch, query head, segment): starts from the prefix state and walks the
   segment's chunks: inter-chunk part ``phi(q) S`` plus the intra-chunk quadratic part (causal mask) on the
   tensor cores, then adds the chunk to the state.

``FEATURE == 1``: the inputs are raw q, k (``[.., D]``) and the Hedgehog map ``exp(+-(x W + b))`` is computed
in the kernel (the features never reach memory); ``FEATURE == 0``: the inputs are ready-made features.
States are flat float32 rows of ``E = BLOCK_F * BLOCK_DV + BLOCK_F``: ``S`` row-major, then ``z``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from hedgehog.kernels.tiles import (
    cast, feature_tile, head_base, load_maps, load_rows, load_state, mm, qkv_bases, query_head, safe_denominator,
    store_state,
)


@triton.jit
def key_tile(
    K, stride_kn, stride_kd, V, stride_vn, stride_vd, mask_base, start, N, XD, F, DV, wk, wkl, bk, sp, sn,
    FEATURE: tl.constexpr, SPLIT_W: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_DV: tl.constexpr,
    XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
):
    """Raw keys, key features ``[BLOCK_N, BLOCK_F]`` (0 on padded / out-of-range keys) and values
    ``[BLOCK_N, BLOCK_DV]`` (``DOT``) of the chunk starting at ``start`` (which may be negative: rows before the
    sequence are out of range), and which keys are real."""
    rows = start + tl.arange(0, BLOCK_N)
    in_range = (rows >= 0) & (rows < N)
    keep = in_range
    if HAS_MASK:
        keep = keep & (tl.load(mask_base + rows, mask=in_range, other=0) != 0)
    xk, phk = feature_tile(K, stride_kn, stride_kd, rows, in_range, XD, F, wk, wkl, bk, sp, sn,
                           FEATURE, False, SPLIT_W, BLOCK_X, XDOT, DOT, PREC, EMULATE)
    phk = tl.where(keep[:, None], phk, 0.0)
    rv = tl.arange(0, BLOCK_DV)
    v = load_rows(V, stride_vn, stride_vd, rows, keep, rv, rv < DV)
    return xk, phk, cast(v, DOT, EMULATE), keep


@triton.jit
def segment_states_kernel(
    K, stride_kb, stride_kh, stride_kn, stride_kd,
    V, stride_vb, stride_vh, stride_vn, stride_vd,
    MASK, stride_mb,
    WK, WKL, BK,
    SHIFT,  # [B, Hk, 2, BLOCK_H] float32: the key shift (FEATURE == 1)
    DELTA,  # [B * Hk, nseg, E] float32 out
    Hk, N, XD, F, DV, SEG, nseg, LAG,
    FEATURE: tl.constexpr, SPLIT_W: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
):
    """``DELTA[b, h, s] = (sum_j phi(k_j) v_j^T, sum_j phi(k_j))`` over the keys of segment ``s`` moved back by
    ``LAG`` tokens, ``[s SEG - LAG, (s + 1) SEG - LAG)`` (``LAG`` > 0: the sliding-window hybrid, whose linear
    state trails the queries by its window)."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // Hk
    h = pid_bh % Hk
    k_base = head_base(K, b, h, stride_kb, stride_kh)
    v_base = head_base(V, b, h, stride_vb, stride_vh)
    mask_base = MASK + b.to(tl.int64) * stride_mb
    _, _, _, wk, wkl, bk, sp, sn = load_maps(WK, WKL, BK, WK, WKL, BK, SHIFT, b, h, h, Hk,
                                             FEATURE, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    S, z = load_state(DELTA, pid_bh, pid_s, 0, 0, False, BLOCK_F, BLOCK_DV)
    seg_start = pid_s * SEG
    seg_end = tl.minimum(seg_start + SEG, N)
    for start in range(seg_start, seg_end, BLOCK_N):
        xk, phk, v, keep = key_tile(
            k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, start - LAG, N, XD, F, DV, wk, wkl,
            bk, sp, sn, FEATURE, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
        )
        S += mm(tl.trans(phk), v, DOT, PREC, EMULATE)
        z += tl.sum(phk.to(tl.float32), axis=0)
    store_state(DELTA, pid_bh, pid_s, nseg, S, z, BLOCK_F, BLOCK_DV)


@triton.jit
def chunk_output_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    K, stride_kb, stride_kh, stride_kn, stride_kd,
    V, stride_vb, stride_vh, stride_vn, stride_vd,
    MASK, stride_mb,
    WQ, WQL, BQ, WK, WKL, BK,
    SHIFT,  # [B, Hk, 2, BLOCK_H] float32: the key shift (FEATURE == 1)
    STATE, stride_st_bh, stride_st_s,  # [B * Hk, nseg or 1, E]: state before each segment (or the total)
    O, stride_ob, stride_oh, stride_on, stride_od,
    DEN,  # [B * Hq, N] float32 out: the normaliser (before the guard), kept for the backward
    Hq, G, N, XD, F, DV, SEG,
    CAUSAL: tl.constexpr, FEATURE: tl.constexpr, SHIFT_Q: tl.constexpr, SPLIT_W: tl.constexpr,
    HAS_STATE: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
    TINY: tl.constexpr,
):
    """Output of one query head over one segment (query head ``h`` reads kv head ``h // G``)."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk = query_head(pid_bh, Hq, G)
    rn = tl.arange(0, BLOCK_N)
    rv = tl.arange(0, BLOCK_DV)
    q_base, k_base, v_base = qkv_bases(
        Q, K, V, b, h, hk, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh
    )
    o_base = head_base(O, b, h, stride_ob, stride_oh)
    mask_base = MASK + b.to(tl.int64) * stride_mb
    den_base = DEN + pid_bh.to(tl.int64) * N
    wq, wql, bq, wk, wkl, bk, sp, sn = load_maps(WQ, WQL, BQ, WK, WKL, BK, SHIFT, b, h, hk, Hq // G,
                                                 FEATURE, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    S, z = load_state(STATE, b * (Hq // G) + hk, pid_s, stride_st_bh, stride_st_s, HAS_STATE, BLOCK_F, BLOCK_DV)

    seg_start = pid_s * SEG
    seg_end = tl.minimum(seg_start + SEG, N)
    for start in range(seg_start, seg_end, BLOCK_N):
        rows = start + rn
        row_ok = rows < N
        xq, phq = feature_tile(q_base, stride_qn, stride_qd, rows, row_ok, XD, F, wq, wql, bq, sp, sn,
                               FEATURE, SHIFT_Q, SPLIT_W, BLOCK_X, XDOT, DOT, PREC, EMULATE)
        num = mm(phq, S, DOT, PREC, EMULATE)
        den = tl.sum(phq.to(tl.float32) * z[None, :], axis=1)
        if CAUSAL:
            xk, phk, v, keep = key_tile(
                k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, start, N, XD, F, DV,
                wk, wkl, bk, sp, sn, FEATURE, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
            )
            scores = mm(phq, tl.trans(phk), DOT, PREC, EMULATE)
            scores = tl.where(rows[:, None] >= rows[None, :], scores, 0.0)
            num += mm(scores, v, DOT, PREC, EMULATE)
            den += tl.sum(scores, axis=1)
            S += mm(tl.trans(phk), v, DOT, PREC, EMULATE)
            z += tl.sum(phk.to(tl.float32), axis=0)
        out = num / safe_denominator(den, TINY)[:, None]
        tl.store(
            o_base + rows[:, None].to(tl.int64) * stride_on + rv[None, :] * stride_od,
            cast(out, O.dtype.element_ty, EMULATE), mask=row_ok[:, None] & (rv < DV)[None, :],
        )
        tl.store(den_base + rows, den, mask=row_ok)
