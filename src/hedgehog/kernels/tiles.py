"""Tile-level building blocks shared by the chunked linear-attention kernels.

``mm`` is a matrix product of two register tiles with operands rounded to a chosen dtype and float32
accumulation (tensor cores on the GPU). ``exp_features`` is the Hedgehog feature map on a tile of tokens
(eq. 4 of Zhang et al., 2024): ``u = x W_h + b_h``, features ``exp(u - m)`` and ``exp(-u - m)``;
``exp_feature_grad`` takes a feature gradient back to ``du``. ``head_base`` / ``load_maps`` / ``load_state`` /
``store_state`` / ``load_rows`` / ``feature_tile`` are the pointer arithmetic and loads every kernel repeats.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _round(x, DOT: tl.constexpr):
    """``x`` rounded to ``DOT`` (to nearest even, as the GPU converts), returned as float32."""
    if DOT == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    else:
        return x.to(DOT).to(tl.float32)


@triton.jit
def cast(x, DTYPE: tl.constexpr, EMULATE: tl.constexpr):
    """``x.to(DTYPE)``, rounding to nearest even also in the CPU interpreter (which truncates to bfloat16)."""
    if EMULATE:
        return _round(x, DTYPE).to(DTYPE)
    else:
        return x.to(DTYPE)


@triton.jit
def mm(a, b, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr):
    """``a @ b`` with both operands rounded to ``DOT`` and float32 accumulation.

    ``EMULATE`` (CPU interpreter only): round to ``DOT`` then multiply in float32, because the interpreter
    cannot multiply bfloat16 tiles (and truncates when converting to bfloat16); the rounding of the operands
    is then the same as on the tensor cores.
    """
    if EMULATE:
        return tl.dot(_round(a, DOT), _round(b, DOT))
    else:
        return tl.dot(a.to(DOT), b.to(DOT), input_precision=PREC)


@triton.jit
def safe_denominator(den, TINY: tl.constexpr):
    """``den`` where positive else 1, clamped to the smallest normal float32 (``safe_denominator`` of the
    PyTorch reference): a query that attends to nothing gets output 0, never NaN."""
    return tl.maximum(tl.where(den > 0, den, 1.0), TINY).to(tl.float32)


@triton.jit
def load_map(W, WL, BIAS, h, BLOCK_X: tl.constexpr, BLOCK_H: tl.constexpr, SPLIT_W: tl.constexpr, XDOT: tl.constexpr):
    """Head ``h``'s projection ``[BLOCK_X, BLOCK_H]`` (and its rounding residue when ``SPLIT_W``) and bias."""
    rx = tl.arange(0, BLOCK_X)
    rh = tl.arange(0, BLOCK_H)
    off = h * BLOCK_X * BLOCK_H + rx[:, None] * BLOCK_H + rh[None, :]
    w = tl.load(W + off)
    if SPLIT_W:
        wl = tl.load(WL + off)
    else:
        wl = tl.zeros([BLOCK_X, BLOCK_H], dtype=XDOT)
    return w, wl, tl.load(BIAS + h * BLOCK_H + rh)


@triton.jit
def load_shift(SHIFT, b, hk, Hk, BLOCK_H: tl.constexpr):
    """The key shift of batch ``b``, key/value head ``hk``: two ``[BLOCK_H]`` float32 vectors (exp and exp(-)
    halves) from a ``[B, Hk, 2, BLOCK_H]`` float32 tensor (zeros when no shift is used)."""
    rh = tl.arange(0, BLOCK_H)
    base = SHIFT + (b * Hk + hk).to(tl.int64) * 2 * BLOCK_H
    return tl.load(base + rh), tl.load(base + BLOCK_H + rh)


@triton.jit
def query_head(pid_bh, Hq, G):
    """``(b, h, hk)``: batch, query head and its key/value head of a program over ``B * Hq`` rows."""
    b = pid_bh // Hq
    h = pid_bh % Hq
    return b, h, h // G


@triton.jit
def qkv_bases(Q, K, V, b, h, hk, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh):
    """The ``[N, .]`` slabs of query head ``h`` and of its key/value head ``hk`` in batch ``b``."""
    return head_base(Q, b, h, stride_qb, stride_qh), head_base(K, b, hk, stride_kb, stride_kh), \
        head_base(V, b, hk, stride_vb, stride_vh)


