"""Tokenizers for language modelling: a word-level vocabulary, or any Hugging Face tokenizer.

Both expose ``vocab_size`` and ``encode_lines(lines) -> np.ndarray`` (one flat int64 token stream for a split;
a compact array because WikiText-103's training split has ~10^8 tokens).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

import numpy as np

UNK = "<unk>"
EOS = "<eos>"


class WordTokenizer:
    """Word-level vocabulary as in PyTorch's ``word_language_model``: whitespace split, ``<eos>`` after each line.

    Built from the training lines; ids are ``<unk>`` = 0, ``<eos>`` = 1, then words in order of first
    appearance (deterministic). Words never seen in training map to ``<unk>``.
    """

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = list(words)
        self.stoi = {word: i for i, word in enumerate(self.itos)}
        if self.itos[:2] != [UNK, EOS] or len(self.stoi) != len(self.itos):
            raise ValueError("WordTokenizer: vocabulary must start with <unk>, <eos> and hold no duplicates")

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> "WordTokenizer":
        words = dict.fromkeys([UNK, EOS])
        for line in lines:
            words.update(dict.fromkeys(line.split()))
        return cls(list(words))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode_lines(self, lines: Iterable[str]) -> np.ndarray:
        unk, eos, stoi = self.stoi[UNK], self.stoi[EOS], self.stoi
        ids = array("q")
        for line in lines:
            ids.extend([stoi.get(word, unk) for word in line.split()])
            ids.append(eos)
        return np.frombuffer(ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.itos[i] for i in ids)


class HFTokenizer:
    """A Hugging Face tokenizer (hub name or local folder) producing one token stream without special tokens.

    Lines are encoded as they are (newlines included where the text has them) and concatenated, as in the
    ``run_clm`` recipe of ``transformers``.
    """

    def __init__(self, name_or_path: str, batch_size: int = 1000) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"cannot load tokenizer {name_or_path!r}: give a local folder with tokenizer files, a hub name "
                f"(needs network), or 'word' for a word-level vocabulary ({error.__class__.__name__}: {error})"
            ) from None
        self.batch_size = batch_size

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)  # includes added tokens, unlike tokenizer.vocab_size

    def encode_lines(self, lines: Iterable[str]) -> np.ndarray:
        lines = [line for line in lines if line]
        ids = array("q")
        for start in range(0, len(lines), self.batch_size):
            batch = lines[start : start + self.batch_size]
            encoded = self.tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
            for row in encoded:
                ids.extend(row)
        return np.frombuffer(ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids))
