"""``1 + elu(x)``: the feature map of "Transformers are RNNs" (Katharopoulos et al., 2020, eq. 7)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hedgehog.attention.feature_maps.base import FeatureMap
from hedgehog.attention.registry import register_feature_map


@register_feature_map("elu")
class EluFeatureMap(FeatureMap):
    """``phi(x) = 1 + elu(x)`` elementwise (positive, F = D). No parameters, no options."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__(num_heads, head_dim)

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        """``x [B, H, N, D] -> [B, H, N, D]``."""
        return 1.0 + F.elu(self.check_input(x))
