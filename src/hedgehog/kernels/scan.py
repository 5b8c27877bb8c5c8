"""Sums of per-segment linear-attention states across segments.

Each segment of a sequence contributes a flat state ``[E]`` (``S`` then ``z``, float32). The causal forward
needs the state *before* each segment (exclusive prefix sum), the causal backward the reverse state *after*
each segment (exclusive suffix sum), the bidirectional case the total (the backward's reverse states are per
query head; with grouped-query attention the key/value gradients of a group's heads are summed afterwards).

The segments are read ``BLOCK_S`` at a time as ``[BLOCK_S, BLOCK_E]`` tiles and summed with ``tl.cumsum``,
so the loads of a block are issued together instead of one dependent step per segment (a walk of 64
segments, one load each, was latency-bound: 0.24 ms per scan at N = 64K on an H100).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def segment_scan_kernel(
    SRC,  # [rows, nseg, E]
    DST,  # [rows, nseg, E] (exclusive scans) or [rows, 1, E] (TOTAL); may alias SRC
    stride_dst_bh, nseg, E,
    REVERSE: tl.constexpr, TOTAL: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grid ``(rows, cdiv(E, BLOCK_E))``. In place (``DST is SRC``) is safe: a program reads a block of
    segments before it writes it, and no other program touches its columns."""
    pid = tl.program_id(0)
    re = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    e_ok = re < E
    src = SRC + pid.to(tl.int64) * nseg * E
    dst = DST + pid.to(tl.int64) * stride_dst_bh
    carry = tl.zeros([BLOCK_E], dtype=tl.float32)  # sum of the blocks already walked
    nblocks = tl.cdiv(nseg, BLOCK_S)
    for i in range(nblocks):
        if REVERSE:
            blk = nblocks - 1 - i
        else:
            blk = i
        rs = blk * BLOCK_S + tl.arange(0, BLOCK_S)
        ok = (rs < nseg)[:, None] & e_ok[None, :]
        d = tl.load(src + rs[:, None].to(tl.int64) * E + re[None, :], mask=ok, other=0.0)
        block_total = tl.sum(d, axis=0)
        if not TOTAL:
            # exclusive sums as the inclusive scan of the block shifted by one segment (not inclusive - d,
            # which loses the small sums next to a large segment to cancellation)
            if REVERSE:
                rp = rs + 1
                prev_ok = (tl.arange(0, BLOCK_S) < BLOCK_S - 1) & (rp < nseg)
            else:
                rp = rs - 1
                prev_ok = tl.arange(0, BLOCK_S) > 0
            pok = prev_ok[:, None] & e_ok[None, :]
            shifted = tl.load(src + rp[:, None].to(tl.int64) * E + re[None, :], mask=pok, other=0.0)
            exclusive = tl.cumsum(shifted, axis=0, reverse=REVERSE) + carry[None, :]
            tl.debug_barrier()  # in place: every thread's loads of the block are used before any store
            tl.store(dst + rs[:, None].to(tl.int64) * E + re[None, :], exclusive, mask=ok)
        carry += block_total
    if TOTAL:
        tl.store(dst + re, carry, mask=e_ok)
