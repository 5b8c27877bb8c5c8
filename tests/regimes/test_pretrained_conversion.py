"""PretrainedConversionModule through Lightning on a tiny random Llama (GQA, RoPE): WikiText and SAMSum."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from hedgehog.conversion import feature_map_parameters, is_converted
from hedgehog.data.samsum import SAMSumDataModule
from hedgehog.data.text import TextLMDataModule
from hedgehog.regimes.pretrained_conversion import PretrainedConversionModule
from regime_support import changed, run_stages, snapshot, tiny_llama, trainer_for

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def text_data(data_dir, tokenizer):
    wiki = data_dir / "wikitext"
    return TextLMDataModule(tokenizer, wiki / "wiki.valid.tokens", wiki / "wiki.test.raw", seq_len=32, batch_size=4,
                            max_train_blocks=32, max_eval_blocks=6)


def samsum_data(data_dir, tokenizer):
    return SAMSumDataModule(data_dir, tokenizer, max_length=96, max_new_tokens=6, batch_size=4, max_train_samples=16,
                            max_eval_samples=5)


def module_for(model, attention="hedgehog", **kw):
    settings = dict(distill_steps=3, finetune_steps=3, distill_lr=1e-2, finetune_lr=1e-3, warmup_ratio=0.0, lora=LORA)
    settings.update(kw)
    return PretrainedConversionModule(model, attention={"name": attention, "options": {}}, **settings)


def corpus_ppl(model, loader) -> float:
    nll, n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"]).logits
            nll += F.cross_entropy(logits.flatten(0, 1).double(), batch["labels"].flatten(), reduction="sum").item()
            n += batch["labels"].numel()
    return math.exp(nll / n)


def test_distill_then_lora_on_text_reports_corpus_perplexity(data_dir, decoder_wordpiece, tmp_path):
    dm = text_data(data_dir, decoder_wordpiece)
    module = module_for(tiny_llama(decoder_wordpiece))
    assert [(s.name, s.max_steps) for s in module.stages] == [("distill", 3), ("finetune", 3)]

    module.start_stage("distill")
    fmaps = {id(p) for p in feature_map_parameters(module.model)}
    assert fmaps and all((id(p) in fmaps) == p.requires_grad for p in module.model.parameters())
    out = run_stages(module, dm, tmp_path)
    assert is_converted(module.model) and hasattr(module.model, "peft_config")
    assert {"val/loss", "val/kl"} <= set(out["distill"]) and {"val/loss", "val/ppl"} <= set(out["finetune"])

    test = out["test"]
    assert test["test/ppl"] == pytest.approx(math.exp(test["test/loss"]), rel=1e-5)
    module.model.eval()
    assert test["test/ppl"] == pytest.approx(corpus_ppl(module.model, dm.test_dataloader()), rel=1e-4)


def test_lora_finetune_moves_only_adapters_and_feature_maps(data_dir, decoder_wordpiece, tmp_path):
    dm = text_data(data_dir, decoder_wordpiece)
    module = module_for(tiny_llama(decoder_wordpiece), distill_steps=0)
    module.start_stage("distill")
    module.start_stage("finetune")
    before = snapshot(module.model)
    trainer_for(tmp_path, 3).fit(module, datamodule=dm)
    fmaps = {n for n, p in module.model.named_parameters() if id(p) in {id(q) for q in feature_map_parameters(module.model)}}
    moved = changed(before, module.model)
    assert any("lora_" in n for n in moved) and moved <= {n for n in moved if "lora_" in n} | fmaps


def test_samsum_greedy_generation_and_rouge(data_dir, decoder_wordpiece, tmp_path):
    dm = samsum_data(data_dir, decoder_wordpiece)
    module = module_for(tiny_llama(decoder_wordpiece), distill_steps=2, finetune_steps=2)
    test = run_stages(module, dm, tmp_path)["test"]
    assert set(test) >= {"test/rouge1", "test/rouge2", "test/rougeL", "test/rougeLsum"}
    assert all(0.0 <= test[k] <= 100.0 for k in ("test/rouge1", "test/rouge2", "test/rougeL"))
    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {"id", "prediction", "reference"} <= set(rows[0])
    assert [r["reference"] for r in rows] == [r["summary"] for r in dm.load_rows()["test"]]
    assert all(isinstance(r["prediction"], str) for r in rows) and any(r["prediction"] for r in rows)


def test_zero_shot_arm_changes_nothing(data_dir, decoder_wordpiece, tmp_path):
    dm = text_data(data_dir, decoder_wordpiece)
    model = tiny_llama(decoder_wordpiece)
    base_ppl = corpus_ppl(model.eval(), dm.test_dataloader())
    before = snapshot(model)
    module = module_for(model, attention="softmax", distill_steps=0, finetune_steps=0)
    assert [s.max_steps for s in module.stages] == [0, 0]
    test = run_stages(module, dm, tmp_path)["test"]
    assert not is_converted(module.model) and not hasattr(module.model, "peft_config")
    assert not changed(before, module.model)
    assert test["test/ppl"] == pytest.approx(base_ppl, rel=1e-4)


def test_softmax_lora_arm_keeps_softmax_and_trains_adapters(data_dir, decoder_wordpiece, tmp_path):
    dm = samsum_data(data_dir, decoder_wordpiece)
    module = module_for(tiny_llama(decoder_wordpiece), attention="softmax", distill_steps=5, finetune_steps=2)
    assert [s.max_steps for s in module.stages] == [0, 2]  # softmax has nothing to distil
    test = run_stages(module, dm, tmp_path)["test"]
    assert not is_converted(module.model) and hasattr(module.model, "peft_config")
    assert "test/rouge1" in test


def test_bad_lora_target_fails_before_training(decoder_wordpiece):
    with pytest.raises(ValueError, match=r"'c_attn' matches no linear module .*'q_proj'"):
        module_for(tiny_llama(decoder_wordpiece), lora={"target_modules": ["c_attn"]})


def test_no_lora_means_full_finetuning(decoder_wordpiece):
    module = module_for(tiny_llama(decoder_wordpiece), lora=None)
    module.start_stage("distill")
    module.start_stage("finetune")
    assert module.plan().trainable == "all" and not hasattr(module.model, "peft_config")
    assert all(p.requires_grad for p in module.model.parameters())
