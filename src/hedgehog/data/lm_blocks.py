"""Contiguous language-modelling blocks cut from one token stream.

Block ``i`` is ``tokens[i L : i L + L + 1]`` (L = ``seq_len``): ``input_ids = block[:-1]``, ``labels = block[1:]``.
Consecutive blocks share one token, so every token after the first is a label exactly once; the tail that does
not fill a whole block (fewer than L tokens) is dropped.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class LMBlockDataset(Dataset):
    """``{"input_ids": [L], "labels": [L]}`` items over a 1-D LongTensor of ``T`` tokens; ``(T - 1) // L`` items."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, name: str = "tokens") -> None:
        if tokens.ndim != 1:
            raise ValueError(f"LMBlockDataset: tokens must be 1-D, got shape {tuple(tokens.shape)}")
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"LMBlockDataset: seq_len must be a positive int, got {seq_len!r}")
        if tokens.numel() < seq_len + 1:
            raise ValueError(
                f"{name} has {tokens.numel()} tokens, fewer than one block of seq_len + 1 = {seq_len + 1}; "
                f"lower seq_len"
            )
        self.tokens = tokens.long()
        self.seq_len = seq_len

    def __len__(self) -> int:
        return (self.tokens.numel() - 1) // self.seq_len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} out of range [0, {len(self)})")
        block = self.tokens[index * self.seq_len : (index + 1) * self.seq_len + 1]  # [L + 1]
        return {"input_ids": block[:-1], "labels": block[1:]}
