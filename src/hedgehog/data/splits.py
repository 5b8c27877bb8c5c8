"""Seeded train / validation / test splits of example lists (GLUE, SAMSum).

Validation is a seeded random part of the training pool; the caps for small runs cut the splits after that,
so a capped run sees a prefix of the same shuffled examples as the full run.
"""

from __future__ import annotations

import torch


def held_out(items: list, fraction: float, generator: torch.Generator) -> tuple[list, list]:
    """Seeded split: returns ``(rest, held_out)`` with ``round(fraction * len)`` items held out (at least 1;
    none when ``fraction`` is 0). Draws one permutation from ``generator``."""
    n_out = max(1, round(fraction * len(items))) if fraction > 0 else 0
    perm = torch.randperm(len(items), generator=generator).tolist()
    return [items[i] for i in perm[n_out:]], [items[i] for i in perm[:n_out]]


def train_validation_test(
    pool: list, test: list, val_fraction: float, generator: torch.Generator,
    max_train: int | None = None, max_eval: int | None = None,
) -> dict[str, list]:
    """``{"train", "validation", "test"}``: ``val_fraction`` of ``pool`` held out (``held_out``) as validation,
    the rest as train; ``max_train`` caps train, ``max_eval`` caps validation and test (None: no cap)."""
    train, val = held_out(pool, val_fraction, generator)
    if max_train is not None:
        train = train[:max_train]
    if max_eval is not None:
        val, test = val[:max_eval], test[:max_eval]
    return {"train": train, "validation": val, "test": test}
