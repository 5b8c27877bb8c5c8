"""Performer FAVOR+ positive orthogonal random features (Choromanski et al., ICLR 2021, lemma 1):

``phi(x) = exp(w_i . x' - |x'|^2 / 2) / sqrt(m)`` for i = 1..m, ``x' = x / D^(1/4)``, so that
``E[phi(q).phi(k)] = exp(q.k / sqrt(D))``, the softmax kernel. The ``w_i`` are blocks of orthogonal directions
with chi(D)-distributed norms (the "orthogonal random features" of sec. 2.4), shared by all heads.

The q and k maps must hold the *same* projection: build both with the same ``seed`` (and redraw both the same
number of times, or with the same explicit seed). Queries are shifted by their max exponent (cancelled by the
normaliser); keys are not shifted and exponentiated in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hedgehog.attention.feature_maps.base import FeatureMap, exp_output_dtype
from hedgehog.attention.registry import register_feature_map

_SEED_MULTIPLIER = 6364136223846793005
_SEED_INCREMENT = 1442695040888963407


def orthogonal_gaussian(num_features: int, dim: int, generator: torch.Generator) -> Tensor:
    """``[num_features, dim]`` rows: orthogonal within each block of ``dim``, norms drawn as |N(0, I_dim)|."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        # sign fix makes q Haar-distributed (plain Householder QR output is not, and biases the estimate)
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        blocks.append(q.T)
    directions = torch.cat(blocks, dim=0)[:num_features]
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (directions * norms).to(torch.float32)


@register_feature_map("performer")
class PerformerFeatureMap(FeatureMap):
    """FAVOR+ positive random features of the softmax kernel ``exp(q.k / sqrt(D))``.

    Args:
        num_features: m, the number of random features (default 2 D, the width of Hedgehog's features); F = m.
        seed: seed of the projection; two maps with one seed hold identical features.
    Buffer: ``projection [m, D]`` (float32, saved in the state dict, not trained). ``redraw(seed=None)`` draws
    new features; without a seed it advances the current seed deterministically.
    """

    def __init__(self, num_heads: int, head_dim: int, num_features: int | None = None, seed: int = 0) -> None:
        super().__init__(num_heads, head_dim)
        num_features = 2 * head_dim if num_features is None else num_features
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"performer: num_features must be a positive int or null, got {num_features!r}")
        if not isinstance(seed, int):
            raise ValueError(f"performer: seed must be an int, got {seed!r}")
        self.feature_dim = num_features
        self.seed = seed
        self.register_buffer("projection", torch.empty(num_features, head_dim))
        self.redraw(seed)

    @torch.no_grad()
    def redraw(self, seed: int | None = None) -> None:
        """Draw a new projection from ``seed`` (or from the next seed of a fixed sequence when None)."""
        if seed is None:
            seed = (self.seed * _SEED_MULTIPLIER + _SEED_INCREMENT) % (2**63)
        self.seed = int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.projection.copy_(orthogonal_gaussian(self.feature_dim, self.head_dim, generator))

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        """``x [B, H, N, D] -> [B, H, N, num_features]`` (positive)."""
        self.check_input(x)
        dtype = torch.promote_types(x.dtype, torch.float32)
        xs = x.to(dtype) * self.head_dim ** -0.25
        exponent = xs @ self.projection.to(dtype).T - 0.5 * xs.pow(2).sum(dim=-1, keepdim=True)
        scale = self.feature_dim ** -0.5
        if is_query:
            exponent = exponent - exponent.detach().amax(dim=-1, keepdim=True)
            return (torch.exp(exponent) * scale).to(x.dtype)
        return (torch.exp(exponent) * scale).to(exp_output_dtype(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, seed={self.seed}"
