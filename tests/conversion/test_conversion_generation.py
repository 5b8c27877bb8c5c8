"""Linear-time generation: LinearAttentionCache gives the same tokens as recomputing, in constant memory."""

import copy
import pickle

import pytest
import torch
from transformers import DynamicCache

from conversion_models import batch, tiny_gpt2, tiny_llama
from hedgehog.conversion import LinearAttentionCache, cache_argument, convert, returned_cache


def greedy(model, ids, mask, new_tokens, **kwargs):
    return model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        **kwargs,
    )


@pytest.mark.parametrize("attention", ["hedgehog", "taylor", "cosformer", "hedgehog_window"])
def test_llama_cached_generation_equals_recompute_with_left_padding(attention):
    model = convert(tiny_llama(), attention, **({"window": 3} if attention == "hedgehog_window" else {}))
    ids, mask = batch(batch_size=3, length=8, left_pad=3)
    cached = greedy(model, ids, mask, 6, return_dict_in_generate=True)
    recomputed = greedy(model, ids, mask, 6, use_cache=False)
    assert isinstance(returned_cache(cached), LinearAttentionCache)  # picked by generate itself
    assert torch.equal(cached.sequences, recomputed)


def test_gpt2_cached_generation_equals_recompute():
    model = convert(tiny_gpt2(), "hedgehog")
    ids, mask = batch(batch_size=2, length=6)
    cached = greedy(model, ids, mask, 6, return_dict_in_generate=True)
    assert isinstance(returned_cache(cached), LinearAttentionCache)
    assert torch.equal(cached.sequences, greedy(model, ids, mask, 6, use_cache=False))


def test_left_padding_never_enters_the_state():
    """A left-padded row generates exactly what the same prompt generates alone (Llama positions from the mask)."""
    model = convert(tiny_llama(), "hedgehog")
    ids, mask = batch(batch_size=2, length=8, left_pad=3)
    together = greedy(model, ids, mask, 5)
    alone = greedy(model, ids[1:, 3:], mask[1:, 3:], 5)
    assert torch.equal(together[1, 8:], alone[0, 5:])


@pytest.mark.parametrize("attention,options", [("hedgehog", {}), ("hedgehog_window", {"window": 3})])
def test_cached_logits_match_the_full_forward(attention, options):
    model = convert(tiny_llama(), attention, **options)
    ids, mask = batch(batch_size=2, length=10, left_pad=2)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        cache = LinearAttentionCache(model.config)
        prefix = model(input_ids=ids[:, :7], attention_mask=mask[:, :7], **{cache_argument(model): cache}, use_cache=True)
        steps = [prefix.logits]
        for t in range(7, 10):
            out = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], **{cache_argument(model): cache}, use_cache=True)
            steps.append(out.logits)
    assert cache.get_seq_length() == 10
    assert torch.allclose(torch.cat(steps, dim=1)[:, 2:], full[:, 2:], atol=1e-5)


def test_state_size_does_not_grow_with_length():
    model = convert(tiny_llama(), "hedgehog")
    ids, mask = batch(batch_size=2, length=4)
    sizes = {}
    for new_tokens in (5, 50):
        cache = LinearAttentionCache(model.config)
        greedy(model, ids, mask, new_tokens, **{cache_argument(model): cache})
        assert cache.get_seq_length() == 4 + new_tokens - 1  # the last token is emitted, never fed back
        sizes[new_tokens] = [(tuple(l.state.S.shape), tuple(l.state.z.shape)) for l in cache.layers]
        sizes[new_tokens].append(cache.state_nbytes())
    assert sizes[5] == sizes[50]
    # [B, Hk, F, Dv] and [B, Hk, F] with F = 2 * head_dim for Hedgehog
    assert sizes[5][0] == ((2, 2, 16, 8), (2, 2, 16))


def test_hybrid_state_size_does_not_grow_with_length():
    """The hybrid keeps its linear state plus a window of keys and values: constant memory too."""
    model = convert(tiny_llama(), "hedgehog_window", window=4)
    ids, mask = batch(batch_size=2, length=3)
    sizes = []
    for new_tokens in (6, 40):
        cache = LinearAttentionCache(model.config)
        greedy(model, ids, mask, new_tokens, **{cache_argument(model): cache})
        sizes.append(cache.state_nbytes())
        assert all(tuple(l.state.keys.shape) == (2, 2, 4, 8) for l in cache.layers)
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("attention,options", [("elu", {}), ("hedgehog_window", {"window": 3})])
def test_key_value_cache_still_gives_the_same_result(attention, options):
    """A DynamicCache passed explicitly (keys grow) is handled as a continuation of the sequence."""
    model = convert(tiny_llama(), attention, **options)
    ids, mask = batch(batch_size=2, length=9, left_pad=2)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        cache = DynamicCache(config=model.config)
        first = model(input_ids=ids[:, :6], attention_mask=mask[:, :6], **{cache_argument(model): cache}, use_cache=True).logits
        rest = model(input_ids=ids[:, 6:], attention_mask=mask, **{cache_argument(model): cache}, use_cache=True).logits
    assert torch.allclose(torch.cat([first, rest], dim=1)[:, 2:], full[:, 2:], atol=1e-5)


def test_cache_reorders_for_beam_search():
    model = convert(tiny_llama(), "hedgehog")
    ids, mask = batch(batch_size=1, length=5)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, num_beams=3, do_sample=False)
    assert out.shape == (1, 9)


def test_encoder_model_has_no_generation_hook():
    from conversion_models import tiny_bert

    model = convert(tiny_bert(), "hedgehog")
    assert "_prepare_cache_for_generation" not in vars(model)


def test_generation_cache_choice_survives_copy_pickle_and_lora():
    from hedgehog.conversion import apply_lora

    model = convert(tiny_gpt2(), "hedgehog")
    ids, mask = batch(batch_size=1, length=4)
    twins = [copy.deepcopy(model), pickle.loads(pickle.dumps(model)), apply_lora(copy.deepcopy(model), ["c_attn"])]
    for twin in twins:
        out = greedy(twin, ids, mask, 3, return_dict_in_generate=True)
        assert isinstance(returned_cache(out), LinearAttentionCache), type(twin)


def test_key_value_cache_implementations_are_refused():
    model = convert(tiny_llama(), "hedgehog")
    with pytest.raises(ValueError, match="cache_implementation='static'.*LinearAttentionCache"):
        greedy(model, *batch(length=4), 2, cache_implementation="static")
