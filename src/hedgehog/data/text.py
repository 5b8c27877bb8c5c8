"""Plain-text language modelling for pretrained-model conversion (WikiText with the model's own tokenizer).

Unlike ``hedgehog.data.wikitext`` (training from scratch: a word vocabulary built from the data), this module
feeds a *pretrained* model: the tokenizer is the model's (a hub name, a local folder, an alias such as
``smollm2``, or a tokenizer object), and the WikiText markup (`` @-@ ``, spaced punctuation) is undone so the
text looks like what the model was trained on. Text is one token stream per split, cut into contiguous blocks
of ``seq_len`` (``hedgehog.data.lm_blocks``: labels aligned, every token scored once).

Local files (``train_file``, ``test_file``): offline only WikiText's valid and test splits exist, so the
configs train on ``wiki.valid.tokens`` (its ``<unk>`` words stay literal), validate on its last ``val_fraction``
of blocks and test on ``wiki.test.raw``: report such runs as "trained on WikiText valid". With both files null
the hub's train/validation/test splits of ``hub_dataset``/``hub_config`` are used.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from hedgehog.data.base import DataModuleBase
from hedgehog.data.lm_blocks import LMBlockDataset
from hedgehog.data.pretrained_tokenizer import PretrainedVocabMixin

log = logging.getLogger(__name__)


def wikitext_detokenize(text: str) -> str:
    """Undo WikiText's tokenisation (the detokenizer used by Megatron-LM and lm-evaluation-harness)."""
    text = text.replace("s '", "s'")
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    for src, dst in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                     (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
        text = text.replace(src, dst)
    text = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", text)
    text = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", text)
    text = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", text)
    text = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', text)
    text = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", text)
    for src, dst in (("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
                     (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")):
        text = text.replace(src, dst)
    return text


class TextLMDataModule(PretrainedVocabMixin, DataModuleBase):
    """Blocks ``{"input_ids": [B, seq_len], "labels": [B, seq_len]}`` of text under a pretrained tokenizer.

    tokenizer: a Hugging Face tokenizer, or a hub name / local folder / alias to load one.
    train_file / test_file: local text files (training text; test text), or both None for the hub.
    max_train_blocks / max_eval_blocks: caps for small runs (eval caps validation and test).
    """

    def __init__(
        self,
        tokenizer: Any,
        train_file: str | None = None,
        test_file: str | None = None,
        seq_len: int = 512,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.05,
        max_train_blocks: int | None = None,
        max_eval_blocks: int | None = None,
        detokenize: bool = True,
        hub_dataset: str = "Salesforce/wikitext",
        hub_config: str = "wikitext-103-raw-v1",
        num_workers: int = 0,
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.keep_tokenizer(tokenizer)
        if (train_file is None) != (test_file is None):
            raise ValueError("give both train_file and test_file (local text), or neither (load from the hub)")
        self.train_file = None if train_file is None else Path(train_file).expanduser()
        self.test_file = None if test_file is None else Path(test_file).expanduser()
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.max_train_blocks = max_train_blocks
        self.max_eval_blocks = max_eval_blocks
        self.detokenize = detokenize
        self.hub_dataset, self.hub_config = hub_dataset, hub_config
        for path in (self.train_file, self.test_file):
            if path is not None and not path.is_file():
                raise FileNotFoundError(
                    f"text file not found: {path}. Point paths.data_dir (env HEDGEHOG_DATA_DIR) at the data root, "
                    f"or set data.train_file=null data.test_file=null to load {hub_dataset}/{hub_config} with "
                    f"datasets.load_dataset (needs network)."
                )

    def texts(self) -> dict[str, str]:
        """``{"train", "test"}`` (local) or ``{"train", "validation", "test"}`` (hub) as single strings."""
        if self.train_file is not None:
            out = {
                "train": self.train_file.read_text(encoding="utf-8"),
                "test": self.test_file.read_text(encoding="utf-8"),
            }
        else:
            from datasets import load_dataset

            ds = load_dataset(self.hub_dataset, self.hub_config)
            out = {k: "".join(ds[s]["text"]) for k, s in (("train", "train"), ("validation", "validation"), ("test", "test"))}
        return {k: wikitext_detokenize(v) if self.detokenize else v for k, v in out.items()}

    def encode(self, text: str) -> torch.Tensor:
        """One token stream [T] (no special tokens), encoded line by line to bound memory."""
        lines = [line for line in text.splitlines(keepends=True) if line.strip()]
        ids: list[int] = []
        for start in range(0, len(lines), 1000):
            for row in self.tokenizer(lines[start : start + 1000], add_special_tokens=False)["input_ids"]:
                ids.extend(row)
        return torch.tensor(ids, dtype=torch.long)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:
            return
        streams = {k: self.encode(v) for k, v in self.texts().items()}
        if "validation" not in streams:  # local files: hold out the tail of the training text
            train = streams["train"]
            n_val = max(self.seq_len + 1, int(self.val_fraction * train.numel()))
            streams["train"], streams["validation"] = train[:-n_val], train[-n_val - 1 :]
        sets = {k: LMBlockDataset(v, self.seq_len, name=f"text split {k!r}") for k, v in streams.items()}
        caps = {"train": self.max_train_blocks, "validation": self.max_eval_blocks, "test": self.max_eval_blocks}
        self.datasets = {
            k: Subset(d, range(min(len(d), caps[k]))) if caps[k] is not None else d for k, d in sets.items()
        }
        log.info("text LM blocks of %d: %s", self.seq_len, ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items()))
