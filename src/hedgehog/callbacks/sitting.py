"""End a run cleanly at the end of a sitting: checkpoint, exit 3, continue later with the same command.

A sitting is a slot of machine time (a GPU lease, a batch's budget). A run that cannot finish in it must neither
be killed mid-write nor be cut short and tested early (that ends arms at unequal step counts). Instead, when the
sitting ends, ``PauseAtSittingEnd`` writes the stage's ``last.ckpt`` right after an optimizer step and raises
``RunPaused``: ``run.py`` exits with status 3, no ``results.json`` is written, and rerunning the same command
resumes exactly there (``hedgehog.train.resume``). Runs therefore always end by their step count.

The sitting's limits come from the environment, so that pausing never changes a run's config or run folder:

- ``HEDGEHOG_PAUSE_AT``: epoch seconds; pause after the first optimizer step at or past this time (the batch
  runner sets it a margin before each job's deadline);
- ``HEDGEHOG_SITTING_STEPS``: pause once this process has trained this many optimizer steps (over all stages).

Without either variable nothing pauses. The clock also measures this sitting's seconds per optimizer step
(validation included), which the run records in ``progress.json`` for planning the next sittings.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L

from hedgehog.utils.errors import ConfigError, RunPaused

PAUSE_AT_ENV = "HEDGEHOG_PAUSE_AT"
SITTING_STEPS_ENV = "HEDGEHOG_SITTING_STEPS"


@dataclass(frozen=True)
class SittingLimit:
    """When this sitting ends: ``pause_at`` (epoch seconds) and/or ``max_steps`` (optimizer steps); None: never."""

    pause_at: float | None = None
    max_steps: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "SittingLimit":
        """Read ``HEDGEHOG_PAUSE_AT`` and ``HEDGEHOG_SITTING_STEPS``; a value that is not a number is a ConfigError."""
        pause_at = environ.get(PAUSE_AT_ENV, "").strip()
        steps = environ.get(SITTING_STEPS_ENV, "").strip()
        try:
            at = float(pause_at) if pause_at else None
        except ValueError:
            raise ConfigError(f"{PAUSE_AT_ENV}={pause_at!r} is not a time: give epoch seconds (e.g. "
                              f"$(( $(date +%s) + 3600 )) for an hour from now), or unset it") from None
        if at is not None and not math.isfinite(at):
            raise ConfigError(f"{PAUSE_AT_ENV}={pause_at!r} is not a time: give finite epoch seconds, or unset it")
        if steps and not (steps.isdigit() and int(steps) > 0):
            raise ConfigError(f"{SITTING_STEPS_ENV}={steps!r} must be a positive whole number of optimizer steps, "
                              "or unset")
        return cls(pause_at=at, max_steps=int(steps) if steps else None)

    @property
    def active(self) -> bool:
        return self.pause_at is not None or self.max_steps is not None


@dataclass
class SittingClock:
    """Optimizer steps and seconds of training in this process, over every stage (one clock per run)."""

    limit: SittingLimit = field(default_factory=SittingLimit)
    steps: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.steps if self.steps else None

    def due(self, now: float) -> bool:
        """True once the sitting is over."""
        over_time = self.limit.pause_at is not None and now >= self.limit.pause_at
        over_steps = self.limit.max_steps is not None and self.steps >= self.limit.max_steps
        return over_time or over_steps


class PauseAtSittingEnd(L.Callback):
    """Counts one stage's optimizer steps on ``clock``; when the sitting is over (and the stage is not), saves
    ``checkpoint`` (the stage's ``last.ckpt``) after that step and raises ``RunPaused`` before the next batch.

    The checkpoint is written in ``on_train_batch_end``, where Lightning's own checkpoints are written, so resuming
    from it is exact; the error waits for the next batch so that the step's metrics (logged after the hook) and a
    validation due at that step happen first, as they would in a run that was never paused."""

    def __init__(self, clock: SittingClock, checkpoint: Path, stage: str) -> None:
        self.clock = clock
        self.checkpoint = Path(checkpoint)
        self.stage = stage
        self._step = 0
        self._since = 0.0
        self._paused_at: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step = trainer.global_step
        self._since = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self._step or self._paused_at is not None:  # gradient accumulation, or paused
            return
        now = time.perf_counter()
        self.clock.steps += trainer.global_step - self._step
        self.clock.seconds += now - self._since
        self._step, self._since = trainer.global_step, now
        stage_over = 0 < trainer.max_steps <= trainer.global_step
        if stage_over or not self.clock.due(time.time()):
            return
        trainer.save_checkpoint(self.checkpoint)
        self._paused_at = trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._paused_at is None:
            return
        step = self._paused_at
        raise RunPaused(
            f"Paused at the end of the sitting: stage {self.stage!r} at optimizer step {step}"
            + (f" of {trainer.max_steps}" if trainer.max_steps > 0 else "")
            + f", after {self.clock.steps} steps in this sitting. Rerun the same command to continue from "
            f"{self.checkpoint}.",
            stage=self.stage, step=int(step),
        )
