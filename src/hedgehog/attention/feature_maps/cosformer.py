"""cosFormer (Qin et al., ICLR 2022, eq. 9-11): ReLU features with a cos re-weighting by position.

``phi(x_i) = [relu(x_i) cos(pi i / 2M), relu(x_i) sin(pi i / 2M)]`` (F = 2 D) so that
``phi(q_i).phi(k_j) = relu(q_i).relu(k_j) cos(pi (i - j) / 2M)``, which decays with distance. ``M`` is a fixed
``max_positions`` (not the sequence length) so that prefill, chunks and recurrent decoding agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hedgehog.attention.feature_maps.base import FeatureMap, default_positions
from hedgehog.attention.registry import register_feature_map


@register_feature_map("cosformer")
class CosFormerFeatureMap(FeatureMap):
    """``[relu(x) cos(pi i / 2M), relu(x) sin(pi i / 2M)]`` with ``i`` the absolute position, ``M = max_positions``.

    Args:
        max_positions: M; every position must be in ``[0, M)``.
    """

    def __init__(self, num_heads: int, head_dim: int, max_positions: int = 4096) -> None:
        super().__init__(num_heads, head_dim)
        if not isinstance(max_positions, int) or max_positions < 1:
            raise ValueError(f"cosformer: max_positions must be a positive int, got {max_positions!r}")
        self.max_positions = max_positions
        self.feature_dim = 2 * head_dim

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        """``x [B, H, N, D]``, ``positions [N] or [B, N]`` (default ``arange(N)``) -> ``[B, H, N, 2 D]``."""
        self.check_input(x)
        fn = "CosFormerFeatureMap.forward"
        if positions is None and x.shape[2] > self.max_positions:
            raise ValueError(
                f"{fn}: sequence length {x.shape[2]} exceeds max_positions={self.max_positions}; "
                "build the map with a larger max_positions"
            )
        pos = default_positions(positions, x.shape[0], x.shape[2], x.device, fn)
        # explicit positions are range-checked (one host sync); the default arange(N) was checked above. A CUDA graph
        # being captured cannot read values: its caller checks the range (hedgehog.conversion.decode)
        capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
        if (positions is not None and pos.numel() and not capturing
                and (int(pos.min()) < 0 or int(pos.max()) >= self.max_positions)):
            raise ValueError(
                f"{fn}: positions must lie in [0, max_positions={self.max_positions}), got "
                f"[{int(pos.min())}, {int(pos.max())}]; build the map with a larger max_positions"
            )
        dtype = torch.promote_types(x.dtype, torch.float32)
        angle = (math.pi / (2 * self.max_positions)) * pos.to(dtype)  # [B or 1, N]
        angle = angle[:, None, :, None]
        r = torch.relu(x.to(dtype))
        return torch.cat([r * torch.cos(angle), r * torch.sin(angle)], dim=-1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_positions={self.max_positions}"
