"""A CSV logger that survives a restart: Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder
already exists, which would throw away the metrics of a run that is being resumed.

``ResumableCSVLogger`` keeps the file and appends to it. When a stage resumes from a checkpoint taken after
``s`` optimizer steps, the rows that stage logged from step ``s`` on (batches the checkpoint does not hold; Lightning
logs a batch's metrics under the step count before its update) are dropped: they are logged again.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def drop_rows_from(self, step: int, prefix: str = "") -> None:
        """Rewrite the file without the rows at ``step`` or later that hold a metric starting with ``prefix``."""
        self.save()
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))

        def later(row: dict[str, str]) -> bool:
            ours = any(value not in ("", None) and key.startswith(prefix) for key, value in row.items() if key != "step")
            return ours and row.get("step") not in ("", None) and int(float(row["step"])) >= step

        kept = [row for row in rows if not later(row)]
        if len(kept) != len(rows):
            with open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` (same arguments) that appends to an existing ``metrics.csv`` instead of deleting it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at(self, step: int, prefix: str = "") -> None:
        """Called when a stage resumes from a checkpoint taken at ``step``; ``prefix`` marks that stage's metrics."""
        if isinstance(self.experiment, _AppendingWriter):
            self.experiment.drop_rows_from(step, prefix)
