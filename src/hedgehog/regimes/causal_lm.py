"""Train from scratch: causal language modelling (WikiText) and associative recall (MQAR).

Loss: mean token cross-entropy over labelled positions (``labels != -100``; labels are already aligned with
the inputs). Epoch metrics are token-weighted over all batches and all processes (torchmetrics states are
summed across ranks at ``compute``): ``loss = sum NLL / tokens``, ``ppl = exp(loss)``, ``acc = correct / tokens``
(for MQAR: recall accuracy at the query positions). Optimiser: AdamW, decoupled weight decay on >= 2-D
weights only; learning rate: linear warmup, then cosine decay to ``min_lr_ratio * lr`` at the last step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import SumMetric

IGNORE_INDEX = -100


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    ``(step + 1) / (warmup_steps + 1)`` during warmup, then cosine from 1 to ``min_lr_ratio`` at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CausalLMModule(L.LightningModule):
    """LightningModule for a model ``input_ids [B, N] -> logits [B, N, V]`` on batches with ``labels [B, N]``.

    Args:
        model: e.g. ``hedgehog.models.gpt.GPT`` (built by the caller).
        lr: peak learning rate. weight_decay: AdamW decoupled decay for >= 2-D weights. betas: AdamW betas.
        warmup_steps: linear warmup steps. min_lr_ratio: final lr / peak lr of the cosine decay.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 6e-4,
        weight_decay: float = 0.1,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"CausalLMModule: lr must be > 0, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"CausalLMModule: weight_decay must be >= 0, got {weight_decay!r}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"CausalLMModule: betas must be two numbers in [0, 1), got {betas!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"CausalLMModule: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"CausalLMModule: min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        self.save_hyperparameters(ignore=["model"])
        self.hparams["betas"] = tuple(float(b) for b in betas)
        self.model = model
        self.attention_name = str(getattr(model, "attention_name", "softmax"))
        # Token-weighted sums per evaluation stage; SumMetric all-reduces across processes on compute().
        self.sums = nn.ModuleDict(
            {
                stage: nn.ModuleDict({key: SumMetric() for key in ("nll", "correct", "tokens")})
                for stage in ("val", "test")
            }
        )

    def _log_attention_name(self) -> None:
        # A hyperparameter of its own so that W&B runs can be grouped by attention type. Not put in
        # self.hparams: load_from_checkpoint passes those back to __init__, which has no such argument.
        for logger in self.loggers:
            logger.log_hyperparams({"attention": self.attention_name})

    def on_fit_start(self) -> None:
        self._log_attention_name()

    def on_test_start(self) -> None:
        self._log_attention_name()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids, attention_mask=attention_mask)

    def _token_stats(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Summed NLL (fp32), correct argmax predictions and number of labelled tokens of one batch."""
        logits = self(batch["input_ids"], attention_mask=batch.get("attention_mask"))  # [B, N, V]
        labels = batch["labels"]  # [B, N]
        if logits.shape[:-1] != labels.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not line up")
        nll = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        mask = labels != IGNORE_INDEX
        correct = ((logits.argmax(dim=-1) == labels) & mask).sum()
        return nll, correct, mask.sum()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        nll, _, tokens = self._token_stats(batch)
        loss = nll / tokens.clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["labels"]))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, stage: str, batch: dict[str, Tensor]) -> None:
        nll, correct, tokens = self._token_stats(batch)
        sums = self.sums[stage]
        sums["nll"].update(nll.detach())
        sums["correct"].update(correct)
        sums["tokens"].update(tokens)

    def _eval_epoch_end(self, stage: str) -> None:
        sums = self.sums[stage]
        tokens = sums["tokens"].compute().clamp(min=1)  # synced over processes: identical on every rank
        loss = sums["nll"].compute() / tokens
        metrics = {
            f"{stage}/loss": loss,
            f"{stage}/ppl": torch.exp(loss.clamp(max=80.0)),  # exp(80) ~ 5.5e34: large but finite
            f"{stage}/acc": sums["correct"].compute() / tokens,
        }
        # Already identical on every rank; sync_dist only averages equal values (and silences Lightning's
        # epoch-level sync warning under DDP).
        self.log_dict(metrics, prog_bar=True, sync_dist=True)
        for metric in sums.values():
            metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]  # matmul weights and embeddings
        no_decay = [p for p in params if p.dim() < 2]  # biases, LayerNorm gains
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            betas=self.hparams.betas,
        )
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise ValueError("CausalLMModule: set trainer.max_steps or trainer.max_epochs; the lr schedule needs a length")
        total_steps = int(total_steps)
        warmup = self.hparams.warmup_steps
        if warmup >= total_steps:
            rank_zero_warn(
                f"warmup_steps={warmup} >= total optimiser steps={total_steps}: the learning rate never reaches "
                f"its peak; lower regime.warmup_steps"
            )
        ratio = self.hparams.min_lr_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total_steps, ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
