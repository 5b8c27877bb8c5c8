"""Chunked linear attention on the GPU: host side (shapes, buffers, launches) and the autograd Function.

Two entry points, both ``[B, Hq, N, .]`` in and ``[B, Hq, N, Dv]`` out (in v's dtype), any N, grouped-query
heads (``Hq % Hk == 0``), key padding, causal or bidirectional, forward and backward:

* ``hedgehog_attention(q, k, v, weight_q, bias_q, weight_k, bias_k, ...)`` -- the Hedgehog map (eq. 4 of
  Zhang et al., 2024) fused: ``phi(x) = [exp(x W_h + b_h), exp(-x W_h - b_h)]`` computed in the kernels from
  q, k ``[., D]`` and the per-head ``weight [H, D, feature_dim]``, ``bias [H, feature_dim]``; the backward
  also returns the weight and bias gradients.
* ``linear_attention(qf, kf, v, ...)`` -- ready-made features ``[., F]`` of any feature map.

Memory: inputs, output, the normaliser ``[B, Hq, N]`` and one state ``[F, Dv]`` per segment of ~1K tokens
(no feature tensor, no ``N x N`` tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
from torch import Tensor

from hedgehog.kernels import launch as L
from hedgehog.kernels.chunked_backward import chunk_dkv_kernel, chunk_dq_kernel, chunk_rstate_kernel
from hedgehog.kernels.chunked_forward import chunk_output_kernel, segment_states_kernel
from hedgehog.kernels.scan import segment_scan_kernel

MAX_BLOCK_X = 128  # head dim (fused) or feature dim (ready-made) per tile
MAX_BLOCK_F = 128
MAX_BLOCK_DV = 128
MAX_STATE = 128 * 64  # BLOCK_F * BLOCK_DV: the fp32 state lives in registers (and tiles in shared memory)
SCAN_BLOCK_S, SCAN_BLOCK_E = 16, 256  # segments x state entries per scan tile (16 KB of fp32 registers)


@dataclass(frozen=True)
class Plan:
    """Sizes of one call. ``fused``: Hedgehog map in the kernel (x = q, k of width D) or features (width F).
    ``chunk``: a fixed BLOCK_N for every kernel (tests), or None for the tuned/default one."""

    B: int
    Hq: int
    Hk: int
    N: int
    XD: int
    F: int
    DV: int
    fused: bool
    causal: bool
    chunk: int | None
    seg: int
    block_x: int
    block_f: int
    block_dv: int

    @property
    def G(self) -> int:
        return self.Hq // self.Hk

    @property
    def nseg(self) -> int:
        return triton.cdiv(self.N, self.seg)

    @property
    def E(self) -> int:
        return self.block_f * self.block_dv + self.block_f

    @property
    def has_state(self) -> bool:
        return (not self.causal) or self.nseg > 1


def supported(x_dim: int, feature_dim: int, value_dim: int, fused: bool = False) -> bool:
    """Whether the tiles fit: widths up to 128 (x, features, values) and a state of at most 128 x 64."""
    bf = 2 * L.block(feature_dim // 2) if fused else L.block(feature_dim)
    bx, bv = L.block(x_dim), L.block(value_dim)
    return bx <= MAX_BLOCK_X and bf <= MAX_BLOCK_F and bv <= MAX_BLOCK_DV and bf * bv <= MAX_STATE


def make_plan(q: Tensor, k: Tensor, v: Tensor, feature_dim: int, fused: bool, causal: bool,
              chunk_size: int | None, segment_size: int | None) -> Plan:
    B, Hq, N, XD = q.shape
    Hk, DV = k.shape[1], v.shape[-1]
    seg = L.segment_length(B * Hq, N, chunk_size or L.SEGMENT_UNIT, q.device, segment_size)
    block_f = 2 * L.block(feature_dim // 2) if fused else L.block(feature_dim)
    block_x = L.block(XD) if fused else block_f  # ready-made features: the loaded tile is the feature tile
    return Plan(B, Hq, Hk, N, XD, feature_dim, DV, fused, causal, chunk_size, seg, block_x, block_f, L.block(DV))


def _strides(t: Tensor) -> list[int]:
    return list(t.stride())


def _like_heads_layout(q: Tensor, shape: tuple, dtype: torch.dtype) -> Tensor:
    """An empty ``[B, H, N, X]`` tensor stored like ``q`` (``[B, N, H, X]`` memory when q's heads are inner)."""
    b, h, n, x = shape
    if q.stride(1) < q.stride(2):
        return torch.empty((b, n, h, x), device=q.device, dtype=dtype).transpose(1, 2)
    return torch.empty(shape, device=q.device, dtype=dtype)


def split_weights(weight: Tensor, bias: Tensor | None, block_x: int, block_h: int, xdtype: torch.dtype):
    """``W_h`` ``[H, block_x, block_h]`` as a ``xdtype`` part plus its rounding residue (the kernels add both
    products, keeping the projection float32-accurate on 16-bit tensor cores) and ``b_h`` ``[H, block_h]``
    float32, zero padded."""
    H, D, hid = weight.shape
    w = torch.zeros(H, block_x, block_h, device=weight.device, dtype=torch.float32)
    w[:, :D, :hid] = weight.detach().float()
    b = torch.zeros(H, block_h, device=weight.device, dtype=torch.float32)
    if bias is not None:
        b[:, :hid] = bias.detach().float()
    w_hi = w.to(xdtype)
    w_lo = (w - w_hi.float()).to(xdtype)
    return w_hi.contiguous(), w_lo.contiguous(), b


def key_shift(k: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, block_h: int,
              headroom: float) -> Tensor:
    """The per-feature key shift ``[B, Hk, 2, block_h]`` (float32) of the stabilised Hedgehog features: for each
    feature, the largest ``u = k W_h + b_h`` (first half) and ``-u`` (second half) over the real keys, less
    ``headroom``, zero padded; keys are shifted down by it and queries up, which leaves every product unchanged
    (``hedgehog.attention.feature_maps.hedgehog``, the same stabilisation as the PyTorch path). Any value would be
    exact; this one keeps every exponent <= ``headroom``, so no feature overflows whatever the activation scale."""
    with torch.no_grad():
        u = torch.matmul(k, weight.to(k.dtype)).float()  # [B, Hk, N, hidden]
        if bias is not None:
            u = u + bias.float()[None, :, None, :]
        both = torch.stack([u, -u], dim=2)  # [B, Hk, 2, N, hidden]
        if mask is not None:
            both = both.masked_fill(~mask.bool()[:, None, None, :, None], -torch.inf)
        shift = both.amax(dim=3) if both.shape[3] else both.new_zeros(both.shape[:3] + both.shape[4:])
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        out = torch.zeros(*shift.shape[:3], block_h, device=k.device, dtype=torch.float32)
        out[..., : shift.shape[-1]] = shift - headroom
        return out


class _Call:
    """What every launch of one forward or backward shares: plan, dtypes, weights, mask, key shift."""

    def __init__(self, p: Plan, q: Tensor, k: Tensor, v: Tensor, mask, wq, wk, shift_q: bool, dot, shift=None):
        self.p, self.dev = p, q.device
        DOT, PREC = dot
        self.split = p.fused and q.dtype != torch.float32 and L.split_weights()
        self.wq = wq if wq is not None else (q, q, q)
        self.wk = wk if wk is not None else (q, q, q)
        self.has_mask = mask is not None
        self.mask = mask if self.has_mask else q
        self.mask_stride = mask.stride(0) if self.has_mask else 0
        self.shift = shift if shift is not None else q
        self.shift_q = shift_q
        self.common = dict(
            FEATURE=1 if p.fused else 0, BLOCK_X=p.block_x, BLOCK_F=p.block_f, BLOCK_H=p.block_f // 2,
            BLOCK_DV=p.block_dv, XDOT=L.tl_dtype(q.dtype) if p.fused else DOT, DOT=DOT, PREC=PREC,
            EMULATE=L.interpreting(),
        )
        self.key = (p.XD, p.F, p.DV, p.G, p.fused, p.causal, p.has_state, self.has_mask, shift_q,
                    q.dtype, k.dtype, v.dtype)

    def launch(self, name, kernel, grid, args, reset=None, **flags):
        L.launch(name, kernel, grid, args, dict(flags, **self.common), self.key, self.p.seg, self.p.chunk, reset)

    def scan(self, src, dst, rows, stride_dst_bh, reverse, total):
        """Prefix (or suffix, or total) sums over segments of ``rows`` flat state rows ``[rows, nseg, E]``."""
        p = self.p
        block_s = min(SCAN_BLOCK_S, triton.next_power_of_2(p.nseg))
        segment_scan_kernel[(rows, triton.cdiv(p.E, SCAN_BLOCK_E))](
            src, dst, stride_dst_bh, p.nseg, p.E,
            REVERSE=reverse, TOTAL=total, BLOCK_S=block_s, BLOCK_E=SCAN_BLOCK_E, num_warps=4,
        )


def forward(p: Plan, q, k, v, mask, wq, wk, shift_q: bool, dot, shift=None):
    """Run the forward kernels. ``wq``/``wk``: ``(w_hi, w_lo, b)`` or None; ``shift``: the key shift
    ``[B, Hk, 2, block_f / 2]`` (fused map) or None. Returns (out, den, state)."""
    c = _Call(p, q, k, v, mask, wq, wk, shift_q, dot, shift)
    E = p.E
    state, stride_st_bh, stride_st_s = q, 0, 0
    if p.has_state:
        delta = torch.empty(p.B * p.Hk, p.nseg, E, device=c.dev, dtype=torch.float32)
        c.launch(
            "segment_states", segment_states_kernel, (p.nseg, p.B * p.Hk),
            [k, *_strides(k), v, *_strides(v), c.mask, c.mask_stride, *c.wk, c.shift, delta,
             p.Hk, p.N, p.XD, p.F, p.DV, p.seg, p.nseg, 0],
            SPLIT_W=c.split, HAS_MASK=c.has_mask,
        )
        if p.causal:  # exclusive prefix over segments, in place
            state, stride_st_bh, stride_st_s = delta, p.nseg * E, E
            c.scan(delta, delta, p.B * p.Hk, p.nseg * E, reverse=False, total=False)
        else:
            state, stride_st_bh, stride_st_s = torch.empty(p.B * p.Hk, 1, E, device=c.dev, dtype=torch.float32), E, 0
            c.scan(delta, state, p.B * p.Hk, E, reverse=False, total=True)
            del delta

    out = _like_heads_layout(q, (p.B, p.Hq, p.N, p.DV), v.dtype)
    den = torch.empty(p.B * p.Hq, p.N, device=c.dev, dtype=torch.float32)
    c.launch(
        "chunk_output", chunk_output_kernel, (p.nseg, p.B * p.Hq),
        [q, *_strides(q), k, *_strides(k), v, *_strides(v), c.mask, c.mask_stride, *c.wq, *c.wk, c.shift,
         state, stride_st_bh, stride_st_s, out, *_strides(out), den, p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg],
        CAUSAL=p.causal, SHIFT_Q=shift_q, SPLIT_W=c.split, HAS_STATE=p.has_state, HAS_MASK=c.has_mask, TINY=L.TINY,
    )
    return out, den, (state if p.has_state else None, stride_st_bh, stride_st_s)


def backward(p: Plan, q, k, v, mask, wq, wk, shift_q: bool, dot, out, den, state, do, shift=None):
    """Run the backward kernels. Returns (dq, dk, dv, dW_q, db_q, dW_k, db_k) with the padded weight
    gradients ``[H, block_x, block_f / 2]`` / ``[H, block_f / 2]`` (None for ready-made features)."""
    c = _Call(p, q, k, v, mask, wq, wk, shift_q, dot, shift)
    E, dev, bh = p.E, c.dev, p.block_f // 2
    st, stride_st_bh, stride_st_s = state
    zeros = lambda *shape: torch.zeros(*shape, device=dev, dtype=torch.float32)  # noqa: E731
    dwq, dbq = (zeros(p.Hq, p.block_x, bh), zeros(p.Hq, bh)) if p.fused else (q, q)
    dwk, dbk = (zeros(p.Hk, p.block_x, bh), zeros(p.Hk, bh)) if p.fused else (q, q)
    delta = torch.empty(p.B * p.Hq, p.N, device=dev, dtype=torch.float32)

    rstate, stride_rs_bh, stride_rs_s = q, 0, 0
    if p.has_state:
        rdelta = torch.empty(p.B * p.Hq, p.nseg, E, device=dev, dtype=torch.float32)
        c.launch(
            "chunk_rstate", chunk_rstate_kernel, (p.nseg, p.B * p.Hq),
            [q, *_strides(q), *c.wq, c.shift, out, *_strides(out), do, *_strides(do), den, delta, rdelta,
             p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg, p.nseg],
            SHIFT_Q=shift_q, SPLIT_W=c.split, TINY=L.TINY,
        )
        if p.causal:  # exclusive suffix over segments, per query head, in place
            rstate, stride_rs_bh, stride_rs_s = rdelta, p.nseg * E, E
            c.scan(rdelta, rdelta, p.B * p.Hq, stride_rs_bh, reverse=True, total=False)
        else:
            rstate, stride_rs_bh, stride_rs_s = torch.empty(p.B * p.Hq, 1, E, device=dev, dtype=torch.float32), E, 0
            c.scan(rdelta, rstate, p.B * p.Hq, E, reverse=False, total=True)
            del rdelta

    dq = torch.empty_like(q)
    c.launch(
        "chunk_dq", chunk_dq_kernel, (p.nseg, p.B * p.Hq),
        [q, *_strides(q), k, *_strides(k), v, *_strides(v), c.mask, c.mask_stride, *c.wq, *c.wk, c.shift,
         st if st is not None else q, stride_st_bh, stride_st_s, out, *_strides(out), do, *_strides(do),
         den, delta, dq, *_strides(dq), dwq, dbq, p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg],
        reset=(lambda: (dwq.zero_(), dbq.zero_())) if p.fused else None,
        CAUSAL=p.causal, SHIFT_Q=shift_q, SPLIT_W=c.split, HAS_STATE=p.has_state, HAS_MASK=c.has_mask,
        COMPUTE_DELTA=not p.has_state, TINY=L.TINY,
    )
    if p.G > 1:  # one float32 part per query head, summed over each group below
        dk = torch.empty(p.B, p.Hq, p.N, k.shape[-1], device=dev, dtype=torch.float32)
        dv = torch.empty(p.B, p.Hq, p.N, v.shape[-1], device=dev, dtype=torch.float32)
    else:
        dk, dv = torch.empty_like(k), torch.empty_like(v)
    c.launch(
        "chunk_dkv", chunk_dkv_kernel, (p.nseg, p.B * p.Hq),
        [q, *_strides(q), k, *_strides(k), v, *_strides(v), c.mask, c.mask_stride, *c.wq, *c.wk, c.shift,
         rstate, stride_rs_bh, stride_rs_s, do, *_strides(do), den, delta, dk, *_strides(dk), dv, *_strides(dv),
         dwk, dbk, p.Hq, p.G, p.N, p.XD, p.F, p.DV, p.seg],
        reset=(lambda: (dwk.zero_(), dbk.zero_())) if p.fused else None,
        CAUSAL=p.causal, SHIFT_Q=shift_q, SPLIT_W=c.split, HAS_STATE=p.has_state, HAS_MASK=c.has_mask, TINY=L.TINY,
    )
    if p.G > 1:
        dk = dk.view(p.B, p.Hk, p.G, p.N, -1).sum(dim=2).to(k.dtype)
        dv = dv.view(p.B, p.Hk, p.G, p.N, -1).sum(dim=2).to(v.dtype)
    if not p.fused:
        return dq, dk, dv, None, None, None, None
    return dq, dk, dv, dwq, dbq, dwk, dbk


def _unpad(dw: Tensor, db: Tensor, weight: Tensor, bias: Tensor | None):
    """Gradients of ``W_h [H, D, d']``, ``b_h [H, d']`` from the padded kernel buffers."""
    _, D, hid = weight.shape
    gw = dw[:, :D, :hid].to(weight.dtype)
    gb = None if bias is None else db[:, :hid].to(bias.dtype)
    return gw, gb


def _prepare_inputs(*tensors: Tensor) -> list[Tensor]:
    """Last dimension contiguous (any other strides are fine)."""
    return [t if t.stride(-1) == 1 else t.contiguous() for t in tensors]


def _prepare_mask(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask.to(torch.int8).contiguous()


class HedgehogAttentionFunction(torch.autograd.Function):
    """Linear attention with the Hedgehog feature map fused; see ``hedgehog_attention``."""

    @staticmethod
    def forward(ctx, q, k, v, weight_q, bias_q, weight_k, bias_k, mask, causal, stable, key_headroom, chunk_size,
                segment_size):
        q, k, v = _prepare_inputs(q, k, v)
        p = make_plan(q, k, v, 2 * weight_q.shape[-1], True, causal, chunk_size, segment_size)
        dot = L.dot_dtypes(q, k, v)
        wq = split_weights(weight_q, bias_q, p.block_x, p.block_f // 2, q.dtype)
        wk = split_weights(weight_k, bias_k, p.block_x, p.block_f // 2, k.dtype)
        mask = _prepare_mask(mask)
        if stable:
            shift = key_shift(k, weight_k, bias_k, mask, p.block_f // 2, key_headroom)
        else:  # the plain features exp(+-u): a zero shift
            shift = torch.zeros(p.B, p.Hk, 2, p.block_f // 2, device=q.device, dtype=torch.float32)
        out, den, state = forward(p, q, k, v, mask, wq, wk, stable, dot, shift)
        ctx.save_for_backward(q, k, v, weight_q, bias_q, weight_k, bias_k, mask, out, den, state[0], shift)
        ctx.plan, ctx.dot, ctx.stable, ctx.state_strides = p, dot, stable, state[1:]
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, weight_q, bias_q, weight_k, bias_k, mask, out, den, st, shift = ctx.saved_tensors
        p = ctx.plan
        wq = split_weights(weight_q, bias_q, p.block_x, p.block_f // 2, q.dtype)
        wk = split_weights(weight_k, bias_k, p.block_x, p.block_f // 2, k.dtype)
        if dout.stride(-1) not in (0, 1):  # stride 0 (e.g. from out.sum()) is read as is, no copy
            dout = dout.contiguous()
        dq, dk, dv, dwq, dbq, dwk, dbk = backward(
            p, q, k, v, mask, wq, wk, ctx.stable, ctx.dot, out, den, (st, *ctx.state_strides), dout, shift
        )
        gwq, gbq = _unpad(dwq, dbq, weight_q, bias_q)
        gwk, gbk = _unpad(dwk, dbk, weight_k, bias_k)
        return dq, dk, dv, gwq, gbq, gwk, gbk, None, None, None, None, None, None


class LinearAttentionFunction(torch.autograd.Function):
    """Linear attention on ready-made features; see ``linear_attention``."""

    @staticmethod
    def forward(ctx, qf, kf, v, mask, causal, chunk_size, segment_size):
        qf, kf, v = _prepare_inputs(qf, kf, v)
        p = make_plan(qf, kf, v, qf.shape[-1], False, causal, chunk_size, segment_size)
        dot = L.dot_dtypes(qf, kf, v)
        mask = _prepare_mask(mask)
        out, den, state = forward(p, qf, kf, v, mask, None, None, False, dot)
        ctx.save_for_backward(qf, kf, v, mask, out, den, state[0])
        ctx.plan, ctx.dot, ctx.state_strides = p, dot, state[1:]
        return out

    @staticmethod
    def backward(ctx, dout):
        qf, kf, v, mask, out, den, st = ctx.saved_tensors
        if dout.stride(-1) not in (0, 1):  # stride 0 (e.g. from out.sum()) is read as is, no copy
            dout = dout.contiguous()
        dq, dk, dv, *_ = backward(ctx.plan, qf, kf, v, mask, None, None, False, ctx.dot, out, den,
                                  (st, *ctx.state_strides), dout)
        return dq, dk, dv, None, None, None, None


def hedgehog_attention(
    q: Tensor, k: Tensor, v: Tensor, weight_q: Tensor, bias_q: Tensor | None, weight_k: Tensor,
    bias_k: Tensor | None, *, causal: bool, key_padding_mask: Tensor | None = None, stable: bool = True,
    key_headroom: float = 0.0, chunk_size: int | None = None, segment_size: int | None = None,
) -> Tensor:
    """Hedgehog linear attention with the feature map computed inside the kernels.

    q ``[B, Hq, N, D]``, k ``[B, Hk, N, D]``, v ``[B, Hk, N, Dv]`` (``Hq % Hk == 0``); ``weight_q [Hq, D, d']``,
    ``bias_q [Hq, d']`` (or None), ``weight_k [Hk, D, d']``, ``bias_k [Hk, d']``; ``key_padding_mask [B, N]``
    bool, True on real tokens. ``stable``: shift each key feature down by its largest value over the sequence less
    ``key_headroom`` and each query up by the same (``key_shift``), then each query by its own largest log-feature
    (cancelled by the normaliser): finite at any activation scale. Returns ``[B, Hq, N, Dv]`` in v's dtype; differentiable in
    q, k, v and the four parameters.
    """
    return HedgehogAttentionFunction.apply(
        q, k, v, weight_q, bias_q, weight_k, bias_k, key_padding_mask, causal, stable, key_headroom, chunk_size,
        segment_size,
    )


def linear_attention(
    qf: Tensor, kf: Tensor, v: Tensor, *, causal: bool, key_padding_mask: Tensor | None = None,
    chunk_size: int | None = None, segment_size: int | None = None,
) -> Tensor:
    """``y_i = sum_j (qf_i.kf_j) v_j / sum_j qf_i.kf_j`` over ``j <= i`` (causal) or all j, on features.

    qf ``[B, Hq, N, F]``, kf ``[B, Hk, N, F]``, v ``[B, Hk, N, Dv]``; returns ``[B, Hq, N, Dv]`` in v's dtype.
    """
    return LinearAttentionFunction.apply(qf, kf, v, key_padding_mask, causal, chunk_size, segment_size)
