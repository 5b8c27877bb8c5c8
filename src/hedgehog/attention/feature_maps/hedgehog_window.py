"""Hedgehog features for the sliding-window hybrid (``hedgehog.attention.hybrid``): exact softmax over each
query's last ``window`` keys, Hedgehog linear attention over all earlier keys, one normaliser, a learnable
per-head balance (owned by the attention layer, which also calibrates it before training)."""

from __future__ import annotations

from hedgehog.attention.feature_maps.hedgehog import HedgehogFeatureMap
from hedgehog.attention.registry import register_feature_map


@register_feature_map("hedgehog_window")
class HedgehogWindowFeatureMap(HedgehogFeatureMap):
    """``HedgehogFeatureMap`` plus ``window``: how many of the newest keys (the query's own included) each query
    attends to with exact softmax. Other options as for ``hedgehog``."""

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        window: int = 64,
        feature_dim: int | None = None,
        bias: bool = True,
        init: str = "identity",
        activation: str = "exp",
        stable: bool = True,
    ) -> None:
        super().__init__(num_heads, head_dim, feature_dim=feature_dim, bias=bias, init=init, activation=activation,
                         stable=stable)
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"hedgehog_window: window must be a positive int, got {window!r}")
        self.window = window

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"
