"""WikiText-2 / WikiText-103 language modelling (Merity et al., 2016) in contiguous blocks of ``seq_len``.

Text comes from a local folder (``wiki.{split}.tokens``, or ``wiki.{split}.raw``) when ``data_dir`` is given,
else from ``datasets.load_dataset("Salesforce/wikitext", "wikitext-2-v1" | "wikitext-103-v1")``. Each split becomes one
token stream cut into blocks (``hedgehog.data.lm_blocks``). Both WikiTexts share their valid and test splits.

The offline copy in ``../shared/data/wikitext`` has the valid and test splits only: train there with
``train_split=valid`` and evaluate on ``test`` (and report it as such).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from hedgehog.data.base import DataModuleBase, check_loader_sizes
from hedgehog.data.lm_blocks import LMBlockDataset
from hedgehog.data.tokenizers import HFTokenizer, WordTokenizer

HUB_DATASET = "Salesforce/wikitext"  # formerly "wikitext" on the hub
HUB_CONFIGS = {"wikitext-2": "wikitext-2-v1", "wikitext-103": "wikitext-103-v1"}
HUB_SPLITS = {"train": "train", "valid": "validation", "validation": "validation", "test": "test"}
FILE_SUFFIXES = (".tokens", ".raw")


def split_file(data_dir: Path, split: str) -> Path:
    """``data_dir/wiki.{split}.tokens`` (or ``.raw``); FileNotFoundError saying how to provide it."""
    candidates = [data_dir / f"wiki.{split}{suffix}" for suffix in FILE_SUFFIXES]
    for path in candidates:
        if path.is_file():
            return path
    hint = (
        " The offline copy (../shared/data/wikitext) has only the valid and test splits: train on it with "
        "data.train_split=valid."
        if split == "train"
        else ""
    )
    raise FileNotFoundError(
        f"WikiText split {split!r} not found: no file {candidates[0]} (or {candidates[1].name}). Put the file "
        f"there, point data.data_dir at a folder that has it, or set data.data_dir=null to load WikiText with "
        f"datasets.load_dataset (needs network).{hint}"
    )


class WikiTextDataModule(DataModuleBase):
    """Batches ``{"input_ids": [B, seq_len], "labels": [B, seq_len]}`` of contiguous WikiText.

    Args:
        name: ``"wikitext-2"`` or ``"wikitext-103"`` (chooses the hub config; local files are read as they are).
        data_dir: folder with ``wiki.{split}.tokens``/``.raw`` files, or None for ``datasets.load_dataset``.
        tokenizer: ``"word"`` (word-level vocabulary of the training split, ``<eos>`` per line, ``<unk>`` for
            unseen words) or a Hugging Face tokenizer name / local folder.
        seq_len: tokens per block. batch_size: blocks per batch (per process).
        train_split, val_split, test_split: split names (``train``, ``valid``, ``test``).

    ``vocab_size`` (a property) builds the tokenizer on first use, so the model can be sized before ``setup``.
    ``setup(stage)`` encodes only the splits the stage needs; a dataloader sets up its split if needed.
    """

    split_names = ("train", "val", "test")

    def __init__(
        self,
        name: str = "wikitext-2",
        data_dir: str | None = None,
        tokenizer: str = "word",
        seq_len: int = 256,
        batch_size: int = 32,
        train_split: str = "train",
        val_split: str = "valid",
        test_split: str = "test",
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if name not in HUB_CONFIGS:
            raise ValueError(f"unknown WikiText name {name!r}; choose one of: {', '.join(HUB_CONFIGS)}")
        check_loader_sizes("WikiTextDataModule", num_workers, seq_len=seq_len, batch_size=batch_size)
        self.save_hyperparameters()
        self.name = name
        self.data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self.tokenizer_name = str(tokenizer)
        self.seq_len = seq_len
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        for split in self.splits.values():
            if self.data_dir is not None:
                split_file(self.data_dir, split)  # fail now, before any model is built
            elif split not in HUB_SPLITS:
                raise ValueError(f"unknown WikiText split {split!r}; choose one of: train, valid, test")
        self._lines: dict[str, list[str]] = {}
        self.datasets: dict[str, LMBlockDataset] = {}

    def data_files(self) -> list[Path]:
        """The local files this DataModule reads (none when the text comes from the hub)."""
        if self.data_dir is None:
            return []
        return sorted({split_file(self.data_dir, split) for split in self.splits.values()})

    def chance_levels(self) -> dict[str, dict[str, float]]:
        """Test perplexity without learning to use context, for reading ``test/ppl``: a uniform guess over the
        vocabulary, and the word frequencies of the training split (a unigram model, add-one smoothed), scored on
        the same test tokens as the model."""
        vocab = self.vocab_size
        if "train" not in self.datasets or "test" not in self.datasets:
            return {"ppl": {f"a uniform guess over the {vocab:,}-token vocabulary": float(vocab)}}
        train, test = self.datasets["train"], self.datasets["test"]
        counts = torch.bincount(train.tokens, minlength=vocab).double() + 1.0
        log_probs = counts.log() - counts.sum().log()
        scored = test.tokens[1 : len(test) * test.seq_len + 1]  # the label tokens of the test blocks
        unigram = float(torch.exp(-log_probs[scored].mean()))
        return {"ppl": {
            f"a uniform guess over the {vocab:,}-token vocabulary": float(vocab),
            "the training split's word frequencies, ignoring all context (unigram)": unigram,
        }}

    def lines(self, split: str) -> list[str]:
        """The text of ``split``, one string per line (newline kept), read once and cached."""
        if split not in self._lines:
            if self.data_dir is not None:
                text = split_file(self.data_dir, split).read_text(encoding="utf-8")
                self._lines[split] = text.splitlines(keepends=True)
            else:
                self._lines[split] = list(self._load_hub(split=HUB_SPLITS[split])["text"])
        return self._lines[split]

    def _load_hub(self, **kwargs):
        from datasets import load_dataset

        try:
            return load_dataset(HUB_DATASET, HUB_CONFIGS[self.name], **kwargs)
        except Exception as error:  # offline, hub unreachable, no cache: say what to do instead
            raise RuntimeError(
                f"cannot load {HUB_DATASET} ({HUB_CONFIGS[self.name]}) with datasets.load_dataset: "
                f"{type(error).__name__}: {error}. Without network, set data.data_dir to a folder with "
                f"wiki.{{train,valid,test}}.tokens files (e.g. ../shared/data/wikitext, with data.train_split=valid)."
            ) from error

    @cached_property
    def tokenizer(self) -> WordTokenizer | HFTokenizer:
        if self.tokenizer_name == "word":
            return WordTokenizer.from_lines(self.lines(self.splits["train"]))
        return HFTokenizer(self.tokenizer_name)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def prepare_data(self) -> None:
        # Runs on one process per node: download the hub dataset once (no-op for local files).
        if self.data_dir is None:
            self._load_hub()

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        for part in wanted:
            if part not in self.datasets:
                split = self.splits[part]
                tokens = torch.from_numpy(self.tokenizer.encode_lines(self.lines(split)))  # [T] int64
                self.datasets[part] = LMBlockDataset(tokens, self.seq_len, name=f"WikiText split {split!r}")
        self._lines.clear()  # the text is not needed once encoded (WikiText-103 train is ~0.5 GB)
