"""Finetuned-conversion (paper Sec. 5.3, Table 6): make a task-finetuned BERT linear on GLUE.

Stages (``hedgehog.regimes.stages`` protocol; ``run.py`` fits them in order):

1. ``finetune``: finetune the softmax model on the task (cross-entropy; MSE for STS-B). 0 steps when
   ``teacher_checkpoint`` loads an already finetuned model, or when the model given is finetuned already.
2. ``distill``: convert every attention to ``attention`` and train only the feature maps so the linear
   attention weights match the frozen softmax teacher's (soft cross-entropy, summed over layers). Skipped for
   softmax and for feature maps without parameters.
3. ``finetune_linear``: finetune the converted model on the task in its linear form (all weights, or LoRA
   adapters when ``lora`` is given). For softmax, the control arm: with ``match_linear_budget`` (default) the
   teacher keeps finetuning for ``distill_steps + finetune_linear_steps`` steps, the steps a linear arm trains
   after the teacher, so that every arm of a comparison trains the same steps; without it, skipped.

Metrics: ``train/loss`` and ``val/loss`` are the stage's objective; task stages add ``val/<metric>`` and
``val/score``, the distill stage ``val/teacher_entropy``, ``val/student_entropy`` and ``val/kl`` (layer means).
``run.py`` prefixes logged metrics with the stage (``finetune/val/score``) and keeps each stage's final
validation in ``results.json``. The test reports ``test/<metric>``, ``test/score`` (GLUE headline x100) and
``test/loss`` of the final model beside ``teacher/test/<metric>`` and ``teacher/test/score`` of the softmax
teacher, measured once before the first converted stage trains (the converted model in distillation mode passes
the softmax outputs on, so its predictions are the teacher's).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import CatMetric, MeanMetric

from hedgehog.metrics.glue import glue_metric_names, glue_metrics, glue_score, predictions_from_logits
from hedgehog.regimes.conversion_stages import ConversionModule, StagePlan, reset_metrics

log = logging.getLogger(__name__)


class FinetunedConversionModule(ConversionModule):
    """finetune (softmax) -> distill (feature maps) -> finetune_linear (all or LoRA) on one GLUE task.

    model: ``AutoModelForSequenceClassification``-style model (``num_labels`` outputs; 1 = regression).
    task: GLUE task name (metrics and loss type).
    attention: {name, options} of the target attention.
    finetune_steps / distill_steps / finetune_linear_steps and the matching ``*_lr``: per-stage budget.
    teacher_checkpoint: hub name or folder of a finetuned model of the same architecture; its weights are
        loaded now and the ``finetune`` stage is skipped.
    match_linear_budget: softmax only: continue finetuning the teacher for as many steps as a linear arm's
        ``distill`` + ``finetune_linear`` stages (the equal-budget control); False stops at the teacher.
    Other arguments: see ``ConversionModule``.
    """

    def __init__(
        self,
        model: nn.Module,
        task: str,
        attention: Mapping[str, Any] | str = "hedgehog",
        finetune_steps: int = 1000,
        distill_steps: int = 500,
        finetune_linear_steps: int = 1000,
        finetune_lr: float = 2e-5,
        distill_lr: float = 1e-2,
        finetune_linear_lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
        distill_loss: Mapping[str, Any] | None = None,
        lora: Mapping[str, Any] | None = None,
        finetune_feature_maps: bool = True,
        distilled_from: str | None = None,
        teacher_checkpoint: str | None = None,
        match_linear_budget: bool = True,
    ) -> None:
        super().__init__(
            model, attention, weight_decay=weight_decay, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio,
            lora=lora, distill_loss=distill_loss, finetune_feature_maps=finetune_feature_maps,
            distilled_from=distilled_from,
        )
        self.save_hyperparameters(ignore=["model"])
        self.task = task.lower().replace("-", "").replace("_", "")
        self.metric_names = glue_metric_names(self.task)
        self.num_labels = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
        self.is_regression = self.task == "stsb"
        if self.num_labels and (self.num_labels == 1) != self.is_regression:
            raise ValueError(
                f"model has num_labels={self.num_labels} but GLUE {self.task} needs "
                f"{1 if self.is_regression else '>= 2'}; build the model with the DataModule's num_labels"
            )
        if teacher_checkpoint is not None:
            self.load_teacher(teacher_checkpoint)
            if finetune_steps:
                log.info("teacher_checkpoint given: skipping the finetune stage (%d steps)", finetune_steps)
            finetune_steps = 0
        softmax = self.attention_name == "softmax"
        linear_steps = finetune_linear_steps
        if softmax:  # the control arm: the teacher trains on for a linear arm's steps after the teacher, or stops
            linear_steps = distill_steps + finetune_linear_steps if match_linear_budget else 0
        self.set_plans([
            StagePlan("finetune", "task", converted=False, trainable="all", steps=finetune_steps, lr=finetune_lr),
            StagePlan("distill", "distill", converted=True, trainable="feature_maps", steps=distill_steps,
                      lr=distill_lr),
            StagePlan("finetune_linear", "task", converted=True, trainable="lora" if lora else "all",
                      steps=linear_steps, lr=finetune_linear_lr),
        ])
        self.eval_loss = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_preds = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})
        self.eval_labels = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})

    def load_teacher(self, name_or_path: str) -> None:
        """Load the weights of a finetuned checkpoint (hub name or local folder) into ``self.model``."""
        from hedgehog.models.pretrained import load_pretrained

        teacher = load_pretrained(name_or_path, task="sequence_classification", num_labels=self.num_labels or None)
        missing, unexpected = self.model.load_state_dict(teacher.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"teacher_checkpoint {name_or_path!r} does not fit the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )

    # --- loss and predictions -----------------------------------------------------------------------------
    def logits(self, batch: Mapping[str, Any]) -> Tensor:
        return self.model(**self.model_inputs(batch)).logits  # [B, num_labels]

    def loss_from_logits(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.is_regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def task_loss(self, batch: Mapping[str, Any]) -> Tensor:
        return self.loss_from_logits(self.logits(batch), batch["labels"])

    def predictions(self, logits: Tensor) -> Tensor:
        """[B] predicted class ids (or scores for STS-B)."""
        return logits.squeeze(-1).float() if self.is_regression else logits.argmax(-1)

    def task_metrics(self, preds: Tensor, labels: Tensor) -> dict[str, float]:
        metrics = glue_metrics(self.task, preds.cpu().numpy(), labels.cpu().numpy())
        return {**metrics, "score": glue_score(self.task, metrics)}

    # --- evaluation ---------------------------------------------------------------------------------------
    def _eval_step(self, split: str, batch: Mapping[str, Any]) -> None:
        n = len(batch["input_ids"])
        if split == "val" and self.in_distill_stage():
            self.distill_validation_step(batch)
            return
        logits = self.logits(batch)
        self.eval_loss[split].update(self.loss_from_logits(logits, batch["labels"]).detach(), n)
        self.eval_preds[split].update(self.predictions(logits).float())
        self.eval_labels[split].update(batch["labels"].float())

    def _eval_epoch_end(self, split: str) -> dict[str, float]:
        if split == "val" and (distill := self.distill_validation_metrics()):
            return distill
        out = {"loss": float(self.eval_loss[split].compute())}
        preds, labels = self.eval_preds[split].compute(), self.eval_labels[split].compute()  # synced over ranks
        out.update(self.task_metrics(preds, labels))
        reset_metrics(self.eval_loss[split], self.eval_preds[split], self.eval_labels[split])
        return out

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self.log_validation(self._eval_epoch_end("val"))

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_start(self) -> None:
        super().on_test_start()
        self.set_distillation(False)  # the final model answers in its converted (linear) form

    def on_test_epoch_end(self) -> None:
        metrics = self._eval_epoch_end("test")
        final = {f"test/{k}": v for k, v in metrics.items()}
        if not any(k.startswith("teacher/") for k in self.reported_metrics) and not self.converted:
            # never converted (softmax arm): the final model is the teacher
            self.reported_metrics.update({f"teacher/test/{k}": v for k, v in metrics.items() if k != "loss"})
        self.log_dict({k: torch.tensor(v) for k, v in final.items()})
        self.log_recorded()

    @torch.no_grad()
    def evaluate_teacher(self) -> dict[str, float]:
        """Test-split metrics of the softmax teacher, from the converted model in distillation mode."""
        from hedgehog.conversion import pop_distillation_loss

        loader = self.trainer.datamodule.test_dataloader()
        was_training = self.model.training
        self.model.eval()
        self.set_distillation(True)
        preds, labels = [], []
        with self.trainer.precision_plugin.forward_context():
            for batch in loader:
                batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
                preds.append(self.predictions(self.logits(batch)).float().cpu())
                labels.append(batch["labels"].float().cpu())
                pop_distillation_loss(self.model)  # discard: only the outputs matter here
        self.set_distillation(self.plan().objective == "distill")
        self.model.train(was_training)
        metrics = self.task_metrics(torch.cat(preds), torch.cat(labels))
        return {f"teacher/test/{k}": v for k, v in metrics.items()}

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.trainer.datamodule is None:
            log.warning("no datamodule given to fit: the softmax teacher's test score is not recorded")
            return
        if self.converted and not any(k.startswith("teacher/") for k in self.reported_metrics):
            teacher = self.evaluate_teacher()
            log.info("softmax teacher on the test split: %s", teacher)
            self.record(teacher)
