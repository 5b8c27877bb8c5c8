"""The base class of every feature map: ``x [B, H, N, D] -> phi(x) [B, H, N, F]``.

Linear attention replaces ``exp(q.k / sqrt(D))`` by ``phi(q).phi(k)``; a feature map is that ``phi``. Maps with
trainable parameters keep them per head, so ``x`` must then have exactly ``num_heads`` heads (with
grouped-query attention build the key map with the number of key/value heads).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from hedgehog.attention.checks import check_floating, describe


class FeaturePair(NamedTuple):
    """Query and key features computed together (``FeatureMap.pair``).

    q ``[B, Hq, N, F]``, k ``[B, Hk, N, F]``: features whose products give the kernel up to a per-query factor,
    ``phi(q_i).phi(k_j) = exp(q_log_scale_i) * (q_i . k_j)``; ``q_log_scale [B, Hq, N]`` (float32, or float64 for float64 inputs) or None for 0.
    key_shift ``[B, Hk, F]`` (same dtype) or None: the per-feature reference of the key features (their largest
    log-feature so far; maps that shift their keys say by how much relative to it), kept so that later keys
    (decoding) are shifted the same way.
    """

    q: Tensor
    k: Tensor
    q_log_scale: Tensor | None = None
    key_shift: Tensor | None = None


class FeatureMap(nn.Module):
    """Base feature map.

    Subclasses set ``self.feature_dim`` (F) in ``__init__`` and implement ``forward``. ``per_head = True``
    marks a map whose parameters are per head (the input must then have ``num_heads`` heads); ``trainable = True``
    one whose parameters distillation trains.

    forward(x, *, is_query=False, positions=None):
        x: ``[B, H, N, D]``. ``is_query=True`` allows a per-query-token shift that the linear-attention
        normaliser cancels (used for numerically stable exponentials). ``positions``: ``[N]`` or ``[B, N]``
        absolute token indices (default ``arange(N)``), used by position-aware maps (cosFormer) only.
        Returns ``[B, H, N, F]``.
    """

    per_head: bool = False
    trainable: bool = False  # has parameters that distillation trains (read from the class, no instance needed)

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"{name}: num_heads must be a positive int, got {num_heads!r}")
        if not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"{name}: head_dim must be a positive int, got {head_dim!r}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.feature_dim = head_dim

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def pair(
        self, key_map: "FeatureMap", q: Tensor, k: Tensor, *, positions: Tensor | None = None,
        key_positions: Tensor | None = None, key_padding_mask: Tensor | None = None, key_shift: Tensor | None = None,
    ) -> FeaturePair:
        """Features of queries (this map) and keys (``key_map``) computed together, so that maps whose
        exponentials need it can stabilise both sides in a way the normaliser cancels (see ``FeaturePair``).

        q ``[B, Hq, N, D]``, k ``[B, Hk, M, D]``; ``key_padding_mask [B, M]`` (True = real key) keeps padded keys
        out of any statistics; ``positions`` / ``key_positions`` (default: ``positions``) reach position-aware maps.
        The default is ``self(q, is_query=True)`` and ``key_map(k)`` unchanged.
        """
        key_positions = positions if key_positions is None else key_positions
        return FeaturePair(self(q, is_query=True, positions=positions), key_map(k, positions=key_positions))

    def fused_kernel_args(self, key_map: "FeatureMap", q: Tensor, k: Tensor) -> dict | None:
        """The arguments with which ``hedgehog.kernels.hedgehog_attention`` computes this map's attention with the
        map inside the kernel, or None when no fused kernel computes it (the default: features are made here).
        q ``[B, Hq, N, D]``, k ``[B, Hk, N, D]``."""
        return None

    def check_input(self, x: Tensor) -> Tensor:
        """Validate ``x [B, H, N, D]`` against this map's heads and head dimension."""
        fn = f"{type(self).__name__}.forward"
        check_floating(fn, "x", x, "[B, H, N, D]", 4)
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"{fn}: x must be [B, H, N, D] with D = head_dim = {self.head_dim}, got {describe(x)}")
        if self.per_head and x.shape[1] != self.num_heads:
            raise ValueError(
                f"{fn}: x must be [B, H, N, D] with H = num_heads = {self.num_heads} (this map has per-head "
                f"parameters; with grouped-query attention build the key map with the key/value head count), "
                f"got {describe(x)}"
            )
        return x

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, feature_dim={self.feature_dim}"


def exp_output_dtype(x: Tensor) -> torch.dtype:
    """Dtype for unshifted exponential features of ``x``.

    float16 cannot hold ``exp(t)`` beyond t ~ 11, so such features stay float32 (linear attention accumulates
    in float32 anyway); bfloat16 shares float32's exponent range and keeps its dtype.
    """
    return torch.float32 if x.dtype == torch.float16 else x.dtype


def default_positions(positions: Tensor | None, batch: int, length: int, device: torch.device, fn: str) -> Tensor:
    """Absolute positions as a LongTensor ``[B or 1, N]``; ``arange(N)`` when None."""
    if positions is None:
        return torch.arange(length, device=device).unsqueeze(0)
    if not isinstance(positions, Tensor) or positions.dtype.is_floating_point or positions.dtype == torch.bool:
        raise TypeError(f"{fn}: positions must be an integer tensor [N] or [B, N], got {describe(positions)}")
    if positions.ndim == 1:
        positions = positions.unsqueeze(0)
    if positions.ndim != 2 or positions.shape[-1] != length or positions.shape[0] not in (1, batch):
        raise ValueError(f"{fn}: positions must be [N] or [B, N] with N = {length}, B = {batch}, got {describe(positions)}")
    return positions.to(device=device, dtype=torch.long)
