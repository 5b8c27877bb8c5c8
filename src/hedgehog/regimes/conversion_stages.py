"""Stage machinery shared by the two conversion regimes (finetuned- and pretrained-conversion).

A conversion run is a list of stages (``hedgehog.regimes.stages``), each one ``trainer.fit``:

- a *task* stage trains on the task loss, in the softmax form (``converted=False``) or the converted form;
- a *distill* stage runs the converted model in distillation mode: every converted layer computes the teacher's
  softmax weights from its own q, k, adds the paper's soft cross-entropy (Eq. 5, summed over layers) to a loss
  it holds, and passes the *softmax* output on, so later layers see the teacher's activations. Only feature-map
  parameters train.

``start_stage(name)`` brings the model into the stage's form (converting it, or wrapping it in LoRA adapters, the
first time a stage needs it; idempotent, so a resumed run can replay the stages it skips), switches distillation
mode and sets which parameters train; ``configure_optimizers`` then builds AdamW over exactly those parameters
with the stage's learning rate and a warmup + cosine schedule. A stage with 0 steps is skipped by ``run.py``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from hedgehog.attention.registry import is_trainable, parse_attention
from hedgehog.regimes.causal_lm import warmup_cosine
from hedgehog.regimes.stages import Stage

log = logging.getLogger(__name__)

TRAINABLE = ("all", "feature_maps", "lora")


@dataclass(frozen=True)
class StagePlan:
    """What one stage trains and how.

    objective: "task" (the task loss) or "distill" (attention distillation).
    converted: run in the converted (linear-attention) form.
    trainable: "all" parameters, only "feature_maps", or "lora" adapters (+ feature maps if asked).
    steps: optimizer steps (0 skips the stage). lr: peak learning rate.
    """

    name: str
    objective: str
    converted: bool
    trainable: str
    steps: int
    lr: float

    def __post_init__(self) -> None:
        if self.objective not in ("task", "distill"):
            raise ValueError(f"stage {self.name!r}: objective must be 'task' or 'distill', got {self.objective!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"stage {self.name!r}: trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"stage {self.name!r}: steps must be an int >= 0, got {self.steps!r}")
        if self.steps > 0 and not self.lr > 0:
            raise ValueError(f"stage {self.name!r}: lr must be > 0, got {self.lr!r}")


DISTILL_LOSS_TERMS = ("cross_entropy", "mse")


def distill_loss_weights(distill_loss: Mapping[str, Any] | None) -> dict[str, float]:
    """``{cross_entropy, mse}`` weights of the attention-transfer loss (``regime.distill_loss``); missing terms
    are 0, and None is the paper's loss (cross_entropy 1, mse 0)."""
    if distill_loss is None:
        return {"cross_entropy": 1.0, "mse": 0.0}
    unknown = set(distill_loss) - set(DISTILL_LOSS_TERMS)
    if unknown:
        raise ValueError(f"regime.distill_loss: unknown terms {sorted(unknown)}; valid: {', '.join(DISTILL_LOSS_TERMS)}")
    weights = {name: float(distill_loss.get(name, 0.0) or 0.0) for name in DISTILL_LOSS_TERMS}
    if any(w < 0 for w in weights.values()) or not any(weights.values()):
        raise ValueError(f"regime.distill_loss: weights must be >= 0 and not all 0, got {weights}")
    return weights


def distilled_checkpoint(path: str | Path) -> Path:
    """The Lightning checkpoint of a finished distill stage: ``path`` itself (a ``.ckpt`` file) or, for a run
    folder, ``<run>/checkpoints/distill/final.ckpt``."""
    path = Path(path).expanduser()
    candidate = path if path.is_file() else path / "checkpoints" / "distill" / "final.ckpt"
    if not candidate.is_file():
        raise FileNotFoundError(
            f"regime.distilled_from: {path} is neither a checkpoint file nor a run folder with "
            "checkpoints/distill/final.ckpt (a finished distill stage)"
        )
    return candidate


