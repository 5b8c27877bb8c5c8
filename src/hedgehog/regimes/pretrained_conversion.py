"""Pretrained-conversion (paper Sec. 5.4, Tables 7-8): make a pretrained causal LM linear, then finetune it.

Stages (``hedgehog.regimes.stages`` protocol; ``run.py`` fits them in order):

1. ``distill``: convert every attention to ``attention`` and train only the feature maps on the DataModule's
   training text so linear attention weights match the frozen softmax teacher's. Skipped for softmax and for
   feature maps without parameters.
2. ``finetune``: next-token finetuning of the converted model in its linear form, with LoRA adapters by default
   (``lora`` = null trains every weight). Loss on labelled tokens only (SAMSum: the summary).

Test: WikiText-style batches (``labels``) give ``test/loss`` and ``test/ppl`` (token-weighted corpus
perplexity); SAMSum batches (left-padded prompts + ``references``) are answered by greedy
``model.generate`` (``max_new_tokens``; the converted model decodes with its constant-size recurrent state)
and scored with ROUGE-1/2/L(sum) F-measure x100 (``test/rouge1``...); the generations are written to
``<run dir>/generations.jsonl``. ``train/loss`` and ``val/loss`` are the stage's objective; the distill stage adds
``val/teacher_entropy``, ``val/student_entropy``, ``val/kl``, the finetune stage ``val/ppl`` (``run.py`` prefixes
them with the stage name in the loggers).

Comparison arms in the same regime: the base model's zero-shot score is ``attention=softmax`` with 0 steps in
both stages (no conversion, no training); the softmax + LoRA arm is ``attention=softmax`` with finetune steps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import SumMetric

from hedgehog.data.pretrained_tokenizer import pad_id
from hedgehog.metrics.perplexity import IGNORE_INDEX, perplexity
from hedgehog.metrics.rouge import rouge
from hedgehog.regimes.conversion_stages import ConversionModule, StagePlan, reset_metrics

log = logging.getLogger(__name__)

DEFAULT_LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


class PretrainedConversionModule(ConversionModule):
    """distill (feature maps) -> finetune (LoRA by default) of a pretrained causal LM; perplexity or ROUGE test.

    model: ``AutoModelForCausalLM``-style model (``logits [B, N, V]``, ``generate``).
    attention: {name, options} of the target attention (``softmax`` for the comparison arms).
    distill_steps / finetune_steps, distill_lr / finetune_lr: per-stage budget.
    lora: {r, alpha, dropout, target_modules} or null for full finetuning.
    max_new_tokens: generation budget for SAMSum; null takes the DataModule's.
    rouge_use_stemmer: Porter stemming in ROUGE (see ``hedgehog.metrics.rouge``).
    Other arguments: see ``ConversionModule``.
    """

    def __init__(
        self,
        model: nn.Module,
        attention: Mapping[str, Any] | str = "hedgehog",
        distill_steps: int = 500,
        finetune_steps: int = 1000,
        distill_lr: float = 1e-2,
        finetune_lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
        distill_loss: Mapping[str, Any] | None = None,
        lora: Mapping[str, Any] | None = DEFAULT_LORA,
        finetune_feature_maps: bool = True,
        distilled_from: str | None = None,
        max_new_tokens: int | None = None,
        rouge_use_stemmer: bool = True,
    ) -> None:
        super().__init__(
            model, attention, weight_decay=weight_decay, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio,
            lora=lora, distill_loss=distill_loss, finetune_feature_maps=finetune_feature_maps,
            distilled_from=distilled_from,
        )
        self.save_hyperparameters(ignore=["model"])
        self.max_new_tokens = max_new_tokens
        self.rouge_use_stemmer = rouge_use_stemmer
        self.set_plans([
            StagePlan("distill", "distill", converted=True, trainable="feature_maps", steps=distill_steps,
                      lr=distill_lr),
            StagePlan("finetune", "task", converted=True, trainable="lora" if lora else "all",
                      steps=finetune_steps, lr=finetune_lr),
        ])
        self.sums = nn.ModuleDict(
            {s: nn.ModuleDict({"nll": SumMetric(), "tokens": SumMetric()}) for s in ("val", "test")}
        )
        self.generations: list[dict[str, str]] = []

    # --- loss ---------------------------------------------------------------------------------------------
    def token_nll(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """Summed next-token NLL (fp32) over labelled positions and their count."""
        logits = self.model(**self.model_inputs(batch)).logits  # [B, N, V]
        labels = batch["labels"]  # [B, N], aligned with the inputs
        nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return nll, (labels != IGNORE_INDEX).sum()

    def task_loss(self, batch: Mapping[str, Any]) -> Tensor:
        nll, tokens = self.token_nll(batch)
        return nll / tokens.clamp(min=1)

    # --- validation ---------------------------------------------------------------------------------------
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        if self.in_distill_stage():
            self.distill_validation_step(batch)
            return
        nll, tokens = self.token_nll(batch)
        self.sums["val"]["nll"].update(nll.detach())
        self.sums["val"]["tokens"].update(tokens)

    def _ppl_metrics(self, split: str) -> dict[str, float]:
        sums = self.sums[split]
        nll, tokens = float(sums["nll"].compute()), int(sums["tokens"].compute())
        reset_metrics(*sums.values())
        return {"loss": nll / max(tokens, 1), "ppl": perplexity(nll, tokens)}

    def on_validation_epoch_end(self) -> None:
        self.log_validation(self.distill_validation_metrics() or self._ppl_metrics("val"))

    # --- test ---------------------------------------------------------------------------------------------
    def on_test_start(self) -> None:
        super().on_test_start()
        self.set_distillation(False)
        self.generations = []

    def generate(self, batch: Mapping[str, Any]) -> list[str]:
        """Greedy continuations of the left-padded prompts in ``batch``, decoded without special tokens."""
        tokenizer = self.trainer.datamodule.tokenizer
        max_new = self.max_new_tokens or getattr(self.trainer.datamodule, "max_new_tokens", None)
        if not max_new:
            raise ValueError("set regime.max_new_tokens (or the DataModule's max_new_tokens) for generation")
        prompt = batch["input_ids"]
        out = self.model.generate(
            input_ids=prompt, attention_mask=batch["attention_mask"], max_new_tokens=int(max_new),
            do_sample=False, pad_token_id=pad_id(tokenizer), eos_token_id=tokenizer.eos_token_id,
        )
        return [t.strip() for t in tokenizer.batch_decode(out[:, prompt.shape[1]:], skip_special_tokens=True)]

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        if "references" in batch:
            preds = self.generate(batch)
            self.generations.extend(
                {"id": i, "prediction": p, "reference": r} for i, p, r in zip(batch["ids"], preds, batch["references"])
            )
            return
        nll, tokens = self.token_nll(batch)
        self.sums["test"]["nll"].update(nll.detach())
        self.sums["test"]["tokens"].update(tokens)

    def _gathered_generations(self) -> list[dict[str, str]]:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self.generations)
            seen, rows = set(), []
            for part in parts:  # DistributedSampler repeats a few rows to even out ranks: keep each id once
                for row in part:
                    if row["id"] not in seen:
                        seen.add(row["id"])
                        rows.append(row)
            return rows
        return self.generations

    def on_test_epoch_end(self) -> None:
        if self.generations or self.sums["test"]["tokens"].update_count == 0:
            rows = self._gathered_generations()
            if not rows:
                raise RuntimeError("the test split produced no batches")
            scores = rouge([r["prediction"] for r in rows], [r["reference"] for r in rows],
                           use_stemmer=self.rouge_use_stemmer)
            metrics = {f"test/{k}": v for k, v in scores.items()}
            self.write_generations(rows)
        else:
            metrics = {f"test/{k}": v for k, v in self._ppl_metrics("test").items()}
        self.log_dict({k: torch.tensor(v) for k, v in metrics.items()})
        self.log_recorded()

    def write_generations(self, rows: list[dict[str, str]]) -> None:
        if self.trainer.is_global_zero:
            path = Path(self.trainer.default_root_dir) / "generations.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            log.info("wrote %d generations to %s", len(rows), path)
