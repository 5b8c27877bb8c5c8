"""Perplexity of a language model from summed token negative log-likelihoods.

ppl = exp( sum_t -log p(x_t | x_<t) / T ), T = number of predicted tokens (labels != -100). Corpus perplexity
is computed from the *total* NLL and token count, not by averaging per-batch perplexities (batches with
different token counts would otherwise be weighted wrongly).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL (fp32) and number of scored tokens.

    logits: [B, N, V]; labels: [B, N], already aligned with the logits (label t is the token predicted at
    position t), ``-100`` ignored. Returns ``(nll_sum, n_tokens)``, both 0-d tensors.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not line up")
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return nll, (labels != IGNORE_INDEX).sum()


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(total NLL / tokens); ``inf`` when the mean NLL overflows."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    mean = float(nll_sum) / float(n_tokens)
    return math.exp(mean) if mean < 700 else math.inf


class PerplexityAccumulator:
    """Running corpus perplexity: ``update(logits, labels)`` per batch, ``compute()`` at the end."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.nll_sum = 0.0
        self.n_tokens = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Add one batch; returns the batch's mean NLL (a differentiable tensor)."""
        nll, n = token_nll(logits, labels)
        self.nll_sum += float(nll.detach())
        self.n_tokens += int(n)
        return nll / n.clamp(min=1)

    def compute(self) -> float:
        return perplexity(self.nll_sum, self.n_tokens)
