"""SAMSum dialogue summarisation for causal LMs: prompt + summary for training, prompts for generation.

Data: ``<data_dir>/samsum/{train,test}.jsonl`` (one JSON object a line with ``id``, ``dialogue``,
``summary``); without local files, ``datasets.load_dataset`` of ``hub_dataset`` (``knkarthick/samsum``, then
``samsum``). The files shipped in the shared data folder are 1,024 + 1,024 disjoint dialogues drawn from the
SAMSum *train* split, not the official test split: scores on them are not comparable with published ones.

Splits: train = train file minus a seeded ``val_fraction`` held out as validation; test = test file.

Batches (causal LM convention of the project, labels already aligned: label t is the token after input t):
- train / validation: ``{"input_ids" [B, N], "attention_mask" [B, N], "labels" [B, N]}``, right-padded, with
  labels ``-100`` everywhere except on the summary tokens (and the closing eos), so the loss is the
  summary's likelihood given the prompt;
- test: ``{"input_ids" [B, P], "attention_mask" [B, P]}`` left-padded prompts (generation continues from the
  right edge), plus ``"references"`` (list of gold summaries) and ``"ids"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hedgehog.data.base import DataModuleBase, ListDataset
from hedgehog.data.pretrained_tokenizer import PretrainedVocabMixin, pad_id
from hedgehog.data.splits import train_validation_test

log = logging.getLogger(__name__)

COLUMNS = ("id", "dialogue", "summary")
DEFAULT_PROMPT = "Summarize this dialog:\n{dialogue}\n---\nSummary:\n"
IGNORE_INDEX = -100


def read_samsum_jsonl(path: str | Path) -> list[dict[str, str]]:
    """Rows of a SAMSum JSONL file; ``ValueError`` naming the path and line for missing columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAMSum file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [c for c in COLUMNS if c not in row]
            if missing:
                raise ValueError(f"{path}:{line_no} lacks columns {missing}; SAMSum rows need {list(COLUMNS)}")
            rows.append({c: str(row[c]).replace("\r\n", "\n") for c in COLUMNS})
    return rows


