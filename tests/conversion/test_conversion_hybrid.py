"""The sliding-window hybrid inside converted models, the output-MSE attention transfer, and converted layers at
real LLM activation scales (|q|, |k| ~ 100) in bfloat16."""

import pytest
import torch

from conversion_models import batch, tiny_bert, tiny_llama
from hedgehog.attention import attend, softmax_attention
from hedgehog.attention.distillation import attention_output_mse
from hedgehog.conversion import (
    convert, converted_layers, distillation, freeze_except_feature_maps, pop_distillation_loss, set_distillation,
)


def capture_qkv(model):
    """Record (q, k, v, mask, scaling) as each converted layer receives them."""
    captured = []
    for layer in converted_layers(model):
        original = layer.forward

        def spy(q, k, v, attention_mask, *, _original=original, **kwargs):
            captured.append((q.detach(), k.detach(), v.detach(), attention_mask, kwargs["scaling"]))
            return _original(q, k, v, attention_mask, **kwargs)

        layer.forward = spy
    return captured


def test_output_mse_transfer_forms_no_weight_matrix(monkeypatch):
    """cross_entropy=0 and no metrics: the loss is the MSE of attend() against SDPA, no N x N weights formed."""
    model = convert(tiny_llama().double(), "hedgehog")
    ids, mask = batch(left_pad=2)
    captured = capture_qkv(model)
    import hedgehog.conversion.layer as layer_module

    def forbidden(*args, **kwargs):
        raise AssertionError("the output-MSE transfer must not build N x N weights")

    monkeypatch.setattr(layer_module, "softmax_weights", forbidden)
    monkeypatch.setattr(layer_module, "attention_weights", forbidden)
    with distillation(model, cross_entropy=0.0, mse_weight=10.0, metrics=False), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        loss = pop_distillation_loss(model)
    expected = 0.0
    for layer, (q, k, v, m, scaling) in zip(converted_layers(model), captured):
        keep = m.bool()
        teacher = softmax_attention(q, k, v, True, key_padding_mask=keep, scale=scaling)
        student = attend(q, k, v, feature_map_q=layer.feature_map_q, feature_map_k=layer.feature_map_k, causal=True,
                         key_padding_mask=keep)
        expected = expected + 10.0 * attention_output_mse(teacher, student, keep)
    torch.testing.assert_close(loss.double(), expected.double(), rtol=1e-6, atol=1e-9)


def test_both_loss_terms_zero_is_an_error():
    model = convert(tiny_llama(), "hedgehog")
    with pytest.raises(ValueError, match="cross_entropy > 0 or mse > 0"):
        set_distillation(model, True, cross_entropy=0.0, mse_weight=0.0)


@pytest.mark.parametrize("cross_entropy,mse", [(1.0, 0.0), (0.0, 100.0)])
def test_hybrid_distillation_trains_maps_and_balance(cross_entropy, mse):
    model = convert(tiny_llama(), "hedgehog_window", window=3)
    ids, mask = batch(batch_size=4, length=16, left_pad=2)
    params = freeze_except_feature_maps(model)
    layers = converted_layers(model)
    assert all(layer.balance is not None and any(layer.log_balance is p for p in params) for layer in layers)
    model.train()
    optimizer = torch.optim.Adam(params, lr=3e-2)
    losses = []
    with distillation(model, cross_entropy=cross_entropy, mse_weight=mse, metrics=False):
        for _ in range(25):
            model(input_ids=ids, attention_mask=mask)
            loss = pop_distillation_loss(model)
            optimizer.zero_grad()
            loss.backward()
            losses.append(loss.item())
            assert all(layer.log_balance.grad is not None and layer.log_balance.grad.abs().sum() > 0 for layer in layers)
            optimizer.step()
    assert losses[-1] < 0.7 * losses[0]
    assert all(bool(layer.balance.calibrated) for layer in layers)


def test_balance_is_calibrated_once_on_the_first_training_batch():
    model = convert(tiny_llama(), "hedgehog_window", window=3)
    ids, mask = batch(batch_size=2, length=12)
    layers = converted_layers(model)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)  # eval: no calibration
        assert not any(bool(layer.balance.calibrated) for layer in layers)
        model.train()
        model(input_ids=ids, attention_mask=mask)
        first = [layer.log_balance.detach().clone() for layer in layers]
        assert all(bool(layer.balance.calibrated) and b.abs().sum() > 0 for layer, b in zip(layers, first))
        model(input_ids=ids[:, :8], attention_mask=mask[:, :8])  # a second batch does not move it
    assert all(torch.equal(layer.log_balance, b) for layer, b in zip(layers, first))
    state = model.state_dict()
    assert any(k.endswith("hedgehog.balance.calibrated") for k in state)
    fresh = convert(tiny_llama(), "hedgehog_window", window=3)
    fresh.load_state_dict(state)
    assert not any(layer.balance.needs_calibration for layer in converted_layers(fresh))


def test_bidirectional_hybrid_in_an_encoder():
    model = convert(tiny_bert(), "hedgehog_window", window=2)
    ids, mask = batch(length=9, right_pad=3)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("attention,options", [("hedgehog", {}), ("hedgehog_window", {"window": 4})])
def test_real_activation_scales_in_bfloat16_autocast(attention, options):
    """Projections scaled so that q and k entries pass 100 (as in real LLM heads): under bf16 autocast the
    converted model stays finite, each layer receives bf16 q and k, and each layer's output is close to the same
    layer evaluated in float64 on the same inputs."""
    model = tiny_llama()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(12.0)
            layer.self_attn.k_proj.weight.mul_(12.0)
    convert(model, attention, **options)
    ids, mask = batch(batch_size=2, length=24, left_pad=3)
    outputs = []
    for layer in converted_layers(model):
        original = layer.forward

        def spy(q, k, v, attention_mask, *, _original=original, **kwargs):
            out = _original(q, k, v, attention_mask, **kwargs)
            outputs.append((q, k, v, attention_mask, kwargs, out))
            return out

        layer.forward = spy
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(logits).all()
    assert max(q.abs().max().item() for q, *_ in outputs) > 80
    for layer, (q, k, v, m, kwargs, out) in zip(converted_layers(model), outputs):
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        layer64 = layer.double()
        # the layer's own float64 evaluation on the bf16 inputs it received
        q64, k64, v64 = q.bfloat16().double(), k.bfloat16().double(), v.double()
        with torch.no_grad():
            exact = type(layer).forward(layer64, q64, k64, v64, m, **kwargs)
        layer.float()
        real = m.bool()[:, None, :, None].expand_as(exact)
        err = (out.double()[real] - exact[real]).norm() / exact[real].norm()
        assert err < 2e-2, err


@pytest.mark.parametrize("attention,options", [("hedgehog", {}), ("hedgehog_window", {"window": 4})])
def test_extreme_activation_scales_stay_finite(attention, options):
    """|q|, |k| in the hundreds (exp(300) is far beyond any float): every output is finite, no NaN, no inf."""
    model = tiny_llama()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(60.0)
            layer.self_attn.k_proj.weight.mul_(60.0)
    convert(model, attention, **options)
    ids, mask = batch(batch_size=2, length=24, left_pad=3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(logits).all()
