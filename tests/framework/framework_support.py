"""Small stand-ins the framework tests plug into run.py through config ``_target_``s.

Importable as ``framework_support`` (tests/framework is put on ``sys.path`` by pytest and on ``PYTHONPATH`` for
``run.py`` subprocesses). Nothing here is used outside the tests.
"""

from __future__ import annotations

import os
import signal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from hedgehog.regimes.stages import Stage


class KillAtStep(L.Callback):
    """SIGKILL this process when training reaches optimizer step ``step`` (as a crash or ``kill -9`` would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class CrashAtStep(L.Callback):
    """Raise ``RuntimeError`` when training reaches optimizer step ``step`` (an in-process crash)."""

    def __init__(self, step: int, stage: str | None = None) -> None:
        self.step = step
        self.stage = stage

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and (self.stage is None or getattr(pl_module, "stage", None) == self.stage):
            raise RuntimeError(f"crash at step {trainer.global_step}")


class BlowUp(nn.Module):
    """Identity until it has run ``after`` times in training mode, then multiplies by NaN (forever)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.calls += 1
        return x * float("nan") if self.training and self.calls > self.after else x


class TinyLM(nn.Module):
    """Embedding -> Linear -> (BlowUp) -> output head: ``input_ids [B, N] -> logits [B, N, V]``.

    ``nan_after`` > 0 inserts a ``BlowUp`` layer called ``blowup`` that turns the outputs NaN after that many
    training forwards. ``dropout`` makes steps random (to check that resumed runs replay the same randomness).
    """

    def __init__(self, vocab_size: int, seq_len: int, d_model: int = 16, nan_after: int = 0, dropout: float = 0.0,
                 attention: dict | None = None) -> None:
        super().__init__()
        self.attention_name = (attention or {}).get("name", "softmax")
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        self.mixer = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blowup = BlowUp(nan_after) if nan_after > 0 else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.position(positions)
        x = x + torch.cumsum(self.mixer(x), dim=1) / (1 + positions[:, None])  # causal mixing
        return self.head(self.blowup(self.dropout(x)))


class CountingDataset(Dataset):
    """``n`` sequences ``[i, i+1, ...] % vocab`` with next-token labels."""

    def __init__(self, n: int, seq_len: int, vocab_size: int) -> None:
        self.n, self.seq_len, self.vocab_size = n, seq_len, vocab_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        ids = (torch.arange(self.seq_len + 1) * (1 + i % 3) + i) % self.vocab_size
        return {"input_ids": ids[:-1], "labels": ids[1:]}


class CountingDataModule(L.LightningDataModule):
    """Shuffled train loader (so data order matters for resume), plain val/test loaders."""

    def __init__(self, vocab_size: int = 32, seq_len: int = 8, num_train: int = 64, batch_size: int = 8) -> None:
        super().__init__()
        self.vocab_size, self.seq_len, self.batch_size = vocab_size, seq_len, batch_size
        self.train = CountingDataset(num_train, seq_len, vocab_size)
        self.val = CountingDataset(16, seq_len, vocab_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)


class TwoStageModule(L.LightningModule):
    """A two-stage regime: ``first`` trains the model, ``second`` adds a ``gate`` parameter (a change of
    structure, like a conversion) and trains everything. Logs ``train/loss``, ``val/loss``, ``test/loss``.

    ``started`` records the ``start_stage`` calls; ``fitted`` the stages ``trainer.fit`` ran; ``instances`` every
    module built (so tests can look at the one run.py built).
    """

    instances: list["TwoStageModule"] = []

    def __init__(self, model: nn.Module, first_steps: int = 6, second_steps: int = 6, lr: float = 0.05) -> None:
        super().__init__()
        TwoStageModule.instances.append(self)
        self.model = model
        self.lr = lr
        self.stages = [Stage("first", max_steps=first_steps), Stage("second", max_steps=second_steps)]
        self.stage: str | None = None
        self.gate: nn.Parameter | None = None
        self.started: list[str] = []
        self.fitted: list[str] = []

    def start_stage(self, name: str) -> None:
        self.started.append(name)
        self.stage = name
        if name == "second" and self.gate is None:
            self.gate = nn.Parameter(torch.ones(()))

    def on_fit_start(self) -> None:
        self.fitted.append(self.stage)

    def _loss(self, batch) -> Tensor:
        logits = self.model(batch["input_ids"])
        if self.gate is not None:
            logits = logits * self.gate
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())

    def training_step(self, batch, batch_idx) -> Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/loss", self._loss(batch), on_epoch=True, sync_dist=True)

    def test_step(self, batch, batch_idx) -> None:
        self.log("test/loss", self._loss(batch), on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class WaitForFile(L.Callback):
    """At optimizer step ``step``, wait until the file ``path`` exists (at most ``timeout_s``): holds a run in the
    middle of training while a test does something beside it."""

    def __init__(self, step: int, path: str, timeout_s: float = 120.0) -> None:
        self.step, self.path, self.timeout_s = step, path, timeout_s
        self.waited = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import time
        from pathlib import Path

        if self.waited or trainer.global_step < self.step:
            return
        self.waited = True
        deadline = time.monotonic() + self.timeout_s
        while not Path(self.path).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
