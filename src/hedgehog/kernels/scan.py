"""Sums of per-segment linear-attention states across segments.

Each segment of a sequence contributes a flat state ``[E]`` (``S`` then ``z``, float32). The causal forward
needs the state *before* each segment (exclusive prefix sum), the causal backward the reverse state *after*
each segment (exclusive suffix sum), the bidirectional case the total. With grouped-query attention the
backward's reverse states of the ``G`` query heads of a group are summed into their key/value head.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def segment_scan_kernel(
    SRC,  # [B * Hdst * G, nseg, E]
    DST,  # [B * Hdst, nseg, E] (exclusive scans) or [B * Hdst, 1, E] (TOTAL); may alias SRC when G == 1
    stride_dst_bh, G, nseg, E,
    REVERSE: tl.constexpr, TOTAL: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grid ``(B * Hdst, cdiv(E, BLOCK_E))``. In place (``DST is SRC``) is safe: a program reads a slot before
    it writes it, and no other program touches its columns."""
    pid = tl.program_id(0)
    re = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    ok = re < E
    src = SRC + pid.to(tl.int64) * G * nseg * E
    dst = DST + pid.to(tl.int64) * stride_dst_bh
    acc = tl.zeros([BLOCK_E], dtype=tl.float32)
    for i in range(nseg):
        if REVERSE:
            s = nseg - 1 - i
        else:
            s = i
        d = tl.zeros([BLOCK_E], dtype=tl.float32)
        for g in range(G):
            d += tl.load(src + (g * nseg + s).to(tl.int64) * E + re, mask=ok, other=0.0)
        if not TOTAL:
            tl.store(dst + s.to(tl.int64) * E + re, acc, mask=ok)
        acc += d
    if TOTAL:
        tl.store(dst + re, acc, mask=ok)
