"""Resolve the ``tokenizer`` argument of the pretrained-model DataModules (GLUE, SAMSum, text).

Configs pass a hub name, a local folder or an alias (``minilm``, ``smollm2``); tests pass a ready tokenizer.
"""

from __future__ import annotations

from typing import Any


def resolve_tokenizer(tokenizer: Any):
    """Return a Hugging Face tokenizer: ``tokenizer`` itself, or the one loaded for a name / path / alias."""
    if isinstance(tokenizer, str):
        from hedgehog.models.pretrained import load_tokenizer

        return load_tokenizer(tokenizer)
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise TypeError(
            f"tokenizer must be a Hugging Face tokenizer or a name/path string, got {type(tokenizer).__name__}"
        )
    return tokenizer


def pad_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its end-of-sequence token (decoder LMs)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an eos token; set tokenizer.pad_token")
