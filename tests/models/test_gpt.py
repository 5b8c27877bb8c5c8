"""GPT and its attention block, for every registered attention type."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from hedgehog.attention import ATTENTION_NAMES, FeatureMap
from hedgehog.attention.registry import parse_attention
from hedgehog.layers.attention import MultiHeadAttention
from hedgehog.models.gpt import GPT

VOCAB, SEQ_LEN = 37, 16


def tiny_gpt(name: str, **kwargs) -> GPT:
    torch.manual_seed(0)
    config = dict(d_model=32, n_layers=2, n_heads=4, attention={"name": name, "options": {}})
    config.update(kwargs)
    return GPT(VOCAB, SEQ_LEN, **config)


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_forward_shape_and_finite(name):
    model = tiny_gpt(name)
    input_ids = torch.randint(VOCAB, (3, 11))
    logits = model(input_ids)
    assert logits.shape == (3, 11, VOCAB)
    assert torch.isfinite(logits).all()
    assert model.attention_name == name
    has_maps = name != "softmax"
    for block in model.blocks:
        assert isinstance(block.attn.feature_map_q, FeatureMap) is has_maps
        assert isinstance(block.attn.feature_map_k, FeatureMap) is has_maps
        assert block.attn.feature_map_q is not block.attn.feature_map_k or not has_maps


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_causal(name):
    """Changing token t leaves logits before t untouched and changes later ones (attention mixes tokens)."""
    model = tiny_gpt(name).double()
    a = torch.randint(VOCAB, (2, SEQ_LEN))
    b = a.clone()
    t = 9
    b[:, t] = (b[:, t] + 1) % VOCAB
    la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :t], lb[:, :t], rtol=0, atol=1e-12)
    assert (la[:, t + 1 :] - lb[:, t + 1 :]).abs().amax() > 1e-6


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_key_padding_mask_hides_keys(name):
    """Bidirectional block: a padded token's content reaches no other position."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, {"name": name, "options": {}}, causal=False, num_kv_heads=2).double()
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, 6] = False
    y = x.clone()
    y[:, 6] += torch.randn(2, 32, dtype=torch.float64)
    out_x, out_y = attn(x, key_padding_mask=mask), attn(y, key_padding_mask=mask)
    assert out_x.shape == (2, 10, 32)
    keep = mask[0]
    torch.testing.assert_close(out_x[:, keep], out_y[:, keep], rtol=0, atol=1e-10)
    out_unmasked = attn(y)
    assert (out_unmasked[:, keep] - out_y[:, keep]).abs().amax() > 1e-6


def test_softmax_block_matches_reference():
    """The softmax block is q/k/v/o projections around exact causal softmax attention (float64 reference)."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(24, 3, None, causal=True, num_kv_heads=1, bias=True).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    q = attn.q_proj(x).view(2, 7, 3, 8).transpose(1, 2)
    k = attn.k_proj(x).view(2, 7, 1, 8).transpose(1, 2).expand(2, 3, 7, 8)
    v = attn.v_proj(x).view(2, 7, 1, 8).transpose(1, 2).expand(2, 3, 7, 8)
    scores = q @ k.transpose(-1, -2) / 8**0.5
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    expected = attn.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 24))
    torch.testing.assert_close(attn(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_few_steps_lower_the_loss(name):
    model = tiny_gpt(name)
    input_ids = torch.randint(VOCAB, (4, SEQ_LEN))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss_fn():
        logits = model(input_ids[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1))

    first = loss_fn()
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    assert loss_fn().item() < first.item() - 0.3


def test_init_like_nanogpt_but_feature_maps_keep_theirs():
    model = tiny_gpt("hedgehog", n_layers=4, d_model=64)
    assert model.lm_head.weight is model.token_embedding.weight
    assert abs(model.token_embedding.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].mlp.fc.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].mlp.proj.weight.std().item() - 0.02 / 8**0.5) < 0.001  # 1/sqrt(2 * 4 layers)
    assert torch.count_nonzero(model.blocks[0].mlp.fc.bias) == 0
    fm = model.blocks[0].attn.feature_map_q
    torch.testing.assert_close(fm.weight, torch.eye(16).expand(4, 16, 16))  # Hedgehog's identity init survives
    untied = tiny_gpt("softmax", tie_embeddings=False)
    assert untied.lm_head.weight is not untied.token_embedding.weight


def test_attention_mask_accepted():
    model = tiny_gpt("hedgehog").double()
    input_ids = torch.randint(VOCAB, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 6:] = 0  # right padding: real positions are unaffected under causal attention
    torch.testing.assert_close(model(input_ids, attention_mask=mask)[1, :6], model(input_ids)[1, :6])


def test_too_long_input_is_a_clear_error():
    model = tiny_gpt("softmax")
    with pytest.raises(ValueError, match=f"17 tokens but the model's seq_len is {SEQ_LEN}"):
        model(torch.zeros(1, SEQ_LEN + 1, dtype=torch.long))


def test_attention_config_forms_and_errors():
    conf = OmegaConf.create({"name": "hedgehog", "options": {"feature_dim": 4, "bias": False}})
    assert parse_attention(conf) == ("hedgehog", {"feature_dim": 4, "bias": False})
    assert parse_attention(None) == ("softmax", {})
    attn = MultiHeadAttention(16, 2, conf)
    assert attn.feature_map_q.feature_dim == 8 and attn.feature_map_q.bias is None
    with pytest.raises(ValueError, match="unknown attention type 'nope'"):
        MultiHeadAttention(16, 2, {"name": "nope", "options": {}})
    with pytest.raises(ValueError, match="unknown keys"):
        MultiHeadAttention(16, 2, {"name": "softmax", "feature_dim": 3})
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadAttention(30, 4, None)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        MultiHeadAttention(32, 4, None, num_kv_heads=3)


def test_attention_only_blocks_with_mlp_ratio_zero():
    """mlp_ratio=0: blocks are x + attn(ln(x)) (no MLP parameters), still causal; a negative ratio is an error."""
    model = tiny_gpt("hedgehog", mlp_ratio=0).double()
    assert all(block.mlp is None and block.ln_2 is None for block in model.blocks)
    with_mlp = tiny_gpt("hedgehog")
    mlp_params = sum(p.numel() for b in with_mlp.blocks for p in [*b.mlp.parameters(), *b.ln_2.parameters()])
    assert model.num_parameters() == with_mlp.num_parameters() - mlp_params
    x = torch.randint(VOCAB, (2, SEQ_LEN))
    block = model.blocks[0]
    h = torch.randn(2, SEQ_LEN, 32, dtype=torch.float64)
    torch.testing.assert_close(block(h), h + block.attn(block.ln_1(h)), rtol=0, atol=0)
    y = x.clone()
    y[:, 9] = (y[:, 9] + 1) % VOCAB
    torch.testing.assert_close(model(x)[:, :9], model(y)[:, :9], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="mlp_ratio"):
        tiny_gpt("softmax", mlp_ratio=-1)
