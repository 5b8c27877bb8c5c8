"""Resolve the ``tokenizer`` argument of the pretrained-model DataModules (GLUE, SAMSum, text, text mix).

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


class PretrainedTokenizerMixin:
    """``tokenizer``: the DataModule's ``tokenizer`` argument, resolved (``resolve_tokenizer``) on first use.

    Loading a pretrained tokenizer takes seconds, so a DataModule is built (and its arguments checked) without
    it. The class calls ``keep_tokenizer(tokenizer)`` in its ``__init__``.
    """

    def keep_tokenizer(self, tokenizer: Any) -> None:
        """Store the ``tokenizer`` argument (a tokenizer, or a hub name / local folder / alias) unresolved."""
        self._tokenizer_arg = tokenizer
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = resolve_tokenizer(self._tokenizer_arg)
        return self._tokenizer


class PretrainedVocabMixin(PretrainedTokenizerMixin):
    """``tokenizer`` as in ``PretrainedTokenizerMixin``, and ``vocab_size``: its size, added tokens included."""

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)
