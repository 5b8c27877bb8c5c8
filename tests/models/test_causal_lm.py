"""CausalLMModule: lr schedule, optimiser groups, metric aggregation, a short Lightning fit + test."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from hedgehog.data.mqar import MQARDataModule
from hedgehog.models.gpt import GPT
from hedgehog.regimes.causal_lm import CausalLMModule, warmup_cosine


def trainer(**kwargs) -> L.Trainer:
    options = dict(
        accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return L.Trainer(**options)


def test_warmup_cosine_schedule():
    w, total, r = 10, 110, 0.1
    assert warmup_cosine(0, w, total, r) == pytest.approx(1 / 11)
    assert warmup_cosine(9, w, total, r) == pytest.approx(10 / 11)
    assert warmup_cosine(10, w, total, r) == pytest.approx(1.0)
    assert warmup_cosine(60, w, total, r) == pytest.approx(r + (1 - r) * 0.5)  # half way: cos = 0
    assert warmup_cosine(110, w, total, r) == pytest.approx(r)
    assert warmup_cosine(500, w, total, r) == pytest.approx(r)  # stays at the floor
    after = [warmup_cosine(s, w, total, r) for s in range(w, total + 1)]
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_fit_and_test_on_mqar(tmp_path):
    torch.manual_seed(0)
    data = MQARDataModule(
        vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=80, num_val=24, num_test=40, batch_size=16
    )
    model = GPT(data.vocab_size, data.seq_len, d_model=32, n_layers=2, n_heads=2, attention={"name": "hedgehog"})
    module = CausalLMModule(model, lr=1e-3, warmup_steps=2, min_lr_ratio=0.1)
    logger = CSVLogger(tmp_path, name="run")
    run = trainer(logger=logger, log_every_n_steps=1, limit_val_batches=1, val_check_interval=5)
    run.fit(module, data)
    fitted = run.callback_metrics
    for key in ("train/loss", "train/lr", "val/loss", "val/ppl", "val/acc"):
        assert torch.isfinite(fitted[key]), key
    assert fitted["val/ppl"].item() == pytest.approx(math.exp(fitted["val/loss"].item()), rel=1e-5)
    # after 5 steps of warmup (2) + cosine (3): the schedule's value at step 4 (the lr used by the last step)
    assert fitted["train/lr"].item() == pytest.approx(1e-3 * warmup_cosine(4, 2, 5, 0.1), rel=1e-5)
    hparams = (tmp_path / "run" / "version_0" / "hparams.yaml").read_text()
    assert "attention: hedgehog" in hparams and "lr: 0.001" in hparams
    assert module.hparams.lr == 1e-3 and "model" not in module.hparams

    # weight decay only on >= 2-D weights; every trainable parameter in exactly one group
    decay, no_decay = run.optimizers[0].param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))

    (result,) = run.test(module, data, verbose=False)
    assert set(result) == {"test/loss", "test/ppl", "test/acc"}
    assert all(math.isfinite(v) for v in result.values())
    assert 0.0 <= result["test/acc"] <= 1.0

    # the epoch metrics are token-weighted over all batches (40 examples: batches of 16, 16, 8)
    nll, correct, tokens = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for batch in data.test_dataloader():
            logits = model(batch["input_ids"])
            mask = batch["labels"] != -100
            nll += F.cross_entropy(logits[mask], batch["labels"][mask], reduction="sum").item()
            correct += (logits.argmax(-1)[mask] == batch["labels"][mask]).sum().item()
            tokens += mask.sum().item()
    assert result["test/loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert result["test/acc"] == pytest.approx(correct / tokens)

    # a checkpoint loads back with only the model passed in
    path = tmp_path / "last.ckpt"
    run.save_checkpoint(path)
    fresh = GPT(data.vocab_size, data.seq_len, d_model=32, n_layers=2, n_heads=2, attention={"name": "hedgehog"})
    loaded = CausalLMModule.load_from_checkpoint(path, model=fresh)
    assert loaded.hparams.warmup_steps == 2
    torch.testing.assert_close(fresh.blocks[0].attn.feature_map_q.weight, model.blocks[0].attn.feature_map_q.weight)


class VariableLabels(torch.utils.data.Dataset):
    """Examples with very different numbers of labelled tokens, so a mean of batch means would be wrong."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.input_ids = torch.randint(20, (6, 8), generator=g)
        self.labels = torch.randint(20, (6, 8), generator=g)
        self.labels[:3, 1:] = -100  # first batch: 1 label per example; second batch: 8 per example

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def test_validation_metrics_are_token_weighted():
    torch.manual_seed(0)
    model = GPT(20, 8, d_model=16, n_layers=1, n_heads=2)
    module = CausalLMModule(model)
    (result,) = trainer().validate(module, DataLoader(VariableLabels(), batch_size=3), verbose=False)
    data = VariableLabels()
    with torch.no_grad():
        logits = model(data.input_ids)
    expected = F.cross_entropy(logits.reshape(-1, 20), data.labels.reshape(-1), ignore_index=-100)
    assert result["val/loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert result["val/ppl"] == pytest.approx(math.exp(expected.item()), rel=1e-5)


def test_bad_hyperparameters_are_clear_errors():
    model = GPT(20, 8, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match="lr must be > 0"):
        CausalLMModule(model, lr=0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        CausalLMModule(model, min_lr_ratio=2.0)
    with pytest.raises(ValueError, match="betas"):
        CausalLMModule(model, betas=(0.9,))
