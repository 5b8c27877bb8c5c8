"""greedy_decode (the step that a CUDA graph replays, run eagerly here) gives generate's greedy tokens."""

import pytest
import torch

from conversion_models import batch, tiny_llama
from hedgehog.conversion import LinearAttentionCache, cache_argument, convert
from hedgehog.conversion.decode import greedy_decode


def generate(model, ids, mask, new_tokens):
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False)


@pytest.mark.parametrize("attention,options", [
    ("softmax", {}), ("hedgehog", {}), ("elu", {}), ("cosformer", {}), ("hedgehog_window", {"window": 3}),
])
@pytest.mark.parametrize("left_pad", [0, 3])
def test_greedy_decode_equals_generate(attention, options, left_pad):
    model = tiny_llama()
    if attention != "softmax":
        convert(model, attention, **options)
    ids, mask = batch(batch_size=3, length=8, left_pad=left_pad)
    expected = generate(model, ids, mask, 7)
    got = greedy_decode(model, ids, 7, attention_mask=mask)
    assert got.shape == (3, 15)
    assert torch.equal(got, expected)


def test_the_step_writes_into_the_tensors_it_holds():
    """In place (what a replayed graph needs): after prefill the state tensors keep their storage while decoding."""
    model = convert(tiny_llama(), "hedgehog")
    ids, _ = batch(batch_size=2, length=6)
    cache = LinearAttentionCache(model.config)
    with torch.no_grad():
        model(input_ids=ids, use_cache=True, **{cache_argument(model): cache})
    layer = cache.layers[0]
    S, z, shift = layer.state.S, layer.state.z, layer.key_shift
    before = S.clone()
    cache.set_in_place(True)
    cache.position = torch.tensor([6])
    with torch.no_grad():
        step = ids[:, -1:]
        model(input_ids=step, use_cache=True, **{cache_argument(model): cache})
    assert layer.state.S is S and layer.state.z is z and layer.key_shift is shift
    assert not torch.equal(S, before)  # the values changed, the storage did not


def test_in_place_store_refuses_a_new_shape():
    from hedgehog.attention import RecurrentState
    from hedgehog.conversion import RecurrentStateLayer

    layer = RecurrentStateLayer()
    layer.store(RecurrentState(torch.zeros(1, 2, 4, 3), torch.zeros(1, 2, 4)), None)
    layer.in_place = True
    with pytest.raises(RuntimeError, match="constant shapes"):
        layer.store(RecurrentState(torch.zeros(1, 2, 5, 3), torch.zeros(1, 2, 5)), None)


def test_bad_arguments_are_named():
    model = convert(tiny_llama(), "hedgehog")
    ids, mask = batch(batch_size=2, length=5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(model, ids, 0)
    with pytest.raises(ValueError, match="attention_mask"):
        greedy_decode(model, ids, 2, attention_mask=mask[:, :3])
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA"):
        greedy_decode(model, ids, 2, cuda_graph=True)
    with pytest.raises(ValueError, match="max_positions=16"):
        greedy_decode(convert(tiny_llama(), "cosformer", max_positions=16), ids, 12)



@pytest.mark.parametrize("attention", ["softmax", "hedgehog"])
@pytest.mark.parametrize("autocast", [False, True])
def test_the_warm_up_before_a_capture_is_undone(monkeypatch, attention, autocast):
    """The steps run before a CUDA graph is captured advance the state, the static cache's own position counter
    and the step's inputs; they are put back, so the tokens are those of ``generate`` (here rehearsed without a
    GPU). Under autocast a softmax model's static cache stores float32 RoPE keys and 16-bit values in one dtype."""
    import hedgehog.conversion.decode as decode

    monkeypatch.setattr(decode, "_REHEARSE_WARM_UP", True)
    model = tiny_llama()
    if attention != "softmax":
        convert(model, attention)
    ids, mask = batch(batch_size=3, length=8, left_pad=3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected = generate(model, ids, mask, 6)
        got = greedy_decode(model, ids, 6, attention_mask=mask)
    assert torch.equal(got, expected)
