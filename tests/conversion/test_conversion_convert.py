"""convert(): control arm, every attention type on BERT / GPT-2 / Llama, padding, errors."""

import copy
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, MambaConfig, MambaForCausalLM

import hedgehog
from conversion_models import FACTORIES, LINEAR_TYPES, VOCAB, batch, outputs, tiny_bert, tiny_gpt2, tiny_llama
from hedgehog.conversion import (
    ATTENTION_IMPLEMENTATION,
    ConvertedAttention,
    conversion_info,
    convert,
    converted_layers,
    is_converted,
)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_softmax_conversion_is_the_original_model(family):
    model = FACTORIES[family]()
    ids, mask = batch(left_pad=3) if family == "llama" else batch(right_pad=3)
    reference = outputs(model, ids, mask)
    converted = hedgehog.convert(copy.deepcopy(model), attention="softmax")
    assert torch.equal(outputs(converted, ids, mask), reference)
    assert conversion_info(converted) == {"attention": "softmax", "options": {}}
    assert converted_layers(converted) == []


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("attention", LINEAR_TYPES)
def test_every_linear_type_converts_and_runs(family, attention):
    model = FACTORIES[family]()
    ids, mask = batch(right_pad=2) if family == "bert" else batch(left_pad=2)
    reference = outputs(model, ids, mask)
    options = {"window": 2} if attention == "hedgehog_window" else {}  # a window shorter than the batch
    converted = convert(model, attention, **options)
    assert converted is model and is_converted(model)
    assert model.config._attn_implementation == ATTENTION_IMPLEMENTATION
    layers = converted_layers(model)
    assert len(layers) == 2 and all(layer.attention == attention for layer in layers)
    out = outputs(model, ids, mask)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, reference, atol=1e-6)  # the attention really changed
    names = [k for k in model.state_dict() if ".hedgehog.feature_map_" in k]
    if any(True for _ in layers[0].parameters()):
        assert names  # trainable maps are saved with the model


def test_llama_feature_maps_follow_grouped_query_heads():
    model = convert(tiny_llama(), "hedgehog", feature_dim=4)
    layer = converted_layers(model)[0]
    assert (layer.num_heads, layer.num_kv_heads, layer.head_dim) == (6, 2, 8)
    assert layer.feature_map_q.weight.shape == (6, 8, 4)
    assert layer.feature_map_k.weight.shape == (2, 8, 4)
    assert conversion_info(model) == {"attention": "hedgehog", "options": {"feature_dim": 4}}


def test_converted_layer_matches_float64_reference():
    """The layer's linear form equals phi(q) phi(k)^T (causal, padded, GQA) normalised, times v."""
    torch.manual_seed(0)
    layer = ConvertedAttention("hedgehog", 6, 2, 8, layer_idx=0, init="random").double()
    q, k, v = torch.randn(2, 6, 7, 8).double(), torch.randn(2, 2, 7, 8).double(), torch.randn(2, 2, 7, 5).double()
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0
    scaling = 0.7 / math.sqrt(8)  # not the default: queries must be rescaled before the feature map
    out = layer(q, k, v, mask, causal=True, scaling=scaling)
    qf = layer.feature_map_q(q * 0.7, is_query=True)
    kf = layer.feature_map_k(k).repeat_interleave(3, dim=1)
    scores = qf @ kf.transpose(-1, -2)
    allowed = torch.ones(7, 7, dtype=torch.bool).tril() & mask.bool()[:, None, None, :]
    scores = scores * allowed
    expected = (scores / scores.sum(-1, keepdim=True)) @ v.repeat_interleave(3, dim=1)
    real = mask.bool()
    assert torch.allclose(out.permute(0, 2, 1, 3)[real], expected.permute(0, 2, 1, 3)[real], atol=1e-10)


@pytest.mark.parametrize("attention", ["hedgehog", "performer", "elu"])
def test_encoder_padding_does_not_change_real_tokens(attention):
    model = convert(tiny_bert(), attention)
    ids, _ = batch(batch_size=1, length=6)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        short = model.bert(input_ids=ids).last_hidden_state
        long = model.bert(input_ids=padded, attention_mask=mask).last_hidden_state
        logits_short, logits_long = model(input_ids=ids).logits, model(input_ids=padded, attention_mask=mask).logits
    assert torch.allclose(long[:, :6], short, atol=1e-5)
    assert torch.allclose(logits_long, logits_short, atol=1e-5)


