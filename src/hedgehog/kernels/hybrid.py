"""The sliding-window + Hedgehog hybrid (``hedgehog.attention.hybrid``) as chunked kernels, causal, with the
Hedgehog map fused: forward and backward.

Query ``i`` weighs the keys of its window ``0 <= i - j < w`` by ``exp(s_ij - c_i)`` (``s = q.k * scale``) and
every older key by ``kappa_i phi(q_i).phi(k_j)`` (stabilised features, ``kappa_i = exp(beta_h + m_i - c_i)``
with ``m_i`` the query's feature shift), one normaliser for both; ``c_i = max(window max, beta_h + m_i + log of
the linear part)`` keeps the larger part O(1) (the shifts cancel; see the PyTorch reference).

Layout of the work: chunks of ``BLOCK_N`` tokens. A query chunk starting at ``start`` reads the linear state of
the keys before ``start - LAG`` (``LAG = ceil(w / BLOCK_N) BLOCK_N``) and, tile by tile, the ``LAG / BLOCK_N + 1``
key chunks from ``start - LAG`` to itself, where every (query, key) pair is either a window pair, a linear pair
or neither; after the chunk the oldest of those tiles joins the state. Segments work as in ``chunked.py`` with
the states moved back by ``LAG`` (``segment_states_kernel`` with ``LAG``), and the backward's reverse states
forward by ``LAG``. The backward recomputes features and logits; it needs the forward's normaliser, ``c`` and
``kappa`` per query. The gradient of ``beta`` is ``-sum over window pairs of dA_ij A_ij`` (the weights' gradients
``dA`` sum to zero against the weights over each query).
"""

from __future__ import annotations

import triton
import triton.language as tl

from hedgehog.kernels.chunked_backward import _upstream
from hedgehog.kernels.chunked_forward import key_tile
from hedgehog.kernels.tiles import (
    cast, exp_feature_grad, exp_features_and_shift, head_base, load_maps, load_rows, load_state, mm, qkv_bases,
    query_head, safe_denominator, store_state,
)


