"""A conversion corpus built offline: shipped training text plus text sampled from the teacher, cached on disk.

``TextMixDataModule`` feeds attention transfer and finetuning of a pretrained causal LM (pretrained-conversion)
with more text than WikiText's 217K-token valid split:

1. the shipped training sources (``hedgehog.data.text_sources``: WikiText valid articles, SAMSum train
   dialogues, GLUE train sentences), each document tokenised with the model's tokenizer;
2. optionally ``teacher.tokens`` tokens sampled from the teacher model (``hedgehog.data.teacher_samples``),
   prompted with pieces of those documents;
3. decontamination: any document sharing a run of 13 words with an evaluation text (the ``test_file`` and every
   path in ``decontaminate_files``) is dropped;
4. the documents are shuffled (seeded), a ``val_fraction`` of them held out for validation, and each split is
   joined into one stream (end-of-sequence token between documents) and cut into blocks of ``seq_len``.

The result is cached as ``<cache>/text_mix-<key>.pt`` (key: tokenizer, source file hashes, teacher
samples, settings), with a manifest of how many tokens each source gave (``self.manifest``, also logged).
The test split is ``test_file`` (WikiText-2 test by default: ``test/ppl``); it is read for evaluation and
decontamination only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from hedgehog.data.base import DataModuleBase
from hedgehog.data.decontaminate import DEFAULT_N, evaluation_ngrams, overlaps
from hedgehog.data.lm_blocks import LMBlockDataset
from hedgehog.data.pretrained_tokenizer import PretrainedVocabMixin, pad_id
from hedgehog.data.teacher_samples import TeacherSampling, prompt_pool, teacher_documents
from hedgehog.data.text import wikitext_detokenize
from hedgehog.data.text_sources import SOURCES, read_source, source_files

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's vocabulary (so a cache never outlives a different tokenizer)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def evaluation_texts(path: Path) -> list[str]:
    """The texts of one evaluation file: a JSONL file's dialogue and summary fields, or a text file's lines."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [str(r.get(k, "")) for r in rows for k in ("dialogue", "summary")]
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class TextMixDataModule(PretrainedVocabMixin, DataModuleBase):
    """Blocks ``{"input_ids": [B, seq_len], "labels": [B, seq_len]}`` of the mixed corpus; WikiText test as test.

    tokenizer: a Hugging Face tokenizer, or a hub name / folder / alias (``smollm2``).
    data_dir: the shared data root (``wikitext/``, ``samsum/``, ``glue/``).
    sources: which shipped sources to use (``hedgehog.data.text_sources.SOURCES``).
    teacher: None, or ``{model, tokens, prompt_tokens, max_new_tokens, temperature, top_p, batch_size, seed,
        device}`` (``TeacherSampling``); ``tokens: 0`` also means no sampled text.
    test_file: evaluation text (perplexity on its blocks); decontaminate_files: more evaluation files whose
        13-word runs must not appear in training text.
    cache: the folder where the corpus and the teacher's shards are cached (made if missing).
    max_train_blocks / max_eval_blocks: caps for small runs (eval caps validation and test).
    Training batches are all full (the last, incomplete batch of an epoch is dropped).
    """

    drop_last_train = True

    def __init__(
        self,
        tokenizer: Any,
        data_dir: str,
        cache: str,
        sources: list[str] | tuple[str, ...] = SOURCES,
        teacher: Mapping[str, Any] | None = None,
        test_file: str | None = None,
        decontaminate_files: list[str] | tuple[str, ...] = (),
        detokenize_test: bool = True,
        seq_len: int = 1024,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.02,
        seed: int = 0,
        max_train_blocks: int | None = None,
        max_eval_blocks: int | None = None,
        ngram: int = DEFAULT_N,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or not sources:
            raise ValueError(f"data.sources: unknown or empty {list(sources)}; valid sources: {', '.join(SOURCES)}")
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.keep_tokenizer(tokenizer)
        self.data_dir = Path(data_dir).expanduser()
        self.cache_dir = Path(cache).expanduser()
        self.sources = tuple(sources)
        self.teacher = TeacherSampling(**dict(teacher)) if teacher and int(teacher.get("tokens", 0)) > 0 else None
        self.test_file = None if test_file is None else Path(test_file).expanduser()
        self.decontaminate_files = [Path(p).expanduser() for p in decontaminate_files]
        for path in [p for p in (self.test_file, *self.decontaminate_files) if p is not None]:
            if not path.is_file():
                raise FileNotFoundError(
                    f"evaluation file not found: {path}. Point paths.data_dir (env HEDGEHOG_DATA_DIR) at the data root"
                )
        for name in self.sources:
            for path in source_files(name, self.data_dir):
                if not path.is_file():
                    raise FileNotFoundError(
                        f"text source {name!r} needs {path}, which does not exist. Point paths.data_dir (env "
                        f"HEDGEHOG_DATA_DIR) at the data root, or leave {name!r} out of data.sources"
                    )
        self.detokenize_test = detokenize_test
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.seed = seed
        self.max_train_blocks = max_train_blocks
        self.max_eval_blocks = max_eval_blocks
        self.ngram = ngram
        self.manifest: dict[str, Any] | None = None

    def data_files(self) -> list[Path]:
        """Every data file this module reads (training sources, evaluation files)."""
        files = [p for name in self.sources for p in source_files(name, self.data_dir)]
        return files + [p for p in (self.test_file, *self.decontaminate_files) if p is not None]

    # --- building the corpus ------------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(texts), 1000):
            out.extend(self.tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"])
        return out

    def cache_key(self) -> str:
        settings = {
            "version": CACHE_VERSION, "tokenizer": tokenizer_fingerprint(self.tokenizer), "sources": self.sources,
            "files": {f"{p.parent.name}/{p.name}": file_sha256(p) for p in self.data_files()}, "val_fraction": self.val_fraction,
            "seed": self.seed, "ngram": self.ngram,
            "teacher": None if self.teacher is None else {**self.teacher.__dict__, "device": None},
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def build(self) -> dict[str, Any]:
        """Read, sample, decontaminate, shuffle and split the corpus: ``{"train", "validation"}`` token streams
        (int32) and the manifest."""
        docs: list[tuple[str, str, list[int]]] = []  # (source, text, token ids)
        for name in self.sources:
            texts = read_source(name, self.data_dir)
            docs.extend((name, text, ids) for text, ids in zip(texts, self.encode(texts)))
        summary: dict[str, Any] = {}
        if self.teacher is not None:
            pool = prompt_pool([ids for _, _, ids in docs], self.teacher.prompt_tokens)
            sampled, summary = teacher_documents(self.teacher, pool, self.cache_dir, self.tokenizer.eos_token_id)
            texts = self.tokenizer.batch_decode(sampled, skip_special_tokens=True)
            docs.extend(("teacher", text, ids) for text, ids in zip(texts, sampled))
        forbidden = evaluation_ngrams((t for p in self.evaluation_files() for t in evaluation_texts(p)), self.ngram)
        names = list(self.sources) + (["teacher"] if self.teacher is not None else [])
        counts = {n: {"documents": 0, "tokens": 0, "dropped_documents": 0, "dropped_tokens": 0} for n in names}
        kept = []
        for name, text, ids in docs:
            if overlaps(text, forbidden, self.ngram):
                counts[name]["dropped_documents"] += 1
                counts[name]["dropped_tokens"] += len(ids)
                continue
            counts[name]["documents"] += 1
            counts[name]["tokens"] += len(ids)
            kept.append(ids)
        random.Random(self.seed).shuffle(kept)
        n_val = max(1, round(self.val_fraction * len(kept)))
        eos = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else pad_id(self.tokenizer)
        streams = {}
        for split, part in (("validation", kept[:n_val]), ("train", kept[n_val:])):
            flat = [t for ids in part for t in (*ids, eos)]
            streams[split] = torch.tensor(flat, dtype=torch.int32)
        manifest = {
            "sources": counts,
            "tokens": {k: int(v.numel()) for k, v in streams.items()},
            "teacher": None if self.teacher is None else {**self.teacher.__dict__, **summary},
            "decontamination": {"ngram_words": self.ngram, "evaluation_files": [str(p) for p in self.evaluation_files()]},
        }
        return {"streams": streams, "manifest": manifest}

    def evaluation_files(self) -> list[Path]:
        return [p for p in (self.test_file, *self.decontaminate_files) if p is not None]

    def corpus(self) -> dict[str, Any]:
        """The cached corpus (built on first use; ``<cache>/text_mix-<key>.pt``)."""
        path = self.cache_dir / f"text_mix-{self.cache_key()}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        built = self.build()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(built, tmp)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(built["manifest"], indent=2) + "\n")
        return built

    def test_stream(self) -> torch.Tensor:
        text = self.test_file.read_text(encoding="utf-8")
        if self.detokenize_test:
            text = wikitext_detokenize(text)
        lines = [line for line in text.splitlines(keepends=True) if line.strip()]
        return torch.tensor([t for ids in self.encode(lines) for t in ids], dtype=torch.long)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:
            return
        corpus = self.corpus()
        self.manifest = corpus["manifest"]
        sets = {k: LMBlockDataset(v.long(), self.seq_len, name=f"text mix {k!r}") for k, v in corpus["streams"].items()}
        if self.test_file is not None:
            sets["test"] = LMBlockDataset(self.test_stream(), self.seq_len, name=f"test file {self.test_file}")
        caps = {"train": self.max_train_blocks, "validation": self.max_eval_blocks, "test": self.max_eval_blocks}
        for split, cap in caps.items():
            if cap is not None and split in sets:
                sets[split] = Subset(sets[split], range(min(len(sets[split]), cap)))
        self.datasets = sets
        by_source = ", ".join(f"{k} {v['tokens']:,}" for k, v in self.manifest["sources"].items())
        log.info("text mix: tokens by source: %s; blocks of %d: %s", by_source, self.seq_len,
                 ", ".join(f"{k} {len(v)}" for k, v in sets.items()))

    def token_counts(self) -> dict[str, float]:
        """``{"data/tokens/<source>": n, "data/tokens/train": n, ...}`` for results.json."""
        if self.manifest is None:
            self.setup()
        out = {f"data/tokens/{k}": float(v["tokens"]) for k, v in self.manifest["sources"].items()}
        out.update({f"data/tokens/split_{k}": float(v) for k, v in self.manifest["tokens"].items()})
        return out

    def missing_split_message(self, split: str) -> str:
        return f"text mix has no {split!r} split; set data.test_file to evaluate"
