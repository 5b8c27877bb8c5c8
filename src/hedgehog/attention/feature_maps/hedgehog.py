"""The Hedgehog feature map (Zhang et al., ICLR 2024, eq. 4).

Per head ``h``: ``u = x W_h + b_h`` (D -> feature_dim), then ``phi(x) = [exp(u), exp(-u)]`` (F = 2 feature_dim).
With the identity init (W = I, b = 0) a fresh map gives ``phi(q).phi(k) = sum_d exp(q_d + k_d) + exp(-q_d - k_d)``,
a spiky, monotone kernel that distillation then shapes into the teacher's softmax. ``activation="softmax"``
gives the LoLCATs variant ``[softmax(u), softmax(-u)]`` over the feature axis.

Numerical stability (``stable=True``): a query's features are all multiplied by ``exp(-m)`` with ``m`` the
token's largest ``|u_f|``; the linear-attention normaliser cancels that factor exactly. Keys are never shifted
per token (that would change the kernel): their exponentials are taken in float32, finite for ``|u| < 88``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hedgehog.attention.feature_maps.base import FeatureMap, exp_output_dtype
from hedgehog.attention.registry import register_feature_map

INITS = ("identity", "random")
ACTIVATIONS = ("exp", "softmax")


@register_feature_map("hedgehog")
class HedgehogFeatureMap(FeatureMap):
    """Trainable per-head linear map followed by ``[exp(u), exp(-u)]``.

    Args:
        num_heads, head_dim: H and D of the inputs.
        feature_dim: width of the linear layer (default D); the output has F = 2 * feature_dim.
        bias: learn a per-head bias ``[H, feature_dim]``.
        init: ``"identity"`` (W = I, padded or truncated when feature_dim != D; b = 0) or ``"random"``
            (uniform +-1/sqrt(D), like ``nn.Linear``).
        activation: ``"exp"`` (the paper) or ``"softmax"`` (softmax over the feature axis, LoLCATs).
        stable: shift each query token by its max before ``exp`` (cancelled by the normaliser) and take key
            exponentials in float32.

    Parameters: ``weight [H, D, feature_dim]``, ``bias [H, feature_dim]`` (if ``bias``).
    """

    per_head = True

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        feature_dim: int | None = None,
        bias: bool = True,
        init: str = "identity",
        activation: str = "exp",
        stable: bool = True,
    ) -> None:
        super().__init__(num_heads, head_dim)
        feature_dim = head_dim if feature_dim is None else feature_dim
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"hedgehog: feature_dim must be a positive int or null, got {feature_dim!r}")
        if init not in INITS:
            raise ValueError(f"hedgehog: unknown init {init!r}; valid: {', '.join(INITS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"hedgehog: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.hidden_dim = feature_dim
        self.feature_dim = 2 * feature_dim
        self.init, self.activation, self.stable = init, activation, bool(stable)
        self.weight = nn.Parameter(torch.empty(num_heads, head_dim, feature_dim))
        self.bias = nn.Parameter(torch.empty(num_heads, feature_dim)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Identity (``eye(D, feature_dim)`` per head, zero bias) or uniform(+-1/sqrt(D)) init."""
        if self.init == "identity":
            self.weight.copy_(torch.eye(self.head_dim, self.hidden_dim).expand_as(self.weight))
            if self.bias is not None:
                self.bias.zero_()
        else:
            bound = 1.0 / math.sqrt(self.head_dim)
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def project(self, x: Tensor) -> Tensor:
        """``u = x W_h + b_h``: ``[B, H, N, D] -> [B, H, N, feature_dim]`` in float32 (or float64)."""
        dtype = torch.promote_types(torch.promote_types(x.dtype, self.weight.dtype), torch.float32)
        u = torch.einsum("bhnd,hdf->bhnf", x.to(dtype), self.weight.to(dtype))
        if self.bias is not None:
            u = u + self.bias.to(dtype)[None, :, None, :]
        return u

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        """``x [B, H, N, D] -> [B, H, N, 2 * feature_dim]``."""
        u = self.project(self.check_input(x))
        if self.activation == "softmax":
            return torch.cat([torch.softmax(u, dim=-1), torch.softmax(-u, dim=-1)], dim=-1).to(x.dtype)
        if self.stable and is_query:
            # max over both halves [u, -u] is max |u|; exp(+-u - m) <= 1
            m = u.detach().abs().amax(dim=-1, keepdim=True)
            return torch.cat([torch.exp(u - m), torch.exp(-u - m)], dim=-1).to(x.dtype)
        return torch.cat([torch.exp(u), torch.exp(-u)], dim=-1).to(exp_output_dtype(x))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, bias={self.bias is not None}, init={self.init}, "
            f"activation={self.activation}, stable={self.stable}"
        )
