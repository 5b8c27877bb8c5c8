"""Multi-head self-attention block whose attention type is chosen by name.

The block owns the q/k/v/o projections and, for linear attention types, one feature map for queries and one
for keys (``build_feature_map(name, H, D, **options)``); the maths itself is ``hedgehog.attention.attend``:
exact softmax when there are no feature maps, ``phi(q) phi(k)^T v`` normalised (linear attention) otherwise.
Grouped-query attention: ``num_kv_heads`` key/value heads shared by ``num_heads // num_kv_heads`` query heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from hedgehog.attention import WindowBalance, attend, build_feature_map
from hedgehog.attention.registry import parse_attention


class MultiHeadAttention(nn.Module):
    """Self-attention: ``x [B, N, C] -> [B, N, C]`` with C = d_model = num_heads * head_dim.

    Args:
        d_model: model width C.
        num_heads: query heads H (head_dim D = C // H).
        attention: ``{name, options}`` mapping (``hedgehog.attention.registry.parse_attention``), a name, or
            ``None`` for softmax.
        causal: mask future keys (decoder) or not (encoder).
        num_kv_heads: key/value heads Hk (default H); H must be a multiple of Hk.
        dropout: dropout on the block's output (residual dropout). There is no dropout on attention weights:
            linear attention never forms them.
        bias: biases on the four projections.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        attention: Mapping[str, Any] | str | None = None,
        causal: bool = True,
        num_kv_heads: int | None = None,
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads < 1 or d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} must be a positive multiple of num_heads={num_heads}")
        if num_kv_heads < 1 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = d_model // num_heads
        self.causal = causal
        self.attention_name, self.attention_options = parse_attention(attention)

        self.q_proj = nn.Linear(d_model, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        # Separate query and key maps; the key map has one set of per-head parameters per key/value head.
        opts = self.attention_options
        self.feature_map_q = build_feature_map(self.attention_name, num_heads, self.head_dim, **opts)
        self.feature_map_k = build_feature_map(self.attention_name, num_kv_heads, self.head_dim, **opts)
        # the sliding-window hybrid's per-head balance (calibrated on the first training batch)
        self.window = getattr(self.feature_map_q, "window", None)
        self.balance = WindowBalance(num_heads) if self.window is not None else None

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """x: ``[B, N, C]``; key_padding_mask: bool ``[B, N]``, True on real tokens; positions: ``[N]``/``[B, N]``.

        Returns ``[B, N, C]``.
        """
        B, N, C = x.shape
        if C != self.d_model:
            raise ValueError(f"MultiHeadAttention: expected x [B, N, {self.d_model}], got {tuple(x.shape)}")
        q = self.q_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, N, D]
        k = self.k_proj(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hk, N, D]
        v = self.v_proj(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hk, N, D]
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.bool()
        if self.balance is not None and self.training and self.balance.needs_calibration:
            pair = self.feature_map_q.pair(self.feature_map_k, q, k, key_padding_mask=key_padding_mask)
            self.balance.calibrate(q, k, pair, window=self.window, causal=self.causal, key_padding_mask=key_padding_mask)
        y = attend(
            q,
            k,
            v,
            feature_map_q=self.feature_map_q,
            feature_map_k=self.feature_map_k,
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            positions=positions,
            log_balance=None if self.balance is None else self.balance.log_balance,
        )  # [B, H, N, D]
        y = y.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)  # [B, N, C]
        return self.dropout(self.o_proj(y))

    def extra_repr(self) -> str:
        return (
            f"attention={self.attention_name!r}, heads={self.num_heads}, kv_heads={self.num_kv_heads}, "
            f"head_dim={self.head_dim}, causal={self.causal}"
        )
