"""The Hedgehog feature map (Zhang et al., ICLR 2024, eq. 4).

Per head ``h``: ``u = x W_h + b_h`` (D -> feature_dim), then ``phi(x) = [exp(u), exp(-u)]`` (F = 2 feature_dim).
With the identity init (W = I, b = 0) a fresh map gives ``phi(q).phi(k) = sum_d exp(q_d + k_d) + exp(-q_d - k_d)``,
a spiky, monotone kernel that distillation then shapes into the teacher's softmax. ``activation="softmax"``
gives the LoLCATs variant ``[softmax(u), softmax(-u)]`` over the feature axis.

Numerical stability (``stable=True``), for real activations whose entries reach ~100 (``exp(100)`` overflows
float32 and bfloat16):

- ``pair`` (what attention uses): each key feature ``f`` is shifted by ``M_f - KEY_HEADROOM``, ``M_f`` the
  largest value of that feature over the sequence's real keys, and the query features get the same shift added
  instead, so every product ``phi_f(q) phi_f(k)`` is unchanged; then each query is shifted by its own largest
  log-feature ``m_i``, a per-query factor the normaliser cancels (``FeaturePair.q_log_scale`` keeps it for the
  sliding-window hybrid, which needs the kernel's true scale). Query features stay <= 1, key features <=
  ``exp(KEY_HEADROOM)``: finite in any dtype at any activation scale. The shift is exact mathematics; in floating
  point a product underflows only where a causal query's visible keys all lie more than ~87 + KEY_HEADROOM
  below the sequence's largest key in every feature (a running, causal maximum would be needed there); such a
  query then attends to nothing (output 0), never NaN.
- ``forward`` alone: queries as above (``m`` = the token's largest ``|u_f|``); keys are the exact features
  ``exp(+-u)`` (float32 for float16 inputs), finite only for ``|u| < 88``: attention goes through ``pair``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hedgehog.attention.feature_maps.base import FeatureMap, FeaturePair, exp_output_dtype
from hedgehog.attention.registry import register_feature_map

INITS = ("identity", "random")
# Key features may reach exp(KEY_HEADROOM) (products of a query and a key likewise): a causal query's visible
# keys can then lie up to ~87 + KEY_HEADROOM below the sequence's largest key before their products underflow,
# while sums of a million such products stay below float32's limit (exp(88)).
KEY_HEADROOM = 64.0
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
    trainable = True

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

    def log_features(self, x: Tensor) -> Tensor:
        """``[u, -u]``: the logarithms of the exp features, ``[B, H, N, D] -> [B, H, N, 2 * feature_dim]`` (float32+)."""
        u = self.project(self.check_input(x))
        return torch.cat([u, -u], dim=-1)

    def forward(self, x: Tensor, *, is_query: bool = False, positions: Tensor | None = None) -> Tensor:
        """``x [B, H, N, D] -> [B, H, N, 2 * feature_dim]``."""
        if self.activation == "softmax":
            u = self.project(self.check_input(x))
            return torch.cat([torch.softmax(u, dim=-1), torch.softmax(-u, dim=-1)], dim=-1).to(x.dtype)
        logs = self.log_features(x)
        if self.stable and is_query:  # max over both halves [u, -u] is max |u|; exp(+-u - m) <= 1
            m = logs.detach().amax(dim=-1, keepdim=True)
            return torch.exp(logs - m).to(x.dtype)
        return torch.exp(logs).to(exp_output_dtype(x))

    def fused_kernel_args(self, key_map: FeatureMap, q: Tensor, k: Tensor) -> dict | None:
        """Weights, biases and flags for the fused kernels when both maps are Hedgehog maps of one class whose
        features are the stock ones (a subclass that changes ``forward``, ``project`` or ``log_features`` is never
        fused) with the exp activation, their head counts match q and k, and their parameters are 16- or 32-bit
        floats; None otherwise. ``window`` is the sliding-window hybrid's (None for plain Hedgehog)."""
        cls = type(self)
        if type(key_map) is not cls or not isinstance(self, HedgehogFeatureMap) or any(
            getattr(cls, name) is not getattr(HedgehogFeatureMap, name) for name in ("forward", "project", "log_features")
        ):
            return None
        params = [p for fm in (self, key_map) for p in (fm.weight, fm.bias) if p is not None]
        if (
            self.activation != "exp" or key_map.activation != "exp" or self.hidden_dim != key_map.hidden_dim
            or self.num_heads != q.shape[1] or key_map.num_heads != k.shape[1]
            or self.head_dim != q.shape[-1] or key_map.head_dim != k.shape[-1]
            or any(p.dtype not in (torch.float16, torch.bfloat16, torch.float32) for p in params)
        ):
            return None
        return {"weight_q": self.weight, "bias_q": self.bias, "weight_k": key_map.weight, "bias_k": key_map.bias,
                "stable": self.stable, "key_headroom": KEY_HEADROOM, "window": getattr(self, "window", None)}

    def pair(
        self, key_map: FeatureMap, q: Tensor, k: Tensor, *, positions: Tensor | None = None,
        key_positions: Tensor | None = None, key_padding_mask: Tensor | None = None, key_shift: Tensor | None = None,
    ) -> FeaturePair:
        """Query and key features stabilised together (module docstring); ``key_shift [B, Hk, F]`` continues
        from earlier keys (decoding: the returned shift is the elementwise max of it and these keys')."""
        if self.activation == "softmax" or not self.stable or not isinstance(key_map, HedgehogFeatureMap):
            return super().pair(key_map, q, k, positions=positions, key_positions=key_positions,
                                key_padding_mask=key_padding_mask, key_shift=key_shift)
        lq, lk = self.log_features(q), key_map.log_features(k)  # [B, Hq, N, F], [B, Hk, M, F]
        b, hq, n, f = lq.shape
        hk = lk.shape[1]
        with torch.no_grad():
            masked = lk if key_padding_mask is None else lk.masked_fill(~key_padding_mask[:, None, :, None], -torch.inf)
            shift = masked.amax(dim=2) if lk.shape[2] else torch.full((b, hk, f), -torch.inf, device=lk.device, dtype=lk.dtype)
            if key_shift is not None:
                shift = torch.maximum(shift, key_shift.to(shift.dtype))
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # no real key yet: 0
        lq = (lq.reshape(b, hk, hq // hk, n, f) + (shift - KEY_HEADROOM)[:, :, None, None, :]).reshape(b, hq, n, f)
        m = lq.detach().amax(dim=-1, keepdim=True)
        qf = torch.exp(lq - m).to(exp_output_dtype(q))
        kf = torch.exp(lk - (shift - KEY_HEADROOM)[:, :, None, :]).to(exp_output_dtype(k))
        return FeaturePair(qf, kf, m.squeeze(-1), shift)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, bias={self.bias is not None}, init={self.init}, "
            f"activation={self.activation}, stable={self.stable}"
        )
