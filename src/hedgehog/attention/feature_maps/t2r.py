"""T2R, "Finetuning Pretrained Transformers into RNNs" (Kasai et al., 2021, eq. 4): ``phi(x) = relu(x W_h + b_h)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hedgehog.attention.feature_maps.base import FeatureMap
from hedgehog.attention.registry import register_feature_map


@register_feature_map("t2r")
class T2RFeatureMap(FeatureMap):
    """Trainable per-head linear layer (D -> feature_dim) followed by ReLU; F = feature_dim.

    Args:
        feature_dim: output width (default D).
        bias: learn a per-head bias.
    Parameters: ``weight [H, D, feature_dim]``, ``bias [H, feature_dim]``; random (``nn.Linear``-like) init.
    """

    per_head = True
    trainable = True

    def __init__(self, num_heads: int, head_dim: int, feature_dim: int | None = None, bias: bool = True) -> None:
        super().__init__(num_heads, head_dim)
        feature_dim = head_dim if feature_dim is None else feature_dim
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"t2r: feature_dim must be a positive int or null, got {feature_dim!r}")
        self.feature_dim = feature_dim
        self.weight = nn.Parameter(torch.empty(num_heads, head_dim, feature_dim))
        self.bias = nn.Parameter(torch.empty(num_heads, feature_dim)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.head_dim)
        self.weight.uniform_(-bound, bound)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        """``x [B, H, N, D] -> [B, H, N, feature_dim]`` (non-negative)."""
        self.check_input(x)
        dtype = torch.promote_types(x.dtype, self.weight.dtype)
        u = torch.einsum("bhnd,hdf->bhnf", x.to(dtype), self.weight.to(dtype))
        if self.bias is not None:
            u = u + self.bias.to(dtype)[None, :, None, :]
        return torch.relu(u).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias={self.bias is not None}"
