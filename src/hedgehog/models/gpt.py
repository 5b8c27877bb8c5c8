"""A nanoGPT-sized decoder-only Transformer whose attention type is chosen by name.

Pre-LayerNorm blocks ``x + attn(ln(x))``, ``x + mlp(ln(x))``; learned absolute position embeddings; GELU MLP;
output head tied to the token embedding by default; weights initialised as in nanoGPT (normal(0, 0.02),
residual output projections scaled by 1/sqrt(2 * n_layers)). Feature maps keep their own initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from hedgehog.attention import FeatureMap
from hedgehog.attention.registry import parse_attention
from hedgehog.layers.attention import MultiHeadAttention


class MLP(nn.Module):
    """``[B, N, C] -> [B, N, C]``: Linear(C, r C), GELU, Linear(r C, C), dropout."""

    def __init__(self, d_model: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, mlp_ratio * d_model)
        self.act = nn.GELU()
        self.proj = nn.Linear(mlp_ratio * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-LN Transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; with ``mlp_ratio=0`` attention
    only (Zoology's MQAR models, whose state mixer is the identity)."""

    def __init__(self, d_model: int, n_heads: int, attention: Any, dropout: float, mlp_ratio: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, attention, causal=True, dropout=dropout)
        self.ln_2 = nn.LayerNorm(d_model) if mlp_ratio else None
        self.mlp = MLP(d_model, mlp_ratio, dropout) if mlp_ratio else None

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), key_padding_mask=key_padding_mask)
        return x if self.mlp is None else x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only language model: ``input_ids [B, N] -> logits [B, N, V]``, N <= seq_len.

    Args:
        vocab_size: V. seq_len: longest sequence (size of the position table).
        d_model, n_layers, n_heads: width, depth, heads. attention: ``{name, options}`` or None (softmax).
        dropout: embedding, residual and MLP dropout. mlp_ratio: MLP hidden width / d_model (0: no MLP).
        tie_embeddings: share the output head's weight with the token embedding.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        attention: Mapping[str, Any] | str | None = None,
        dropout: float = 0.0,
        mlp_ratio: int = 4,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("n_layers", n_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPT: {name} must be a positive int, got {value!r}")
        if not isinstance(mlp_ratio, int) or mlp_ratio < 0:
            raise ValueError(f"GPT: mlp_ratio must be an int >= 0 (0: attention-only blocks), got {mlp_ratio!r}")
        self.seq_len = seq_len
        self.attention_name, _ = parse_attention(attention)
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, attention, dropout, mlp_ratio) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self._init_weights(n_layers)

    def _init_weights(self, n_layers: int) -> None:
        # Feature maps keep their own initialisation (e.g. Hedgehog's identity init).
        skip = {id(m) for fm in self.modules() if isinstance(fm, FeatureMap) for m in fm.modules()}
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and id(module) not in skip:
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:  # residual projections, as in GPT-2
            for proj in (block.attn.o_proj, *([] if block.mlp is None else [block.mlp.proj])):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids: LongTensor ``[B, N]``; attention_mask: ``[B, N]``, nonzero/True on real tokens.

        Returns logits ``[B, N, V]``.
        """
        B, N = input_ids.shape
        if N > self.seq_len:
            raise ValueError(
                f"GPT: input has {N} tokens but the model's seq_len is {self.seq_len}; "
                f"build the model with seq_len >= {N} or feed shorter sequences"
            )
        positions = torch.arange(N, device=input_ids.device)  # [N]
        x = self.dropout(self.token_embedding(input_ids) + self.position_embedding(positions))  # [B, N, C]
        key_padding_mask = None if attention_mask is None else attention_mask.bool()
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)
        return self.lm_head(self.ln_f(x))  # [B, N, V]

    def num_parameters(self, exclude_embeddings: bool = True) -> int:
        """Parameter count; by default without the position table (as nanoGPT reports it)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.position_embedding.weight.numel() if exclude_embeddings else n
