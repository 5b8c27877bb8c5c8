"""Tiny random Hugging Face models (BERT encoder, GPT-2 and Llama decoders) for the conversion tests."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

VOCAB = 97
PAD, BOS, EOS = 0, 1, 2
LINEAR_TYPES = ("hedgehog", "taylor", "elu", "performer", "cosformer", "t2r", "hedgehog_window")


def tiny_bert(seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=3, initializer_range=0.3, pad_token_id=PAD, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **overrides,
    )
    return BertForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, initializer_range=0.3, bos_token_id=BOS, eos_token_id=EOS,
        pad_token_id=PAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **overrides,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        **overrides,
    )
    return LlamaForCausalLM(config).eval()


FACTORIES = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama}


def batch(batch_size: int = 2, length: int = 9, left_pad: int = 0, right_pad: int = 0, seed: int = 1):
    """Random token ids [B, N] and a 0/1 attention mask; row 1 gets ``left_pad`` / ``right_pad`` pad tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch_size, length), generator=g)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    if left_pad:
        ids[1, :left_pad], mask[1, :left_pad] = PAD, 0
    if right_pad:
        ids[1, length - right_pad:], mask[1, length - right_pad:] = PAD, 0
    return ids, mask


def outputs(model, ids, mask):
    """Logits of a classifier or LM (float32)."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()
