"""Second-order Taylor feature map (Zhang et al., 2024, sec. 3; Arora et al., "Based"):

``phi(q).phi(k) = 1 + s + s^2 / 2`` exactly, with ``s = q.k / sqrt(D)``, the 2nd-order expansion of ``exp(s)``.
``phi(x) = [1, x / D^(1/4), vec(x x^T) / (sqrt(2) sqrt(D))]`` (F = 1 + D + D^2) or, with ``deduplicate``, the
upper triangle of ``x x^T`` with off-diagonal entries scaled by sqrt(2) (F = 1 + D + D(D+1)/2). The kernel is
always positive (its minimum is 1/2 at s = -1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hedgehog.attention.feature_maps.base import FeatureMap
from hedgehog.attention.registry import register_feature_map


@register_feature_map("taylor")
class TaylorFeatureMap(FeatureMap):
    """``[1, x / D^(1/4), (x outer x) / sqrt(2 D)]``; ``deduplicate=True`` keeps only i <= j of the outer product."""

    def __init__(self, num_heads: int, head_dim: int, deduplicate: bool = False) -> None:
        super().__init__(num_heads, head_dim)
        self.deduplicate = bool(deduplicate)
        d = head_dim
        self.feature_dim = 1 + d + (d * (d + 1) // 2 if self.deduplicate else d * d)
        if self.deduplicate:
            rows, cols = torch.triu_indices(d, d)
            scale = torch.where(rows == cols, 1.0, math.sqrt(2.0))
            self.register_buffer("_rows", rows, persistent=False)
            self.register_buffer("_cols", cols, persistent=False)
            self.register_buffer("_pair_scale", scale, persistent=False)

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        """``x [B, H, N, D] -> [B, H, N, F]``."""
        self.check_input(x)
        d = self.head_dim
        first = x * d ** -0.25
        if self.deduplicate:
            second = x[..., self._rows] * x[..., self._cols] * self._pair_scale.to(x.dtype)
        else:
            second = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)
        second = second * (1.0 / math.sqrt(2.0 * d))
        return torch.cat([torch.ones_like(x[..., :1]), first, second], dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, deduplicate={self.deduplicate}"
