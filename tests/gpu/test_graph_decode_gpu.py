"""Greedy decoding with the step captured in a CUDA graph gives the eager tokens (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).cuda().eval()


@pytest.mark.parametrize("attention", ["softmax", "hedgehog", "elu", "cosformer"])
@pytest.mark.parametrize("autocast", [False, True])
def test_graph_decode_equals_eager(attention, autocast):
    from hedgehog.conversion import convert
    from hedgehog.conversion.decode import greedy_decode

    model = tiny_llama()
    if attention != "softmax":
        convert(model, attention)
    g = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(3, 97, (3, 40), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        eager = greedy_decode(model, ids, 12, attention_mask=mask, cuda_graph=False)
        graphed = greedy_decode(model, ids, 12, attention_mask=mask, cuda_graph=True)
    assert graphed.shape == (3, 52)
    assert torch.equal(graphed, eager)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_maps_in_the_decode_kernel_give_the_same_tokens(monkeypatch, cuda_graph):
    """HEDGEHOG_KERNELS_DECODE_MAPS=1 (the Hedgehog maps inside the decode kernel, state updated in place) against
    the maps in PyTorch, float32."""
    from hedgehog.attention.dispatch import DECODE_MAPS_ENV
    from hedgehog.conversion import convert
    from hedgehog.conversion.decode import greedy_decode

    model = convert(tiny_llama(), "hedgehog")
    g = torch.Generator(device="cuda").manual_seed(2)
    ids = torch.randint(3, 97, (2, 33), device="cuda", generator=g)
    monkeypatch.delenv(DECODE_MAPS_ENV, raising=False)
    reference = greedy_decode(model, ids, 10, cuda_graph=False)
    monkeypatch.setenv(DECODE_MAPS_ENV, "1")
    assert torch.equal(greedy_decode(model, ids, 10, cuda_graph=cuda_graph), reference)