@triton.jit
def _query_tile(q_base, stride_qn, stride_qd, rows, row_ok, XD, F, wq, wql, bq, sp, sn,
                SPLIT_W: tl.constexpr, BLOCK_X: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr,
                PREC: tl.constexpr, EMULATE: tl.constexpr):
    """Raw queries ``[BLOCK_N, BLOCK_X]``, their stabilised features and per-row shift ``m``."""
    rx = tl.arange(0, BLOCK_X)
    xq = load_rows(q_base, stride_qn, stride_qd, rows, row_ok, rx, rx < XD)
    phq, m = exp_features_and_shift(xq, wq, wql, bq, sp, sn, F // 2, True, SPLIT_W, XDOT, DOT, PREC, EMULATE)
    return xq, phq, m


@triton.jit
def _regions(q_rows, k_rows, keep, q_ok, WINDOW):
    """Bool ``[queries, keys]``: window pairs (``0 <= i - j < w``) and linear pairs (``i - j >= w``)."""
    rel = q_rows[:, None] - k_rows[None, :]
    real = keep[None, :] & q_ok[:, None]
    return (rel >= 0) & (rel < WINDOW) & real, (rel >= WINDOW) & real


@triton.jit
def hybrid_output_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    K, stride_kb, stride_kh, stride_kn, stride_kd,
    V, stride_vb, stride_vh, stride_vn, stride_vd,
    MASK, stride_mb,
    WQ, WQL, BQ, WK, WKL, BK, SHIFT, BETA,
    STATE, stride_st_bh, stride_st_s,  # [B * Hk, nseg, E]: linear state of the keys before segment start - LAG
    O, stride_ob, stride_oh, stride_on, stride_od,
    DEN, C, KAPPA,  # [B * Hq, N] float32 out: normaliser, shift c and linear factor kappa per query
    Hq, G, N, XD, F, DV, SEG, WINDOW, LAG, NT, SCALE,
    SPLIT_W: tl.constexpr, HAS_STATE: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
    TINY: tl.constexpr,
):
    """Output of one query head over one segment."""
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
    row_base = pid_bh.to(tl.int64) * N
    wq, wql, bq, wk, wkl, bk, sp, sn = load_maps(WQ, WQL, BQ, WK, WKL, BK, SHIFT, b, h, hk, Hq // G,
                                                 1, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    beta = tl.load(BETA + h)
    S, z = load_state(STATE, b * (Hq // G) + hk, pid_s, stride_st_bh, stride_st_s, HAS_STATE, BLOCK_F, BLOCK_DV)

    seg_start = pid_s * SEG
    seg_end = tl.minimum(seg_start + SEG, N)
    for start in range(seg_start, seg_end, BLOCK_N):
        rows = start + rn
        row_ok = rows < N
        xq, phq, m = _query_tile(q_base, stride_qn, stride_qd, rows, row_ok, XD, F, wq, wql, bq, sp, sn,
                                 SPLIT_W, BLOCK_X, XDOT, DOT, PREC, EMULATE)
        lin_num = mm(phq, S, DOT, PREC, EMULATE)
        lin_den = tl.sum(phq.to(tl.float32) * z[None, :], axis=1)
        m_w = tl.full([BLOCK_N], -float("inf"), tl.float32)
        for t in range(NT):  # pass 1: the window's largest logit and the newest linear pairs
            k_start = start - LAG + t * BLOCK_N
            xk, phk, v, keep = key_tile(
                k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, k_start, N, XD, F, DV,
                wk, wkl, bk, sp, sn, 1, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
            )
            in_w, in_l = _regions(rows, k_start + rn, keep, row_ok, WINDOW)
            s = mm(xq, tl.trans(xk), XDOT, PREC, EMULATE) * SCALE
            m_w = tl.maximum(m_w, tl.max(tl.where(in_w, s, -float("inf")), axis=1))
            lin = tl.where(in_l, mm(phq, tl.trans(phk), DOT, PREC, EMULATE), 0.0)
            lin_num += mm(lin, v, DOT, PREC, EMULATE)
            lin_den += tl.sum(lin, axis=1)
        lin_ok = lin_den > TINY
        lin_log = tl.where(lin_ok, beta + m + tl.log(tl.where(lin_ok, lin_den, 1.0)), -float("inf"))
        c = tl.maximum(m_w, lin_log)
        c = tl.where(c > -float("inf"), c, 0.0)
        kappa = tl.where(lin_ok, tl.exp(beta + m - c), 0.0)
        num = kappa[:, None] * lin_num
        den = kappa * lin_den
        for t in range(NT):  # pass 2: the window's weights against c
            k_start = start - LAG + t * BLOCK_N
            xk, phk, v, keep = key_tile(
                k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, k_start, N, XD, F, DV,
                wk, wkl, bk, sp, sn, 1, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
            )
            in_w, in_l = _regions(rows, k_start + rn, keep, row_ok, WINDOW)
            s = mm(xq, tl.trans(xk), XDOT, PREC, EMULATE) * SCALE
            e = tl.where(in_w, tl.exp(s - c[:, None]), 0.0)
            num += mm(e, v, DOT, PREC, EMULATE)
            den += tl.sum(e, axis=1)
        out = num / safe_denominator(den, TINY)[:, None]
        tl.store(
            o_base + rows[:, None].to(tl.int64) * stride_on + rv[None, :] * stride_od,
            cast(out, O.dtype.element_ty, EMULATE), mask=row_ok[:, None] & (rv < DV)[None, :],
        )
        tl.store(DEN + row_base + rows, den, mask=row_ok)
        tl.store(C + row_base + rows, c, mask=row_ok)
        tl.store(KAPPA + row_base + rows, kappa, mask=row_ok)
        # the oldest tile leaves the window region of every later query: it joins the linear state
        xk, phk, v, keep = key_tile(
            k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, start - LAG, N, XD, F, DV,
            wk, wkl, bk, sp, sn, 1, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
        )
        S += mm(tl.trans(phk), v, DOT, PREC, EMULATE)
        z += tl.sum(phk.to(tl.float32), axis=0)


@triton.jit
def _scaled_queries(q_base, stride_qn, stride_qd, do_base, stride_dn, stride_dd, row_base, DEN, DELTA, KAPPA, rows,
                    row_ok, XD, F, DV, wq, wql, bq, sp, sn,
                    SPLIT_W: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_DV: tl.constexpr, XDOT: tl.constexpr,
                    DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr, TINY: tl.constexpr):
    """A query tile as the backward needs it: raw queries, stabilised features, the linear queries
    ``kappa * phi(q)`` (float32), ``g = dy / den`` and ``delta``."""
    xq, phq, m = _query_tile(q_base, stride_qn, stride_qd, rows, row_ok, XD, F, wq, wql, bq, sp, sn,
                             SPLIT_W, BLOCK_X, XDOT, DOT, PREC, EMULATE)
    kappa = tl.load(KAPPA + row_base + rows, mask=row_ok, other=0.0)
    g, live = _upstream(do_base, stride_dn, stride_dd, DEN + row_base, rows, row_ok, DV, BLOCK_DV, TINY)
    delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
    return xq, phq, phq.to(tl.float32) * kappa[:, None], g, delta


@triton.jit
def hybrid_rstate_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    WQ, WQL, BQ, SHIFT,
    DO, stride_db, stride_dh, stride_dn, stride_dd,
    DEN, DELTA, KAPPA,  # [B * Hq, N] float32
    RDELTA,  # [B * Hq, nseg, E] float32 out
    Hq, G, N, XD, F, DV, SEG, nseg, LAG,
    SPLIT_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
    EMULATE: tl.constexpr, TINY: tl.constexpr,
):
    """One query head's reverse-state contribution of the queries ``[s SEG + LAG, (s + 1) SEG + LAG)``:
    ``sum (kappa phi(q)) g^T`` and ``sum delta kappa phi(q)``."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk = query_head(pid_bh, Hq, G)
    rn = tl.arange(0, BLOCK_N)
    q_base = head_base(Q, b, h, stride_qb, stride_qh)
    do_base = head_base(DO, b, h, stride_db, stride_dh)
    row_base = pid_bh.to(tl.int64) * N
    wq, wql, bq, _, _, _, sp, sn = load_maps(WQ, WQL, BQ, WQ, WQL, BQ, SHIFT, b, h, hk, Hq // G,
                                             1, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    R, r = load_state(RDELTA, pid_bh, pid_s, 0, 0, False, BLOCK_F, BLOCK_DV)
    seg_start = pid_s * SEG
    for start in range(seg_start, seg_start + SEG, BLOCK_N):
        rows = start + LAG + rn
        row_ok = rows < N
        xq, phq, qh, g, delta = _scaled_queries(
            q_base, stride_qn, stride_qd, do_base, stride_dn, stride_dd, row_base, DEN, DELTA, KAPPA, rows, row_ok,
            XD, F, DV, wq, wql, bq, sp, sn, SPLIT_W, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE, TINY,
        )
        R += mm(tl.trans(qh), g, DOT, PREC, EMULATE)
        r += tl.sum(qh * delta[:, None], axis=0)
    store_state(RDELTA, pid_bh, pid_s, nseg, R, r, BLOCK_F, BLOCK_DV)


@triton.jit
def hybrid_dq_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    K, stride_kb, stride_kh, stride_kn, stride_kd,
    V, stride_vb, stride_vh, stride_vn, stride_vd,
    MASK, stride_mb,
    WQ, WQL, BQ, WK, WKL, BK, SHIFT,
    STATE, stride_st_bh, stride_st_s,  # the forward's lagged states
    DO, stride_db, stride_dh, stride_dn, stride_dd,
    DEN, C, KAPPA, DELTA,  # [B * Hq, N] float32
    DQ, stride_gb, stride_gh, stride_gn, stride_gd,
    DW, DB, DBETA,  # [Hq, BLOCK_X, BLOCK_H], [Hq, BLOCK_H], [Hq] float32, accumulated atomically
    Hq, G, N, XD, F, DV, SEG, WINDOW, LAG, NT, SCALE,
    SPLIT_W: tl.constexpr, HAS_STATE: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
    TINY: tl.constexpr,
):
    """Gradient of one query head over one segment, of its map, and its share of ``d beta``."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk = query_head(pid_bh, Hq, G)
    rn = tl.arange(0, BLOCK_N)
    rx = tl.arange(0, BLOCK_X)
    rh = tl.arange(0, BLOCK_H)
    q_base, k_base, v_base = qkv_bases(
        Q, K, V, b, h, hk, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh
    )
    do_base = head_base(DO, b, h, stride_db, stride_dh)
    dq_base = head_base(DQ, b, h, stride_gb, stride_gh)
    mask_base = MASK + b.to(tl.int64) * stride_mb
    row_base = pid_bh.to(tl.int64) * N
    wq, wql, bq, wk, wkl, bk, sp, sn = load_maps(WQ, WQL, BQ, WK, WKL, BK, SHIFT, b, h, hk, Hq // G,
                                                 1, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
    S, z = load_state(STATE, b * (Hq // G) + hk, pid_s, stride_st_bh, stride_st_s, HAS_STATE, BLOCK_F, BLOCK_DV)
    dW = tl.zeros([BLOCK_X, BLOCK_H], dtype=tl.float32)
    db = tl.zeros([BLOCK_H], dtype=tl.float32)
    dbeta = tl.zeros([BLOCK_N], dtype=tl.float32)

    seg_start = pid_s * SEG
    seg_end = tl.minimum(seg_start + SEG, N)
    for start in range(seg_start, seg_end, BLOCK_N):
        rows = start + rn
        row_ok = rows < N
        xq, phq, qh, g, delta = _scaled_queries(
            q_base, stride_qn, stride_qd, do_base, stride_dn, stride_dd, row_base, DEN, DELTA, KAPPA, rows, row_ok,
            XD, F, DV, wq, wql, bq, sp, sn, SPLIT_W, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE, TINY,
        )
        kappa = tl.load(KAPPA + row_base + rows, mask=row_ok, other=0.0)
        c = tl.load(C + row_base + rows, mask=row_ok, other=0.0)
        dqh = mm(g, tl.trans(S), DOT, PREC, EMULATE) + delta[:, None] * z[None, :]  # d(kappa phi(q)), the state
        dxq = tl.zeros([BLOCK_N, BLOCK_X], dtype=tl.float32)
        for t in range(NT):
            k_start = start - LAG + t * BLOCK_N
            xk, phk, v, keep = key_tile(
                k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, k_start, N, XD, F, DV,
                wk, wkl, bk, sp, sn, 1, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
            )
            in_w, in_l = _regions(rows, k_start + rn, keep, row_ok, WINDOW)
            dA = mm(g, tl.trans(v), DOT, PREC, EMULATE) + delta[:, None]
            dqh += mm(tl.where(in_l, dA, 0.0), phk, DOT, PREC, EMULATE)
            s = mm(xq, tl.trans(xk), XDOT, PREC, EMULATE) * SCALE
            ds = tl.where(in_w, dA * tl.exp(s - c[:, None]), 0.0)
            dxq += mm(ds, xk, XDOT, PREC, EMULATE) * SCALE
            dbeta -= tl.sum(ds, axis=1)
        du = exp_feature_grad(dqh * kappa[:, None], phq)
        dx = mm(du, tl.trans(wq), XDOT, PREC, EMULATE) + dxq
        dW += mm(tl.trans(xq), du, XDOT, PREC, EMULATE)
        db += tl.sum(du, axis=0)
        tl.store(
            dq_base + rows[:, None].to(tl.int64) * stride_gn + rx[None, :] * stride_gd,
            cast(dx, DQ.dtype.element_ty, EMULATE), mask=row_ok[:, None] & (rx < XD)[None, :],
        )
        xk, phk, v, keep = key_tile(
            k_base, stride_kn, stride_kd, v_base, stride_vn, stride_vd, mask_base, start - LAG, N, XD, F, DV,
            wk, wkl, bk, sp, sn, 1, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
        )
        S += mm(tl.trans(phk), v, DOT, PREC, EMULATE)
        z += tl.sum(phk.to(tl.float32), axis=0)
    tl.atomic_add(DW + h * BLOCK_X * BLOCK_H + rx[:, None] * BLOCK_H + rh[None, :], dW)
    tl.atomic_add(DB + h * BLOCK_H + rh, db)
    tl.atomic_add(DBETA + h, tl.sum(dbeta, axis=0))


@triton.jit
def hybrid_dkv_kernel(
    Q, stride_qb, stride_qh, stride_qn, stride_qd,
    K, stride_kb, stride_kh, stride_kn, stride_kd,
    V, stride_vb, stride_vh, stride_vn, stride_vd,
    MASK, stride_mb,
    WQ, WQL, BQ, WK, WKL, BK, SHIFT,
    RSTATE, stride_rs_bh, stride_rs_s,  # per query head: reverse state of the queries after segment end + LAG
    DO, stride_db, stride_dh, stride_dn, stride_dd,
    DEN, C, KAPPA, DELTA,  # [B * Hq, N] float32
    DK, stride_gkb, stride_gkh, stride_gkn, stride_gkd,  # [B, Hk, N, .] (G == 1) or [B, Hq, N, .] float32 parts
    DV_, stride_gvb, stride_gvh, stride_gvn, stride_gvd,
    DW, DB,  # [Hk, BLOCK_X, BLOCK_H], [Hk, BLOCK_H] float32, accumulated atomically
    Hq, G, N, XD, F, DV, SEG, WINDOW, LAG, NT, SCALE,
    SPLIT_W: tl.constexpr, HAS_STATE: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_DV: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
    TINY: tl.constexpr,
):
    """One query head's share of the key/value gradients over one segment, key chunks last to first."""
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
    out_h = tl.where(G > 1, h, hk)
    dk_base = head_base(DK, b, out_h, stride_gkb, stride_gkh)
    dv_base = head_base(DV_, b, out_h, stride_gvb, stride_gvh)
    mask_base = MASK + b.to(tl.int64) * stride_mb
    row_base = pid_bh.to(tl.int64) * N
    wq, wql, bq, wk, wkl, bk, sp, sn = load_maps(WQ, WQL, BQ, WK, WKL, BK, SHIFT, b, h, hk, Hq // G,
                                                 1, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
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
            wk, wkl, bk, sp, sn, 1, SPLIT_W, HAS_MASK, BLOCK_N, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE,
        )
        dphk = mm(v, tl.trans(R), DOT, PREC, EMULATE) + r[None, :]
        dv = mm(phk, R, DOT, PREC, EMULATE)
        dxk = tl.zeros([BLOCK_N, BLOCK_X], dtype=tl.float32)
        for t in range(NT):  # the query chunks for which these keys are window or newest linear pairs
            q_rows = start + t * BLOCK_N + rn
            q_ok = q_rows < N
            xq, phq, qh, g, delta = _scaled_queries(
                q_base, stride_qn, stride_qd, do_base, stride_dn, stride_dd, row_base, DEN, DELTA, KAPPA, q_rows,
                q_ok, XD, F, DV, wq, wql, bq, sp, sn, SPLIT_W, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE, TINY,
            )
            c = tl.load(C + row_base + q_rows, mask=q_ok, other=0.0)
            in_w, in_l = _regions(q_rows, rows, keep, q_ok, WINDOW)  # [queries, keys]
            in_w = tl.trans(in_w)
            in_l = tl.trans(in_l)  # [keys, queries]
            dA_t = mm(v, tl.trans(g), DOT, PREC, EMULATE) + delta[None, :]
            lin_t = tl.where(in_l, mm(phk, tl.trans(qh), DOT, PREC, EMULATE), 0.0)
            dphk += mm(tl.where(in_l, dA_t, 0.0), qh, DOT, PREC, EMULATE)
            s_t = mm(xk, tl.trans(xq), XDOT, PREC, EMULATE) * SCALE
            e_t = tl.where(in_w, tl.exp(s_t - c[None, :]), 0.0)
            dv += mm(lin_t + e_t, g, DOT, PREC, EMULATE)
            dxk += mm(dA_t * e_t, xq, XDOT, PREC, EMULATE) * SCALE
        tl.store(
            dv_base + rows[:, None].to(tl.int64) * stride_gvn + rv[None, :] * stride_gvd,
            cast(tl.where(keep[:, None], dv, 0.0), DV_.dtype.element_ty, EMULATE),
            mask=row_ok[:, None] & (rv < DV)[None, :],
        )
        du = exp_feature_grad(dphk, phk)  # phk is 0 on padded keys
        dx = tl.where(keep[:, None], mm(du, tl.trans(wk), XDOT, PREC, EMULATE) + dxk, 0.0)
        dW += mm(tl.trans(xk), du, XDOT, PREC, EMULATE)
        db += tl.sum(du, axis=0)
        tl.store(
            dk_base + rows[:, None].to(tl.int64) * stride_gkn + rx[None, :] * stride_gkd,
            cast(dx, DK.dtype.element_ty, EMULATE), mask=row_ok[:, None] & (rx < XD)[None, :],
        )
        # the query chunk LAG after these keys reaches the older keys only through the state from now on
        q_rows = start + LAG + rn
        q_ok = q_rows < N
        xq, phq, qh, g, delta = _scaled_queries(
            q_base, stride_qn, stride_qd, do_base, stride_dn, stride_dd, row_base, DEN, DELTA, KAPPA, q_rows, q_ok,
            XD, F, DV, wq, wql, bq, sp, sn, SPLIT_W, BLOCK_X, BLOCK_DV, XDOT, DOT, PREC, EMULATE, TINY,
        )
        R += mm(tl.trans(qh), g, DOT, PREC, EMULATE)
        r += tl.sum(qh * delta[:, None], axis=0)
    tl.atomic_add(DW + hk * BLOCK_X * BLOCK_H + rx[:, None] * BLOCK_H + rh[None, :], dW)
    tl.atomic_add(DB + hk * BLOCK_H + rh, db)


# --- host side ---------------------------------------------------------------------------------------------------
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from hedgehog.kernels import chunked as C  # noqa: E402
from hedgehog.kernels import launch as L  # noqa: E402
from hedgehog.kernels.chunked_forward import segment_states_kernel  # noqa: E402

HYBRID_CHUNK = 16  # every hybrid kernel walks the same chunks: the state lag is counted in them


class _Launch:
    """What the hybrid's launches share: plan, constexprs, weights, mask, key shift, lag."""

    def __init__(self, p: C.Plan, q: Tensor, k: Tensor, v: Tensor, mask, wq, wk, shift: Tensor, window: int,
                 scale: float, dot):
        self.p, self.dev = p, q.device
        DOT, PREC = dot
        self.split = q.dtype != torch.float32 and L.split_weights()
        self.wq, self.wk, self.shift = wq, wk, shift
        self.has_mask = mask is not None
        self.mask = mask if self.has_mask else q
        self.mask_stride = mask.stride(0) if self.has_mask else 0
        self.window, self.scale = window, scale
        self.lag = triton.cdiv(window, HYBRID_CHUNK) * HYBRID_CHUNK
        self.nt = self.lag // HYBRID_CHUNK + 1
        self.common = dict(
            BLOCK_X=p.block_x, BLOCK_F=p.block_f, BLOCK_H=p.block_f // 2, BLOCK_DV=p.block_dv,
            XDOT=L.tl_dtype(q.dtype), DOT=DOT, PREC=PREC, EMULATE=L.interpreting(), SPLIT_W=self.split,
        )
        self.key = (p.XD, p.F, p.DV, p.G, p.has_state, self.has_mask, q.dtype, v.dtype)

    def launch(self, name, kernel, args, **flags):
        L.launch(name, kernel, (self.p.nseg, self.p.B * self.p.Hq), args, dict(flags, **self.common), self.key,
                 self.p.seg, HYBRID_CHUNK)


def _forward(p: C.Plan, c: _Launch, q, k, v, beta):
    """Lagged segment states, their prefix, then the output kernel. Returns (out, den, c, kappa, state)."""
    E = p.E
    state, stride_bh, stride_s = q, 0, 0
    if p.nseg > 1:
        delta = torch.empty(p.B * p.Hk, p.nseg, E, device=c.dev, dtype=torch.float32)
        L.launch(
            "segment_states", segment_states_kernel, (p.nseg, p.B * p.Hk),
            [k, *C._strides(k), v, *C._strides(v), c.mask, c.mask_stride, *c.wk, c.shift, delta,
             p.Hk, p.N, p.XD, p.F, p.DV, p.seg, p.nseg, c.lag],
            dict(FEATURE=1, BLOCK_X=p.block_x, BLOCK_F=p.block_f, BLOCK_H=p.block_f // 2, BLOCK_DV=p.block_dv,
                 XDOT=c.common["XDOT"], DOT=c.common["DOT"], PREC=c.common["PREC"], EMULATE=c.common["EMULATE"],
                 SPLIT_W=c.split, HAS_MASK=c.has_mask),
            c.key, p.seg, HYBRID_CHUNK,
        )
        _scan(p, delta, p.B * p.Hk, reverse=False)
        state, stride_bh, stride_s = delta, p.nseg * E, E
    out = C._like_heads_layout(q, (p.B, p.Hq, p.N, p.DV), v.dtype)
    den, cc, kappa = (torch.empty(p.B * p.Hq, p.N, device=c.dev, dtype=torch.float32) for _ in range(3))
    c.launch(
        "hybrid_output", hybrid_output_kernel,
        [q, *C._strides(q), k, *C._strides(k), v, *C._strides(v), c.mask, c.mask_stride, *c.wq, *c.wk, c.shift,
         beta, state, stride_bh, stride_s, out, *C._strides(out), den, cc, kappa,
         p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg, c.window, c.lag, c.nt, c.scale],
        HAS_STATE=p.nseg > 1, HAS_MASK=c.has_mask, TINY=L.TINY,
    )
    return out, den, cc, kappa, (state if p.nseg > 1 else None, stride_bh, stride_s)


def _scan(p: C.Plan, rows_state: Tensor, rows: int, reverse: bool) -> None:
    from hedgehog.kernels.scan import segment_scan_kernel

    block_s = min(C.SCAN_BLOCK_S, triton.next_power_of_2(p.nseg))
    segment_scan_kernel[(rows, triton.cdiv(p.E, C.SCAN_BLOCK_E))](
        rows_state, rows_state, p.nseg * p.E, p.nseg, p.E,
        REVERSE=reverse, TOTAL=False, BLOCK_S=block_s, BLOCK_E=C.SCAN_BLOCK_E, num_warps=4,
    )


def _backward(p: C.Plan, c: _Launch, q, k, v, beta, out, den, cc, kappa, state, do):
    """Returns (dq, dk, dv, dW_q, db_q, dW_k, db_k, d beta) with padded weight gradients."""
    E, dev, bh = p.E, c.dev, p.block_f // 2
    live = den >= L.TINY
    dot_y = (do.float() * out.float()).sum(-1).reshape(p.B * p.Hq, p.N)
    delta = torch.where(live, -dot_y / torch.where(live, den, torch.ones_like(den)), torch.zeros_like(den))
    zeros = lambda *shape: torch.zeros(*shape, device=dev, dtype=torch.float32)  # noqa: E731
    dwq, dbq, dwk, dbk, dbeta = zeros(p.Hq, p.block_x, bh), zeros(p.Hq, bh), zeros(p.Hk, p.block_x, bh), \
        zeros(p.Hk, bh), zeros(p.Hq)
    rstate, stride_rs_bh, stride_rs_s = q, 0, 0
    if p.nseg > 1:
        rdelta = torch.empty(p.B * p.Hq, p.nseg, E, device=dev, dtype=torch.float32)
        c.launch(
            "hybrid_rstate", hybrid_rstate_kernel,
            [q, *C._strides(q), *c.wq, c.shift, do, *C._strides(do), den, delta, kappa, rdelta,
             p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg, p.nseg, c.lag],
            TINY=L.TINY,
        )
        _scan(p, rdelta, p.B * p.Hq, reverse=True)
        rstate, stride_rs_bh, stride_rs_s = rdelta, p.nseg * E, E
    st, stride_st_bh, stride_st_s = state
    dq = torch.empty_like(q)
    c.launch(
        "hybrid_dq", hybrid_dq_kernel,
        [q, *C._strides(q), k, *C._strides(k), v, *C._strides(v), c.mask, c.mask_stride, *c.wq, *c.wk, c.shift,
         st if st is not None else q, stride_st_bh, stride_st_s, do, *C._strides(do), den, cc, kappa, delta,
         dq, *C._strides(dq), dwq, dbq, dbeta, p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg, c.window, c.lag, c.nt, c.scale],
        HAS_STATE=p.nseg > 1, HAS_MASK=c.has_mask, TINY=L.TINY,
    )
    if p.G > 1:
        dk = torch.empty(p.B, p.Hq, p.N, k.shape[-1], device=dev, dtype=torch.float32)
        dv = torch.empty(p.B, p.Hq, p.N, v.shape[-1], device=dev, dtype=torch.float32)
    else:
        dk, dv = torch.empty_like(k), torch.empty_like(v)
    c.launch(
        "hybrid_dkv", hybrid_dkv_kernel,
        [q, *C._strides(q), k, *C._strides(k), v, *C._strides(v), c.mask, c.mask_stride, *c.wq, *c.wk, c.shift,
         rstate, stride_rs_bh, stride_rs_s, do, *C._strides(do), den, cc, kappa, delta,
         dk, *C._strides(dk), dv, *C._strides(dv), dwk, dbk, p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg, c.window, c.lag,
         c.nt, c.scale],
        HAS_STATE=p.nseg > 1, HAS_MASK=c.has_mask, TINY=L.TINY,
    )
    if p.G > 1:
        dk = dk.view(p.B, p.Hk, p.G, p.N, -1).sum(dim=2).to(k.dtype)
        dv = dv.view(p.B, p.Hk, p.G, p.N, -1).sum(dim=2).to(v.dtype)
    return dq, dk, dv, dwq, dbq, dwk, dbk, dbeta


class HybridAttentionFunction(torch.autograd.Function):
    """The causal sliding-window + Hedgehog hybrid with the map fused; see ``hybrid_attention``."""

    @staticmethod
    def forward(ctx, q, k, v, weight_q, bias_q, weight_k, bias_k, log_balance, mask, window, scale, key_headroom,
                segment_size):
        q, k, v = C._prepare_inputs(q, k, v)
        p = C.make_plan(q, k, v, 2 * weight_q.shape[-1], True, True, HYBRID_CHUNK, segment_size)
        dot = L.dot_dtypes(q, k, v)
        wq = C.split_weights(weight_q, bias_q, p.block_x, p.block_f // 2, q.dtype)
        wk = C.split_weights(weight_k, bias_k, p.block_x, p.block_f // 2, k.dtype)
        mask = C._prepare_mask(mask)
        shift = C.key_shift(k, weight_k, bias_k, mask, p.block_f // 2, key_headroom)
        beta = log_balance.detach().float().contiguous()
        c = _Launch(p, q, k, v, mask, wq, wk, shift, window, scale, dot)
        out, den, cc, kappa, state = _forward(p, c, q, k, v, beta)
        ctx.save_for_backward(q, k, v, weight_q, bias_q, weight_k, bias_k, log_balance, mask, out, den, cc, kappa,
                              state[0], shift)
        ctx.plan, ctx.dot, ctx.state_strides, ctx.window, ctx.scale = p, dot, state[1:], window, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, weight_q, bias_q, weight_k, bias_k, log_balance, mask, out, den, cc, kappa, st, shift = ctx.saved_tensors
        p = ctx.plan
        wq = C.split_weights(weight_q, bias_q, p.block_x, p.block_f // 2, q.dtype)
        wk = C.split_weights(weight_k, bias_k, p.block_x, p.block_f // 2, k.dtype)
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        c = _Launch(p, q, k, v, mask, wq, wk, shift, ctx.window, ctx.scale, ctx.dot)
        beta = log_balance.detach().float().contiguous()
        dq, dk, dv, dwq, dbq, dwk, dbk, dbeta = _backward(
            p, c, q, k, v, beta, out, den, cc, kappa, (st, *ctx.state_strides), dout
        )
        gwq, gbq = C._unpad(dwq, dbq, weight_q, bias_q)
        gwk, gbk = C._unpad(dwk, dbk, weight_k, bias_k)
        return dq, dk, dv, gwq, gbq, gwk, gbk, dbeta.to(log_balance.dtype), None, None, None, None, None


def hybrid_attention(
    q: Tensor, k: Tensor, v: Tensor, weight_q: Tensor, bias_q: Tensor | None, weight_k: Tensor,
    bias_k: Tensor | None, log_balance: Tensor, *, window: int, scale: float, key_padding_mask: Tensor | None = None,
    key_headroom: float = 0.0, segment_size: int | None = None,
) -> Tensor:
    """The causal sliding-window + Hedgehog hybrid, the map computed inside the kernels.

    q ``[B, Hq, N, D]``, k ``[B, Hk, N, D]``, v ``[B, Hk, N, Dv]`` (``Hq % Hk == 0``); Hedgehog ``weight_q [Hq, D,
    d']``, ``bias_q``, ``weight_k [Hk, D, d']``, ``bias_k``; ``log_balance [Hq]`` (beta); the softmax ``window`` (keys
    ``0 <= i - j < window``) and logit ``scale``; ``key_padding_mask [B, N]`` bool; ``key_headroom`` as in
    ``chunked.hedgehog_attention``. Returns ``[B, Hq, N, Dv]`` in v's dtype; differentiable in q, k, v, the map's
    parameters and ``log_balance``.
    """
    return HybridAttentionFunction.apply(
        q, k, v, weight_q, bias_q, weight_k, bias_k, log_balance, key_padding_mask, int(window), float(scale),
        float(key_headroom), segment_size,
    )


def supported(head_dim: int, hidden_dim: int, value_dim: int) -> bool:
    return C.supported(head_dim, 2 * hidden_dim, value_dim, fused=True)