def _load_hub(hub_dataset: str | list[str]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    from datasets import load_dataset

    names = [hub_dataset] if isinstance(hub_dataset, str) else list(hub_dataset)
    errors = []
    for name in names:
        try:
            ds = load_dataset(name)
        except Exception as err:  # offline or renamed; try the next name
            errors.append(f"{name}: {type(err).__name__}: {err}")
            continue
        return ([{c: str(r[c]) for c in COLUMNS} for r in ds[s]] for s in ("train", "test"))
    raise FileNotFoundError("; ".join(errors))


class SAMSumDataModule(PretrainedVocabMixin, DataModuleBase):
    """SAMSum for a pretrained causal LM.

    data_dir: folder holding ``samsum/{train,test}.jsonl`` (the shared data root).
    tokenizer: a Hugging Face tokenizer, or a name / folder / alias (``smollm2``) to load one.
    max_length: cap on prompt + summary tokens for training; prompts for generation are capped at
        ``max_length - max_new_tokens``. Long dialogues are cut (the prompt's frame text is kept).
    max_new_tokens: generation budget (read by the regime unless it sets its own).
    prompt_template: text around the dialogue; must contain ``{dialogue}``.
    """

    def __init__(
        self,
        data_dir: str,
        tokenizer: Any,
        max_length: int = 512,
        max_new_tokens: int = 64,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        val_fraction: float = 0.05,
        seed: int = 0,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        num_workers: int = 0,
        hub_dataset: str | list[str] = ("knkarthick/samsum", "samsum"),
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        if "{dialogue}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{dialogue}}', got {prompt_template!r}")
        if max_new_tokens >= max_length:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be below max_length ({max_length})")
        self.data_dir = Path(data_dir)
        self.keep_tokenizer(tokenizer)
        self.max_length, self.max_new_tokens = max_length, max_new_tokens
        self.prompt_template = prompt_template
        self.val_fraction, self.seed = val_fraction, seed
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.hub_dataset = list(hub_dataset) if not isinstance(hub_dataset, str) else hub_dataset

    @property
    def splits(self) -> dict[str, ListDataset] | None:
        """The encoded ``{"train", "validation", "test"}`` datasets (``self.datasets``); None before ``setup``."""
        return self.datasets

    # --- tokenisation -------------------------------------------------------------------------------------
    def leading_special_ids(self) -> list[int]:
        """The special tokens the tokenizer puts before a text (Llama's BOS, BERT's CLS; none for GPT-2)."""
        tok = self.tokenizer
        with_special = tok("a", add_special_tokens=True)["input_ids"]
        plain = tok("a", add_special_tokens=False)["input_ids"]
        return with_special[: with_special.index(plain[0])] if plain and plain[0] in with_special else []

    def encode_prompt(self, dialogue: str, budget: int) -> list[int]:
        """Token ids of the prompt (with the tokenizer's BOS, if any), the dialogue cut to fit ``budget``."""
        before, after = self.prompt_template.split("{dialogue}", 1)
        tok = self.tokenizer
        head = self.leading_special_ids() + (tok(before, add_special_tokens=False)["input_ids"] if before else [])
        body = tok(dialogue, add_special_tokens=False)["input_ids"]
        tail = tok(after, add_special_tokens=False)["input_ids"] if after else []
        room = budget - len(head) - len(tail)
        if room < 1:
            raise ValueError(f"the prompt frame alone takes {len(head) + len(tail)} tokens; raise max_length")
        return head + body[:room] + tail

    def encode_train(self, row: dict[str, str]) -> dict[str, list[int]]:
        """input_ids / labels of prompt + summary + eos, labels only on the summary and eos (aligned)."""
        tok = self.tokenizer
        summary = tok(row["summary"].strip(), add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            summary = summary + [tok.eos_token_id]
        summary = summary[: self.max_length // 2]
        prompt = self.encode_prompt(row["dialogue"], self.max_length + 1 - len(summary))
        seq = prompt + summary
        # position t predicts seq[t + 1]; it is scored only when seq[t + 1] belongs to the summary
        labels = [IGNORE_INDEX] * (len(prompt) - 1) + summary
        return {"input_ids": seq[:-1], "labels": labels}

    def encode_eval(self, row: dict[str, str]) -> dict[str, Any]:
        prompt = self.encode_prompt(row["dialogue"], self.max_length - self.max_new_tokens)
        return {"input_ids": prompt, "reference": row["summary"], "id": row["id"]}

    # --- data ---------------------------------------------------------------------------------------------
    def local_files(self) -> tuple[Path, Path]:
        """Where the train and test JSONL files are looked for: ``<data_dir>/samsum/`` or ``<data_dir>/``."""
        folder = self.data_dir / "samsum"
        if not folder.is_dir() and (self.data_dir / "train.jsonl").is_file():
            folder = self.data_dir
        return folder / "train.jsonl", folder / "test.jsonl"

    def data_files(self) -> list[Path]:
        """The local files this DataModule reads (none when the dialogues come from the hub)."""
        return [path for path in self.local_files() if path.is_file()]

    def load_rows(self) -> dict[str, list[dict[str, str]]]:
        train_file, test_file = self.local_files()
        folder = train_file.parent
        if train_file.is_file() or test_file.is_file():
            train, test = read_samsum_jsonl(train_file), read_samsum_jsonl(test_file)
        else:
            try:
                train, test = _load_hub(self.hub_dataset)
            except FileNotFoundError as err:
                raise FileNotFoundError(
                    f"SAMSum: no {train_file} / {test_file} and the hub fallback failed ({err}). Put the JSONL "
                    f"files (id, dialogue, summary) in {folder} or set data_dir (env HEDGEHOG_DATA_DIR)."
                ) from None
        g = torch.Generator().manual_seed(self.seed)
        return train_validation_test(train, test, self.val_fraction, g, self.max_train_samples, self.max_eval_samples)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:
            return
        rows = self.load_rows()
        self.datasets = {
            "train": ListDataset([self.encode_train(r) for r in rows["train"]]),
            "validation": ListDataset([self.encode_train(r) for r in rows["validation"]]),
            "test": ListDataset([self.encode_eval(r) for r in rows["test"]]),
        }
        log.info("SAMSum: %s", ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items()))

    def collate_train(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Right-pad inputs (pad id) and labels (-100)."""
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), pad_id(self.tokenizer), dtype=torch.long)
        labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            m = len(f["input_ids"])
            ids[i, :m] = torch.tensor(f["input_ids"])
            labels[i, :m] = torch.tensor(f["labels"])
            mask[i, :m] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def collate_eval(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Left-pad prompts so every row's next token is generated at the same position."""
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), pad_id(self.tokenizer), dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            m = len(f["input_ids"])
            ids[i, n - m :] = torch.tensor(f["input_ids"])
            mask[i, n - m :] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "references": [f["reference"] for f in features],
            "ids": [f["id"] for f in features],
        }

    def collate_fn(self, split: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Training and validation batches: ``collate_train``; test batches (prompts): ``collate_eval``."""
        return self.collate_eval if split == "test" else self.collate_train
