"""``TrainThroughput``: training tokens per second of one stage, without a host sync per step.

The clock runs from the first training batch to the end of the last one, less the time spent in validation;
tokens are counted on the device (real tokens where the batch has an ``attention_mask``, else every element of
``input_ids`` or of the batch's first tensor) and read once at the end. The pipeline writes the result into the
stage's record in ``results.json`` (``train_tokens``, ``train_seconds``, ``tokens_per_s``): after a resume it
covers the last sitting only.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


def batch_tokens(batch: Any) -> torch.Tensor | int:
    """Tokens in one batch: the sum of ``attention_mask`` (a device tensor, not read here), else the number of
    elements of ``input_ids`` or of the first tensor found; 0 when there is none."""
    if isinstance(batch, dict):
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            return mask.sum()
        ids = batch.get("input_ids")
        if isinstance(ids, torch.Tensor):
            return ids.numel()
        values = list(batch.values())
    elif isinstance(batch, (list, tuple)):
        values = list(batch)
    else:
        values = [batch]
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.numel()
    return 0


class TrainThroughput(L.Callback):
    """Counts one stage's training tokens and seconds (see the module docstring); ``result()`` reads them."""

    def __init__(self) -> None:
        self._tokens: torch.Tensor | int = 0
        self._steps = 0
        self._start: float | None = None
        self._end: float | None = None
        self._validation = 0.0
        self._validation_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._tokens = self._tokens + batch_tokens(batch)
        self._steps += 1
        self._end = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._start is not None:
            self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._validation_start is not None:
            self._validation += time.perf_counter() - self._validation_start
            self._validation_start = None

    def result(self) -> dict[str, float | int]:
        """``{train_batches, train_tokens, train_seconds, tokens_per_s}``; empty when no batch ran."""
        if self._start is None or self._end is None:
            return {}
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = max(self._end - self._start - self._validation, 1e-9)
        tokens = int(self._tokens.item() if isinstance(self._tokens, torch.Tensor) else self._tokens)
        return {"train_batches": self._steps, "train_tokens": tokens, "train_seconds": round(seconds, 3),
                "tokens_per_s": round(tokens / seconds, 1)}