def _lora_settings(lora: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if lora is None:
        return None
    allowed = {"r", "alpha", "dropout", "target_modules", "trainable_modules"}
    unknown = set(lora) - allowed
    if unknown:
        raise ValueError(f"unknown lora options {sorted(unknown)}; valid: {sorted(allowed)}")
    if not lora.get("target_modules"):
        raise ValueError("lora.target_modules must name the modules to adapt, e.g. [q_proj, k_proj, v_proj, o_proj]")
    return {
        "target_modules": list(lora["target_modules"]),
        "r": int(lora.get("r", 8)),
        "alpha": float(lora.get("alpha", 16)),
        "dropout": float(lora.get("dropout", 0.0)),
        "trainable_modules": list(lora.get("trainable_modules") or []),
    }


def check_lora_targets(model: nn.Module, target_modules: list[str]) -> None:
    """ValueError now (before any training) if a LoRA target matches none of the model's linear modules."""
    from hedgehog.conversion import linear_module_names

    names = linear_module_names(model)
    for target in target_modules:
        if re.fullmatch(r"[\w.]+", target):
            hit = any(n == target or n.endswith("." + target) for n in names)
        else:  # a regular expression on the full module name
            hit = any(re.fullmatch(target, n) for n in names)
        if not hit:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise ValueError(
                f"lora.target_modules: {target!r} matches no linear module of {type(model).__name__}; "
                f"its linear modules are named {leaves}"
            )


def reset_metrics(*metrics: Metric) -> None:
    """Reset torchmetrics states outside inference mode: run.py follows each stage's fit with
    ``trainer.validate`` (inference mode), and states re-created there could not be updated in place by the next
    stage's validation inside ``fit`` (plain no-grad mode)."""
    with torch.inference_mode(False):
        for metric in metrics:
            metric.reset()


class ConversionModule(L.LightningModule):
    """Base LightningModule of the conversion regimes; subclasses define ``plans`` and the task loss/metrics.

    model: a Hugging Face model (built by the caller). attention: the ``attention`` config ({name, options}).
    weight_decay: AdamW decoupled decay on >= 2-D weights. warmup_ratio: warmup steps / stage steps.
    min_lr_ratio: final / peak lr of the cosine decay.
    lora: None or {r, alpha, dropout, target_modules, trainable_modules} (``hedgehog.conversion.apply_lora``;
        trainable_modules are trained in full beside the adapters, e.g. [classifier] for a fresh head).
    distill_loss: ``{cross_entropy, mse}`` weights of the attention-transfer loss (``distill_loss_weights``): the
        paper's soft cross-entropy on the weights, the MSE between attention outputs, or both.
    distilled_from: a run folder (or ``.ckpt``) whose finished distill stage gives the feature maps (and the
        hybrid's balance): the distill stage is then skipped, so several finetuning runs share one transfer.
    finetune_feature_maps: with LoRA, keep training the feature maps in the task stage.

    Each training stage records its throughput (``throughput/<stage>/tokens_per_s``: input tokens per second of
    training, validation excluded) and ``tokens/<stage>`` in ``results.json``; validation logs ``val/tokens``,
    the tokens the stage has trained on so far.
    """

    def __init__(
        self,
        model: nn.Module,
        attention: Mapping[str, Any] | str,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
        lora: Mapping[str, Any] | None = None,
        distill_loss: Mapping[str, Any] | None = None,
        finetune_feature_maps: bool = True,
        distilled_from: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.attention_name, self.attention_options = parse_attention(attention)
        self.learns_feature_maps = is_trainable(self.attention_name)
        if not 0 <= warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.min_lr_ratio = min_lr_ratio
        self.lora = _lora_settings(lora)
        self.distill_weights = distill_loss_weights(distill_loss)
        self.distilled_from = None if distilled_from is None else distilled_checkpoint(distilled_from)
        self.finetune_feature_maps = finetune_feature_maps
        self._tokens = 0
        self._tokens_per_step = 0
        self._clock: dict[str, float] = {}
        self.stage: str | None = None
        self.converted = False
        self.lora_applied = False
        # Metrics measured during training but reported with the test metrics, e.g. {"teacher/test/score": 71.2};
        # kept in checkpoints so a resumed run still reports them.
        self.reported_metrics: dict[str, float] = {}
        self._plans: list[StagePlan] = []
        self.distill_val = nn.ModuleDict(
            {k: MeanMetric() for k in ("loss", "teacher_entropy", "student_entropy", "kl")}
        )

    # --- the stage protocol -------------------------------------------------------------------------------
    def set_plans(self, plans: list[StagePlan]) -> None:
        """Subclasses call this once. Distillation is dropped (0 steps, with a warning) when there is nothing
        to learn: softmax attention, or a feature map without parameters (ELU, Taylor, Performer, cosFormer)."""
        checked = []
        for plan in plans:
            if plan.objective == "distill" and plan.steps > 0 and self.distilled_from is not None:
                log.info("feature maps come from %s: skipping the %r stage (%d steps)", self.distilled_from,
                         plan.name, plan.steps)
                plan = replace(plan, steps=0)
            if plan.objective == "distill" and plan.steps > 0 and not self.learns_feature_maps:
                log.warning(
                    "attention %r has no trainable feature map: skipping the %r stage (%d steps)",
                    self.attention_name, plan.name, plan.steps,
                )
                plan = replace(plan, steps=0)
            if plan.trainable == "lora":
                if self.lora is None:
                    raise ValueError(f"stage {plan.name!r} trains LoRA adapters but lora is null; give lora settings")
                if plan.steps > 0:
                    check_lora_targets(self.model, self.lora["target_modules"])
            checked.append(plan)
        names = [p.name for p in checked]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self._plans = checked

    @property
    def plans(self) -> list[StagePlan]:
        return list(self._plans)

    @property
    def stages(self) -> list[Stage]:
        return [Stage(p.name, max_steps=p.steps) for p in self._plans]

    def plan(self, name: str | None = None) -> StagePlan:
        name = self.stage if name is None else name
        for p in self._plans:
            if p.name == name:
                return p
        raise ValueError(f"unknown stage {name!r}; stages: {[p.name for p in self._plans]}")

    def start_stage(self, name: str) -> None:
        """Bring the model into stage ``name``'s form and set what trains (call before its ``trainer.fit``).

        A stage with 0 steps still converts the model (so later stages and the test see the converted form)
        but adds no LoRA adapters and changes no training state.
        """
        plan = self.plan(name)
        if plan.converted:
            self.ensure_converted()
        self.stage = name
        if plan.steps == 0:
            self.set_distillation(False)
            return
        if plan.trainable == "lora":
            self.ensure_lora()
        self.set_distillation(plan.objective == "distill")
        self.set_trainable(plan)
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info("stage %s: %s, %s, %d trainable parameters", name, plan.objective,
                 "converted" if self.converted else "softmax", n)

    def ensure_converted(self) -> None:
        if self.converted or self.attention_name == "softmax":
            return  # softmax "conversion" is the identity: keep the original modules
        from hedgehog.conversion import convert

        self.model = convert(self.model, attention=self.attention_name, **self.attention_options)
        self.converted = True
        if self.distilled_from is not None:
            self.load_distilled(self.distilled_from)

    def load_distilled(self, checkpoint: Path) -> None:
        """Load every converted layer's feature maps (and balance) from a finished distill stage's checkpoint."""
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        maps = {k[len("model."):]: v for k, v in state.items() if ".hedgehog." in k and k.startswith("model.")}
        expected = {k for k in self.model.state_dict() if ".hedgehog." in k}
        missing = sorted(expected - set(maps))
        if missing or not maps:
            raise ValueError(
                f"regime.distilled_from: {checkpoint} does not hold this model's {self.attention_name!r} feature maps "
                f"(missing {missing[:3]}); distil with the same model and attention options"
            )
        self.model.load_state_dict(maps, strict=False)
        log.info("loaded %d feature-map tensors from %s", len(maps), checkpoint)

    def ensure_lora(self) -> None:
        if self.lora_applied:
            return
        from hedgehog.conversion import apply_lora

        self.model = apply_lora(self.model, train_feature_maps=self.finetune_feature_maps, **self.lora)
        self.lora_applied = True

    def set_distillation(self, on: bool) -> None:
        if not self.converted:
            if on:
                raise RuntimeError("distillation needs a converted model; call ensure_converted() first")
            return
        from hedgehog.conversion import set_distillation

        # per-layer metrics (entropies, KL) need the N x N weights: validation turns them on for its own forwards
        set_distillation(self.model, on, cross_entropy=self.distill_weights["cross_entropy"],
                         mse_weight=self.distill_weights["mse"], metrics=False)

    def feature_map_parameters(self) -> list[nn.Parameter]:
        if not self.converted:
            return []
        from hedgehog.conversion import feature_map_parameters

        return list(feature_map_parameters(self.model))

    def set_trainable(self, plan: StagePlan) -> None:
        if plan.trainable == "all":
            for p in self.model.parameters():
                p.requires_grad_(True)
            # fixed random projections (Performer) are buffers, so "all" cannot unfreeze them
        elif plan.trainable == "feature_maps":
            from hedgehog.conversion import freeze_except_feature_maps

            freeze_except_feature_maps(self.model)
        # lora: apply_lora froze the base weights and made the adapters (+ feature maps if asked) trainable

    # --- training -----------------------------------------------------------------------------------------
    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The keys of ``batch`` the Hugging Face model takes (labels are scored here, not by the model)."""
        return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}

    def distill_loss(self, batch: Mapping[str, Any]) -> Tensor:
        """One distillation forward: the summed per-layer soft cross-entropy (+ MSE if weighted)."""
        from hedgehog.conversion import pop_distillation_loss

        self.model(**self.model_inputs(batch))
        return pop_distillation_loss(self.model)

    def distill_metrics(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Distillation loss plus teacher/student attention entropy and KL(teacher || student), layer means."""
        from hedgehog.conversion import distillation, teacher_student_metrics

        with distillation(self.model, metrics=True):
            loss = self.distill_loss(batch)
            per_layer = teacher_student_metrics(self.model)
        keys = ("teacher_entropy", "student_entropy", "kl")
        return loss, {k: sum(row[k] for row in per_layer) / len(per_layer) for k in keys}

    def task_loss(self, batch: Mapping[str, Any]) -> Tensor:
        raise NotImplementedError

    def in_distill_stage(self) -> bool:
        return self.stage is not None and self.plan().objective == "distill"

    def distill_validation_step(self, batch: Mapping[str, Any]) -> None:
        loss, metrics = self.distill_metrics(batch)
        n = len(batch["input_ids"])
        self.distill_val["loss"].update(loss.detach(), n)
        for k, v in metrics.items():
            self.distill_val[k].update(v, n)

    def distill_validation_metrics(self) -> dict[str, float]:
        """Epoch means of the distillation loss and attention entropies / KL (empty if none were recorded)."""
        if not self.distill_val["loss"].update_count:
            return {}
        out = {k: float(m.compute()) for k, m in self.distill_val.items()}
        reset_metrics(*self.distill_val.values())
        return out

    def log_validation(self, metrics: Mapping[str, float]) -> None:
        """Log ``val/<k>``. (run.py prefixes each stage's logged metrics with the stage name, ``distill/val/loss``,
        and keeps every stage's final validation metrics in results.json under ``stages``.)"""
        metrics = dict(metrics)
        if self._tokens_per_step:
            metrics["tokens"] = self.trainer.global_step * self._tokens_per_step
        self.log_dict({f"val/{k}": torch.tensor(float(v)) for k, v in metrics.items()})

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        n = len(batch["input_ids"])
        self._tokens += batch["input_ids"].numel()
        # train/loss is the stage's objective: the distillation loss in ``distill`` (logged as distill/train/loss)
        loss = self.distill_loss(batch) if self.plan().objective == "distill" else self.task_loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=n)
        return loss

    def configure_optimizers(self):
        if self.stage is None:
            raise RuntimeError("call start_stage(name) before fitting a conversion regime")
        plan = self.plan()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {plan.name!r} has no trainable parameters (trainable={plan.trainable!r})")
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=plan.lr,
        )
        total = self.trainer.estimated_stepping_batches
        total = int(total) if total != float("inf") else max(plan.steps, 1)
        warmup = int(self.warmup_ratio * total)
        ratio = self.min_lr_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- throughput -------------------------------------------------------------------------------------
    def _now(self) -> float:
        if torch.cuda.is_available() and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Mapping[str, Any], batch_idx: int) -> None:
        if not self._tokens_per_step:
            self._tokens_per_step = batch["input_ids"].numel() * self.trainer.accumulate_grad_batches
        if "start" not in self._clock:  # time from the end of the first step: compilation and warm-up excluded
            self._clock.update(start=self._now(), validation=0.0, tokens_at_start=self._tokens)

    def on_validation_start(self) -> None:
        if "start" in self._clock:
            self._clock["validation_start"] = self._now()

    def on_validation_end(self) -> None:
        if "validation_start" in self._clock:
            self._clock["validation"] += self._now() - self._clock.pop("validation_start")

    def on_train_end(self) -> None:
        if "start" not in self._clock or self.stage is None:
            return
        seconds = self._now() - self._clock["start"] - self._clock["validation"]
        tokens = self._tokens - self._clock["tokens_at_start"]
        if seconds > 0 and tokens > 0:
            self.record({f"throughput/{self.stage}/tokens_per_s": tokens / seconds,
                         f"tokens/{self.stage}": float(self.trainer.global_step * self._tokens_per_step)})
        self._clock = {}

    # --- bookkeeping --------------------------------------------------------------------------------------
    def _log_attention_name(self) -> None:
        for logger in self.loggers:
            logger.log_hyperparams({"attention": self.attention_name})

    def on_fit_start(self) -> None:
        self._log_attention_name()
        counts = getattr(self.trainer.datamodule, "token_counts", None)  # tokens per corpus source (text_mix)
        if callable(counts):
            self.record(counts())

    def on_train_start(self) -> None:
        # from_pretrained returns the model in eval mode; train with its dropout as in the original finetuning
        self.model.train()

    def on_test_start(self) -> None:
        self._log_attention_name()

    def record(self, metrics: Mapping[str, float]) -> None:
        """Keep ``metrics`` (checkpointed) to be logged with the test metrics, so results.json holds them."""
        self.reported_metrics.update({k: float(v) for k, v in metrics.items()})

    def log_recorded(self) -> None:
        """Log the kept metrics inside a test epoch so they reach ``trainer.callback_metrics``."""
        if self.reported_metrics:
            self.log_dict({k: torch.tensor(v) for k, v in self.reported_metrics.items()}, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["conversion"] = {
            "stage": self.stage, "converted": self.converted, "lora_applied": self.lora_applied,
            "reported_metrics": dict(self.reported_metrics),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Bring the model into the checkpoint's form (converted, LoRA) before its weights are loaded."""
        state = checkpoint.get("conversion", {})
        if state.get("converted"):
            self.ensure_converted()
        if state.get("lora_applied"):
            self.ensure_lora()
        self.reported_metrics.update(state.get("reported_metrics", {}))
