"""Attention distillation (stage 1): teacher outputs, loss, gradients, training, metrics, errors."""

import copy

import pytest
import torch

from conversion_models import FACTORIES, batch, outputs, tiny_bert, tiny_llama
from hedgehog.attention import attention_weights, distillation_loss, softmax_weights
from hedgehog.conversion import (
    convert,
    converted_layers,
    distillation,
    feature_map_parameters,
    freeze_except_feature_maps,
    is_distilling,
    pop_distillation_loss,
    set_distillation,
    teacher_student_metrics,
)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_distillation_outputs_equal_the_softmax_model(family):
    model = FACTORIES[family]()
    ids, mask = batch(right_pad=3) if family == "bert" else batch(left_pad=3)
    reference = outputs(model, ids, mask)
    convert(model, "hedgehog")
    linear = outputs(model, ids, mask)
    with distillation(model):
        teacher = outputs(model, ids, mask)
        loss = pop_distillation_loss(model)
    rows = slice(None) if family == "bert" else mask.bool()
    assert torch.allclose(teacher[rows], reference[rows], atol=1e-5)
    assert not torch.allclose(linear[rows], reference[rows], atol=1e-4)
    assert loss.ndim == 0 and loss.item() > 0


def test_loss_is_the_sum_of_per_layer_distillation_losses():
    """Recompute each layer's loss from q, k captured at the attention function (float64 reference)."""
    model = convert(tiny_llama().double(), "hedgehog")
    ids, mask = batch(left_pad=2)
    captured = []
    for layer in converted_layers(model):
        original = layer.forward

        def spy(q, k, v, attention_mask, *, _original=original, **kwargs):
            captured.append((q.detach(), k.detach(), kwargs["scaling"]))
            return _original(q, k, v, attention_mask, **kwargs)

        layer.forward = spy
    with distillation(model), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        loss = pop_distillation_loss(model)
    expected = 0.0
    for layer, (q, k, scaling) in zip(converted_layers(model), captured):
        teacher = softmax_weights(q, k, True, key_padding_mask=mask.bool(), scale=scaling)
        qf, kf = layer.feature_map_q(q, is_query=True), layer.feature_map_k(k)
        student = attention_weights(qf, kf, True, key_padding_mask=mask.bool())
        expected = expected + distillation_loss(teacher, student, mask=mask.bool())
    assert len(captured) == 2
    assert torch.allclose(loss.double(), expected, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_only_feature_maps_get_gradients_and_the_loss_falls(family):
    model = convert(FACTORIES[family](), "hedgehog")
    trainable = freeze_except_feature_maps(model)
    assert {id(p) for p in trainable} == {id(p) for p in feature_map_parameters(model)}
    ids, mask = batch(batch_size=4, length=12, left_pad=3, seed=3)
    optimizer = torch.optim.Adam(trainable, lr=0.02)
    losses = []
    with distillation(model):
        model.train()
        for step in range(20):
            model(input_ids=ids, attention_mask=mask)
            loss = pop_distillation_loss(model)
            optimizer.zero_grad()
            loss.backward()
            if step == 0:
                for name, p in model.named_parameters():
                    if ".hedgehog.feature_map_" in name:
                        assert p.grad is not None and p.grad.abs().sum() > 0, name
                    else:
                        assert p.grad is None and not p.requires_grad, name
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_mse_term_adds_to_the_loss():
    model = convert(tiny_bert(), "hedgehog")
    ids, mask = batch(right_pad=2)
    with distillation(model):
        model(input_ids=ids, attention_mask=mask)
        plain = pop_distillation_loss(model)
    with distillation(model, mse_weight=10.0):
        model(input_ids=ids, attention_mask=mask)
        with_mse = pop_distillation_loss(model)
    assert with_mse > plain


def test_switch_context_and_pop_semantics():
    model = convert(tiny_llama(), "hedgehog")
    ids, mask = batch()
    assert not is_distilling(model)
    with distillation(model):
        assert is_distilling(model)
        model(input_ids=ids, attention_mask=mask)
        model(input_ids=ids, attention_mask=mask)
        two = pop_distillation_loss(model)
        with pytest.raises(RuntimeError, match="no distillation loss accumulated"):
            pop_distillation_loss(model)  # popping resets
        model(input_ids=ids, attention_mask=mask)
        one = pop_distillation_loss(model)
    assert not is_distilling(model)
    assert torch.allclose(two, 2 * one, rtol=1e-5)
    set_distillation(model, True)
    assert is_distilling(model)
    set_distillation(model, False)
    model(input_ids=ids, attention_mask=mask)  # linear form: nothing accumulates
    with pytest.raises(RuntimeError, match="no distillation loss"):
        pop_distillation_loss(model)


def test_teacher_student_metrics_per_layer():
    model = convert(tiny_bert(), "hedgehog")
    with distillation(model):
        model(input_ids=batch()[0])
        pop_distillation_loss(model)
    rows = teacher_student_metrics(model)
    assert [r["layer"] for r in rows] == [0, 1]
    for row in rows:
        assert row["teacher_entropy"] > 0 and row["student_entropy"] > 0 and row["kl"] >= 0


def test_errors_on_unconverted_or_softmax_models():
    model = tiny_bert()
    with pytest.raises(ValueError, match="not converted"):
        set_distillation(model, True)
    convert(model, "softmax")
    with pytest.raises(ValueError, match="'softmax', which has no feature maps"):
        pop_distillation_loss(model)
    elu = convert(tiny_bert(), "elu")
    with pytest.raises(ValueError, match="'elu' feature maps have no trainable parameters"):
        freeze_except_feature_maps(elu)
    with pytest.raises(ValueError, match="mse must be a number >= 0"):
        set_distillation(elu, True, mse_weight=-1)


def test_generation_in_distillation_mode_is_refused():
    model = convert(tiny_llama(), "hedgehog")
    with distillation(model), pytest.raises(RuntimeError, match="switch distillation off"):
        model.generate(input_ids=batch()[0], max_new_tokens=2, do_sample=False)


def test_distillation_does_not_touch_a_copy():
    model = convert(tiny_llama(), "hedgehog")
    twin = copy.deepcopy(model)
    with distillation(model):
        assert not is_distilling(twin)
