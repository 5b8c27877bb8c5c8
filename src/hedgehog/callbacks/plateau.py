"""Stop one training stage once its validation metric has stopped improving: train a teacher to its plateau.

Arms of a comparison end by their step counts; a *teacher* (the softmax model a conversion starts from) is better
trained until it converges, so that "% of softmax" is measured against a model that has learned its task.
``StopAtPlateau`` ends the stage named ``stage`` (every stage when None) after ``patience`` validations without an
improvement of more than ``min_delta`` in ``monitor``, and leaves every other stage alone: the control arm that
continues from the teacher still trains its full budget. Its state (best value, validations waited) is saved in
checkpoints, so a resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class StopAtPlateau(L.Callback):
    """End the stage ``stage`` after ``patience`` validations whose ``monitor`` did not beat the best by ``min_delta``
    (``mode``: ``max`` or ``min``)."""

    def __init__(self, monitor: str = "val/score", stage: str | None = "finetune", patience: int = 5,
                 min_delta: float = 0.0, mode: str = "max") -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"StopAtPlateau: mode must be 'max' or 'min', got {mode!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"StopAtPlateau: patience must be a positive int (validations), got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"StopAtPlateau: min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.stage, self.patience, self.min_delta, self.mode = monitor, stage, patience, min_delta, mode
        self.best = -math.inf if mode == "max" else math.inf
        self.waited = 0
        self.stopped_at: int | None = None

    def _applies(self, pl_module: L.LightningModule) -> bool:
        return self.stage is None or getattr(pl_module, "stage", None) == self.stage

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._applies(pl_module):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(f"StopAtPlateau: no metric {self.monitor!r} after validation; logged: "
                           f"{sorted(trainer.callback_metrics)}")
        value = float(value)
        better = value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        if better:
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.should_stop = True
            self.stopped_at = trainer.global_step
            log.info("plateau: %s has not improved on %.4g for %d validations; stage %s ends at step %d",
                     self.monitor, self.best, self.waited, self.stage, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "waited": self.waited}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.waited = float(state_dict["best"]), int(state_dict["waited"])
