"""Stage 2 (LoRA through peft) and save/load round trips of converted models."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conversion_models import FACTORIES, batch, outputs, tiny_bert, tiny_gpt2, tiny_llama
from hedgehog.conversion import (
    FEATURE_MAPS_FILE,
    apply_lora,
    conversion_info,
    convert,
    converted_layers,
    feature_map_parameters,
    linear_module_names,
    load_converted,
    save_converted,
)


def perturb_feature_maps(model, seed=5):
    """Move the feature maps off their init so that a load that forgot them would be caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in feature_map_parameters(model):
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def train_lora_a_bit(peft_model, ids, mask):
    """A few steps of next-token / classification loss so that the adapters are non-zero."""
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    peft_model.train()
    for _ in range(3):
        out = peft_model(input_ids=ids, attention_mask=mask)
        loss = out.logits.float().pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    peft_model.eval()


def test_lora_target_matching_nothing_lists_linear_modules():
    model = convert(tiny_llama(), "hedgehog")
    with pytest.raises(ValueError, match=r"\['query'\] match no linear module.*'k_proj'.*'q_proj'"):
        apply_lora(model, target_modules=["q_proj", "query"])


def test_lora_trains_adapters_and_feature_maps_only():
    model = convert(tiny_llama(), "hedgehog")
    peft_model = apply_lora(model, target_modules=["q_proj", "v_proj"], r=4, alpha=8)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".hedgehog.feature_map_" in n for n in trainable)
    assert any(".hedgehog.feature_map_" in n for n in trainable)
    assert sum("lora_A" in n for n in trainable) == 4  # 2 layers x (q_proj, v_proj)
    frozen_maps = apply_lora(convert(tiny_llama(), "hedgehog"), ["o_proj"], train_feature_maps=False)
    assert not any(p.requires_grad for p in feature_map_parameters(frozen_maps))


def test_lora_keeps_a_classification_head_trainable():
    peft_model = apply_lora(convert(tiny_bert(), "hedgehog"), ["query", "value"], trainable_modules=["classifier"])
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any(n.endswith("classifier.weight") for n in trainable)
    with pytest.raises(ValueError, match="trainable module 'head'"):
        apply_lora(convert(tiny_bert(), "hedgehog"), ["query"], trainable_modules=["head"])


def test_linear_module_names_include_gpt2_conv1d():
    names = linear_module_names(tiny_gpt2())
    assert "transformer.h.0.attn.c_attn" in names and "lm_head" in names


@pytest.mark.parametrize("family,attention", [("llama", "hedgehog"), ("bert", "performer"), ("gpt2", "t2r")])
def test_save_load_round_trip(tmp_path, family, attention):
    model = convert(FACTORIES[family](), attention)
    perturb_feature_maps(model)
    ids, mask = batch(right_pad=2) if family == "bert" else batch(left_pad=2)
    expected = outputs(model, ids, mask)
    save_converted(model, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["hedgehog"] == {"attention": attention, "options": {}}
    assert (tmp_path / FEATURE_MAPS_FILE).is_file()
    loaded = load_converted(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    assert conversion_info(loaded) == conversion_info(model)
    assert torch.equal(outputs(loaded, ids, mask), expected)


def test_save_load_round_trip_with_options_and_generation(tmp_path):
    model = convert(tiny_llama(), "hedgehog", feature_dim=4, init="random")
    save_converted(model, tmp_path)
    loaded = load_converted(tmp_path)
    assert converted_layers(loaded)[0].feature_map_q.weight.shape == (6, 8, 4)
    ids, mask = batch(left_pad=1)
    kwargs = dict(max_new_tokens=4, do_sample=False)
    assert torch.equal(
        loaded.generate(input_ids=ids, attention_mask=mask, **kwargs),
        model.generate(input_ids=ids, attention_mask=mask, **kwargs),
    )


@pytest.mark.parametrize("family,targets", [("llama", ["q_proj", "v_proj", "o_proj"]), ("gpt2", ["c_attn", "c_proj"])])
def test_lora_model_round_trip_merges_adapters(tmp_path, family, targets):
    model = convert(FACTORIES[family](), "hedgehog")
    perturb_feature_maps(model)
    ids, mask = batch(left_pad=2)
    peft_model = apply_lora(model, target_modules=targets, r=4, alpha=8)
    train_lora_a_bit(peft_model, ids, mask)
    expected = outputs(peft_model, ids, mask)
    assert not torch.allclose(expected, outputs(FACTORIES[family](), ids, mask), atol=1e-3)
    save_converted(peft_model, tmp_path)
    loaded = load_converted(tmp_path)
    assert not any("lora" in k for k in loaded.state_dict())
    real = mask.bool()
    assert torch.allclose(outputs(loaded, ids, mask)[real], expected[real], atol=1e-4)
    assert torch.equal(outputs(peft_model, ids, mask), expected)  # the live model is untouched


def test_softmax_arm_round_trip_and_plain_folder(tmp_path):
    model = convert(tiny_llama(), "softmax")
    ids, mask = batch(left_pad=2)
    save_converted(model, tmp_path)
    loaded = load_converted(tmp_path)
    assert conversion_info(loaded)["attention"] == "softmax"
    assert torch.equal(outputs(loaded, ids, mask), outputs(model, ids, mask))
    # the folder is an ordinary Hugging Face checkpoint
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(outputs(plain, ids, mask), outputs(model, ids, mask))


def test_save_and_load_errors(tmp_path):
    with pytest.raises(ValueError, match="is not converted"):
        save_converted(tiny_bert(), tmp_path / "a")
    tiny_bert().save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="no 'hedgehog' section"):
        load_converted(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_converted(tmp_path / "missing")
    save_converted(convert(tiny_bert(), "hedgehog"), tmp_path / "b")
    (tmp_path / "b" / FEATURE_MAPS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=FEATURE_MAPS_FILE):
        load_converted(tmp_path / "b")