@triton.jit
def head_base(X, b, h, stride_b, stride_h):
    """Pointer to the ``[N, .]`` slab of batch ``b``, head ``h`` (64-bit offsets)."""
    return X + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h


@triton.jit
def load_maps(
    WQ, WQL, BQ, WK, WKL, BK, SHIFT, b, h, hk, Hk,
    FEATURE: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_H: tl.constexpr, SPLIT_W: tl.constexpr, XDOT: tl.constexpr,
):
    """Query head ``h``'s and key/value head ``hk``'s maps and the key shift of ``(b, hk)`` when the map is fused
    (``FEATURE == 1``); the untouched pointers otherwise (ready-made features ignore them)."""
    if FEATURE == 1:
        wq, wql, bq = load_map(WQ, WQL, BQ, h, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
        wk, wkl, bk = load_map(WK, WKL, BK, hk, BLOCK_X, BLOCK_H, SPLIT_W, XDOT)
        sp, sn = load_shift(SHIFT, b, hk, Hk, BLOCK_H)
    else:
        wq, wql, bq = WQ, WQL, BQ
        wk, wkl, bk = WK, WKL, BK
        sp, sn = WK, WK
    return wq, wql, bq, wk, wkl, bk, sp, sn


@triton.jit
def load_state(STATE, row, pid_s, stride_bh, stride_s, HAS_STATE: tl.constexpr, BLOCK_F: tl.constexpr,
               BLOCK_DV: tl.constexpr):
    """The flat ``(S [BLOCK_F, BLOCK_DV], z [BLOCK_F])`` float32 state of row ``row``, segment ``pid_s`` (zeros
    without a state)."""
    rf = tl.arange(0, BLOCK_F)
    rv = tl.arange(0, BLOCK_DV)
    if HAS_STATE:
        st = STATE + row.to(tl.int64) * stride_bh + pid_s * stride_s
        S = tl.load(st + rf[:, None] * BLOCK_DV + rv[None, :])
        z = tl.load(st + BLOCK_F * BLOCK_DV + rf)
    else:
        S = tl.zeros([BLOCK_F, BLOCK_DV], dtype=tl.float32)
        z = tl.zeros([BLOCK_F], dtype=tl.float32)
    return S, z


@triton.jit
def store_state(OUT, row, seg, nseg, S, z, BLOCK_F: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Write a flat state to ``OUT[row, seg]`` of a ``[rows, nseg, E]`` float32 buffer."""
    rf = tl.arange(0, BLOCK_F)
    rv = tl.arange(0, BLOCK_DV)
    out = OUT + (row.to(tl.int64) * nseg + seg) * (BLOCK_F * BLOCK_DV + BLOCK_F)
    tl.store(out + rf[:, None] * BLOCK_DV + rv[None, :], S)
    tl.store(out + BLOCK_F * BLOCK_DV + rf, z)


@triton.jit
def load_rows(base, stride_n, stride_c, rows, row_ok, cols, col_ok):
    """A ``[rows, cols]`` tile of a ``[N, C]`` slab (0 outside)."""
    return tl.load(
        base + rows[:, None].to(tl.int64) * stride_n + cols[None, :] * stride_c,
        mask=row_ok[:, None] & col_ok[None, :], other=0.0,
    )


@triton.jit
def exp_logs(
    x, w_hi, w_lo, bias, sp, sn, HID,
    SHIFT: tl.constexpr, SPLIT_W: tl.constexpr, XDOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
):
    """The two halves of the stabilised log-features of a tile and the per-row shift ``m`` (0 for keys):
    queries (``SHIFT``) ``u + sp - m``, ``-u + sn - m`` with ``m`` their row max over the ``HID`` valid columns;
    keys ``u - sp``, ``-u - sn``. ``[BLOCK_N, BLOCK_H]`` float32 each, and ``m [BLOCK_N]``."""
    u = mm(x, w_hi, XDOT, PREC, EMULATE)
    if SPLIT_W:
        u += mm(x, w_lo, XDOT, PREC, EMULATE)
    u += bias[None, :]
    h_ok = tl.arange(0, u.shape[1]) < HID
    if SHIFT:
        u_pos = u + sp[None, :]
        u_neg = -u + sn[None, :]
        m = tl.maximum(tl.max(tl.where(h_ok[None, :], u_pos, -float("inf")), axis=1),
                       tl.max(tl.where(h_ok[None, :], u_neg, -float("inf")), axis=1))
        u_pos = u_pos - m[:, None]
        u_neg = u_neg - m[:, None]
    else:
        u_pos = u - sp[None, :]
        u_neg = -u - sn[None, :]
        m = tl.zeros([u.shape[0]], dtype=tl.float32)
    return u_pos, u_neg, m


@triton.jit
def exp_features(
    x, w_hi, w_lo, bias, sp, sn, HID,
    SHIFT: tl.constexpr, SPLIT_W: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
    EMULATE: tl.constexpr,
):
    """Hedgehog features of a tile ``x [BLOCK_N, BLOCK_X]``: ``[BLOCK_N, 2 * BLOCK_H]`` in ``DOT``.

    ``u = x (w_hi + w_lo) + bias`` ``[BLOCK_N, BLOCK_H]`` (``w_lo`` is the rounding residue of the float32
    weight in ``XDOT``, so the projection keeps float32 accuracy on 16-bit tensor cores); the features
    ``exp(u - .)`` and ``exp(-u - .)`` are interleaved (feature ``2f`` and ``2f + 1`` come from ``u_f``), an
    order the kernels use consistently. The shifts (``exp_logs``): keys lose the per-feature key shift
    ``sp`` / ``sn``, queries gain it and lose their row max (``SHIFT``), so every product is unchanged up to a
    per-query factor the normaliser cancels, and every exponent is <= 0. Invalid columns give 0.
    """
    phi, m = exp_features_and_shift(x, w_hi, w_lo, bias, sp, sn, HID, SHIFT, SPLIT_W, XDOT, DOT, PREC, EMULATE)
    return phi


@triton.jit
def exp_features_and_shift(
    x, w_hi, w_lo, bias, sp, sn, HID,
    SHIFT: tl.constexpr, SPLIT_W: tl.constexpr, XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
    EMULATE: tl.constexpr,
):
    """``exp_features`` and the per-row shift ``m`` it took out (queries: their largest log-feature; keys: 0),
    which the sliding-window hybrid needs to put the linear kernel back at its true scale."""
    u_pos, u_neg, m = exp_logs(x, w_hi, w_lo, bias, sp, sn, HID, SHIFT, SPLIT_W, XDOT, PREC, EMULATE)
    h_ok = tl.arange(0, u_pos.shape[1]) < HID
    pos = cast(tl.where(h_ok[None, :], tl.exp(u_pos), 0.0), DOT, EMULATE)
    neg = cast(tl.where(h_ok[None, :], tl.exp(u_neg), 0.0), DOT, EMULATE)
    both = tl.join(pos, neg)  # [BLOCK_N, BLOCK_H, 2]
    return tl.reshape(both, (both.shape[0], 2 * both.shape[1])), m


@triton.jit
def exp_feature_grad(dphi, phi):
    """``du [BLOCK_N, BLOCK_H]`` from ``dphi``, ``phi`` ``[BLOCK_N, 2 * BLOCK_H]`` (interleaved as in
    ``exp_features``): ``du = dphi_pos * phi_pos - dphi_neg * phi_neg`` (the shift ``m`` is a constant)."""
    dt = dphi * phi.to(tl.float32)
    dt = tl.reshape(dt, (dt.shape[0], dt.shape[1] // 2, 2))
    pos, neg = tl.split(dt)
    return pos - neg


@triton.jit
def feature_tile(
    X, stride_n, stride_d, rows, row_ok, XD, F, w, wl, bias, sp, sn,
    FEATURE: tl.constexpr, SHIFT: tl.constexpr, SPLIT_W: tl.constexpr, BLOCK_X: tl.constexpr,
    XDOT: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMULATE: tl.constexpr,
):
    """The raw tile ``x [BLOCK_N, BLOCK_X]`` of rows ``rows`` and its features ``[BLOCK_N, BLOCK_F]`` in ``DOT``:
    computed by the Hedgehog map (``FEATURE == 1``, ``F = 2 * hidden``; key shift ``sp``/``sn``) or ready-made
    (``FEATURE == 0``)."""
    rx = tl.arange(0, BLOCK_X)
    x = load_rows(X, stride_n, stride_d, rows, row_ok, rx, rx < XD)
    if FEATURE == 1:
        phi = exp_features(x, w, wl, bias, sp, sn, F // 2, SHIFT, SPLIT_W, XDOT, DOT, PREC, EMULATE)
    else:
        phi = cast(x, DOT, EMULATE)
    return x, phi
