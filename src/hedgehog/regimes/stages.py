"""The multi-stage protocol shared by ``run.py`` and the regimes.

A regime that trains in several stages (finetune -> distil -> finetune) exposes ``stages``; ``run.py`` then
builds a fresh Trainer for each stage, calls ``module.start_stage(name)`` and ``trainer.fit``; each stage keeps
its own checkpoints so a rerun resumes inside the stage it was killed in and skips finished ones. A regime
without ``stages`` is trained in one stage called ``train`` with the Trainer config as it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One ``trainer.fit`` of a regime.

    name: short identifier, used as metric prefix and checkpoint sub-folder (``distill``, ``finetune``...).
    max_steps: optimizer steps for this stage (-1: use ``max_epochs``); 0 skips the stage.
    max_epochs: epochs for this stage when ``max_steps`` is -1.
    """

    name: str
    max_steps: int = -1
    max_epochs: int | None = None