def test_bert_attention_is_bidirectional_and_decoders_causal():
    bert = convert(tiny_bert(), "hedgehog")
    ids, _ = batch(batch_size=1, length=6)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 90 + 3
    with torch.no_grad():
        a = bert.bert(input_ids=ids).last_hidden_state
        b = bert.bert(input_ids=changed).last_hidden_state
    assert not torch.allclose(a[:, 0], b[:, 0], atol=1e-6)  # the first token sees the last one
    llama = convert(tiny_llama(), "hedgehog")
    with torch.no_grad():
        a = llama(input_ids=ids).logits
        b = llama(input_ids=changed).logits
    # earlier tokens never see the future (up to float rounding: the key features' stabilising shift is taken over
    # the whole sequence and cancels exactly, so a later token can move the last bits of earlier outputs)
    assert torch.allclose(a[:, :-1], b[:, :-1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, -1], b[:, -1], atol=1e-3)


def test_gpt2_layer_scaling_is_kept_by_the_teacher():
    """scale_attn_by_inverse_layer_idx: the distillation teacher uses each layer's own scaling."""
    from hedgehog.conversion import distillation

    model = tiny_gpt2(scale_attn_by_inverse_layer_idx=True)
    ids, mask = batch(left_pad=2)
    reference = outputs(model, ids, mask)
    convert(model, "hedgehog")
    with distillation(model):
        out = outputs(model, ids, mask)
    real = mask.bool()
    assert torch.allclose(out[real], reference[real], atol=1e-5)


def test_unknown_attention_name_is_a_clear_error():
    with pytest.raises(ValueError, match="convert: unknown attention type 'hedgehug'.*valid: softmax, hedgehog"):
        convert(tiny_bert(), "hedgehug")


def test_unknown_option_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown option 'featuredim'"):
        convert(tiny_bert(), "hedgehog", featuredim=4)


@pytest.mark.parametrize("second", ["hedgehog", "softmax"])
def test_converting_twice_is_an_error(second):
    model = convert(tiny_gpt2(), "taylor")
    with pytest.raises(ValueError, match="already converted"):
        convert(model, second)


def test_unsupported_models_name_their_class():
    class Tiny(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="Tiny is not a Hugging Face transformers model.*GPT2LMHeadModel"):
        convert(Tiny())
    mamba = MambaForCausalLM(MambaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, state_size=4))
    with pytest.raises(TypeError, match="MambaForCausalLM has no attention module.*LlamaForCausalLM"):
        convert(mamba)


def test_4d_mask_is_refused_with_a_hint():
    model = convert(tiny_bert(), "hedgehog")
    ids, _ = batch(batch_size=1, length=5)
    with pytest.raises(ValueError, match="2D padding mask"):
        model(input_ids=ids, attention_mask=torch.ones(1, 1, 5, 5, dtype=torch.bool))


def test_llama_config_with_head_dim_override():
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16,
    )
    from transformers import LlamaForCausalLM

    model = convert(LlamaForCausalLM(config).eval(), "hedgehog")
    layer = converted_layers(model)[0]
    assert (layer.num_heads, layer.num_kv_heads, layer.head_dim) == (4, 1, 16)
    assert torch.isfinite(outputs(model, *batch(length=5))).all()


@pytest.mark.parametrize("distilling", [False, True])
def test_attention_inputs_reach_the_kernels_in_the_autocast_dtype(monkeypatch, distilling):
    """Under bf16 autocast a Llama hands the layer float32 q, k (RoPE in float32) and may hand float32 v: all
    three must reach the attention in bfloat16, or the kernels take their float32 path."""
    import hedgehog.conversion.layer as layer_module

    seen = []
    real = layer_module.attend

    def recording(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(layer_module, "attend", recording)
    model = hedgehog.convert(tiny_llama(), attention="hedgehog")
    if distilling:  # the output-MSE transfer runs the student through attend
        hedgehog.conversion.set_distillation(model, True, cross_entropy=0.0, mse_weight=1.0, metrics=False)
    ids = torch.randint(3, VOCAB, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids).logits
    assert torch.isfinite(out.float()).all()
    assert seen and all(dtypes == (torch.bfloat16,) * 3 for dtypes in seen), seen
    seen.clear()
    layer = hedgehog.conversion.converted_layers(model)[0]
    q, k, v = torch.randn(2, 6, 12, 8), torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 8)  # all float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(q, k, v, None, causal=True)
    assert seen == [(torch.bfloat16,) * 3]
    seen.clear()
    model(input_ids=ids)  # without autocast nothing is cast
    assert seen and all(dtypes == (torch.float32,) * 3 for dtypes in seen), seen
