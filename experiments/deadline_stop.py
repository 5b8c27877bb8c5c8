"""A Lightning callback that ends training early enough for a run to finish inside a fixed wall-clock slot.

The batch runner (``experiments/batch_runner.py``) gives every job a deadline and exports it as the epoch time
``HEDGEHOG_JOB_DEADLINE``. This callback stops the current training stage once fewer than ``margin_s`` seconds
remain (the margin pays for the final validation, the test and writing ``results.json``), so a run that is
slower than planned still ends with its results instead of being killed; ``results.json`` then shows fewer steps
than configured (``stages.<name>.global_step``), which the report states. Without the variable it does nothing.
``stop_at_step`` also stops training at that global step while the schedules keep ``trainer.max_steps`` (a
reference run stopped where its ablations were stopped by their deadline, with the same learning-rate schedule).
Add it to a run with::

    python run.py ... +callbacks.deadline._target_=experiments.deadline_stop.DeadlineStop +callbacks.deadline.margin_s=40
"""

from __future__ import annotations

import logging
import os
import time

import lightning as L

log = logging.getLogger(__name__)
ENV_VAR = "HEDGEHOG_JOB_DEADLINE"


class DeadlineStop(L.Callback):
    """Stop training when ``time.time() > deadline - margin_s``; ``deadline`` defaults to ``$HEDGEHOG_JOB_DEADLINE``."""

    def __init__(self, margin_s: float = 40.0, deadline: float | None = None, stop_at_step: int | None = None) -> None:
        super().__init__()
        if margin_s < 0:
            raise ValueError(f"DeadlineStop: margin_s must be >= 0, got {margin_s}")
        env = os.environ.get(ENV_VAR)
        self.deadline = deadline if deadline is not None else (float(env) if env else None)
        self.margin_s = float(margin_s)
        self.stop_at_step = stop_at_step
        self.fired = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.should_stop:
            return
        if self.stop_at_step is not None and trainer.global_step >= self.stop_at_step:
            trainer.should_stop = True
            print(f"[deadline] stopping training at step {trainer.global_step} (stop_at_step)", flush=True)
            return
        if self.deadline is None:
            return
        if time.time() > self.deadline - self.margin_s:
            trainer.should_stop = True
            if not self.fired:
                self.fired = True
                log.warning("deadline: stopping training at step %d (%.0f s before the job's deadline)",
                            trainer.global_step, self.deadline - time.time())
                print(f"[deadline] stopping training at step {trainer.global_step}", flush=True)
