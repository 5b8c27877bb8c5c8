"""GLUE tasks as a LightningDataModule: local TSVs (the ``download_glue_data.py`` layout) or the hub.

Splits (GLUE test labels are not public, so the official *dev* split is our test split):
- train: the official train split minus a held-out, seeded ``val_fraction`` used as validation for model
  selection;
- validation: that held-out part of train;
- test: the official dev split (MNLI: ``dev_matched``).
When only ``dev.tsv`` ships locally (QNLI offline), dev is split, seeded, into test (``dev_test_fraction``)
and a train pool that is split again into train/validation; a warning says so, and the numbers are then
not comparable with published dev scores.

Local files live in ``<data_dir>/glue/<TASK>/{train,dev}.tsv`` (``<data_dir>/<TASK>/`` also accepted).
Quirks handled: CoLA has no header row (columns: source, label, original label, sentence); MRPC files begin
with a UTF-8 byte-order mark; RTE/QNLI/MNLI labels are strings; STS-B labels are float similarity scores
(regression, one output). Fields are tab-separated with no quoting (quotes are literal text in GLUE).
Without local files the split comes from ``datasets.load_dataset("nyu-mll/glue", <task>)``.

Batches: ``{"input_ids", "attention_mask", "token_type_ids" (if the tokenizer makes them), "labels"}``,
padded to the longest sequence of the batch; labels long [B], or float [B] for STS-B.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hedgehog.data.base import DataModuleBase, ListDataset
from hedgehog.data.pretrained_tokenizer import PretrainedTokenizerMixin, pad_id
from hedgehog.data.splits import held_out, train_validation_test
from hedgehog.metrics.glue import glue_metric_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GLUETask:
    """How one GLUE task is stored locally (``folder``, columns) and on the hub (``hub_*``)."""

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    num_labels: int
    hub_text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None = None  # string labels -> their index; None: labels are numbers
    header: tuple[str, ...] | None = None  # column names of a headerless file
    dev_file: str = "dev.tsv"
    hub_validation_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


# Label ids follow the hub's ``glue`` dataset so local and hub data give the same classes.
GLUE_TASKS: dict[str, GLUETask] = {
    t.name: t
    for t in (
        GLUETask("cola", "CoLA", ("sentence",), "label", 2, ("sentence",),
                 header=("source", "label", "original_label", "sentence")),
        GLUETask("sst2", "SST-2", ("sentence",), "label", 2, ("sentence",)),
        GLUETask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", 2, ("sentence1", "sentence2")),
        GLUETask("stsb", "STS-B", ("sentence1", "sentence2"), "score", 1, ("sentence1", "sentence2")),
        GLUETask("qqp", "QQP", ("question1", "question2"), "is_duplicate", 2, ("question1", "question2")),
        GLUETask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", 3, ("premise", "hypothesis"),
                 label_names=("entailment", "neutral", "contradiction"), dev_file="dev_matched.tsv",
                 hub_validation_split="validation_matched"),
        GLUETask("qnli", "QNLI", ("question", "sentence"), "label", 2, ("question", "sentence"),
                 label_names=("entailment", "not_entailment")),
        GLUETask("rte", "RTE", ("sentence1", "sentence2"), "label", 2, ("sentence1", "sentence2"),
                 label_names=("entailment", "not_entailment")),
        GLUETask("wnli", "WNLI", ("sentence1", "sentence2"), "label", 2, ("sentence1", "sentence2")),
    )
}
MAIN_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


def glue_task(name: str) -> GLUETask:
    """Look a task up by any common spelling: ``sst2``, ``SST-2``, ``sst_2``, ``STS-B``, ``MNLI``..."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise ValueError(
            f"unknown GLUE task {name!r}; valid tasks: {', '.join(MAIN_TASKS)} (and wnli)"
        )
    return GLUE_TASKS[key]


Example = tuple[tuple[str, ...], float | int]  # (texts, label)


def read_glue_tsv(path: str | Path, task: str | GLUETask) -> list[Example]:
    """Read one local GLUE TSV into ``[(texts, label), ...]`` with labels mapped to ids (floats for STS-B).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the path for missing columns or
    unknown labels. Rows with the wrong number of fields (a few in the public QQP/MNLI files) are skipped
    with a warning giving their count.
    """
    spec = task if isinstance(task, GLUETask) else glue_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE {spec.folder} file not found: {path}")
    # utf-8-sig drops MRPC's byte-order mark, which would otherwise glue itself to the first column name.
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if spec.header is not None:
        header = list(spec.header)
    else:
        if not rows:
            raise ValueError(f"{path} is empty; expected a header row with columns {list(spec.text_columns)}")
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    needed = [*spec.text_columns, spec.label_column]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ValueError(
            f"{path} lacks columns {missing} needed for GLUE {spec.folder}; it has {header}. "
            f"Expected the download_glue_data.py layout with columns {needed}."
        )
    text_idx = [header.index(c) for c in spec.text_columns]
    label_idx = header.index(spec.label_column)
    label_ids = {n: i for i, n in enumerate(spec.label_names)} if spec.label_names else None
    examples: list[Example] = []
    skipped = 0
    for line_no, row in enumerate(rows, start=1 if spec.header else 2):
        if len(row) != len(header):
            skipped += 1
            continue
        raw = row[label_idx].strip()
        try:
            if spec.is_regression:
                label: float | int = float(raw)
            elif label_ids is not None:
                label = label_ids[raw]
            else:
                label = int(raw)
        except (KeyError, ValueError):
            valid = list(spec.label_names) if spec.label_names else "integers"
            raise ValueError(f"{path}:{line_no}: label {raw!r} is not a valid {spec.folder} label ({valid})") from None
        examples.append((tuple(row[i] for i in text_idx), label))
    if skipped:
        log.warning("%s: skipped %d malformed rows (wrong number of fields)", path, skipped)
    return examples


def _load_hub(spec: GLUETask, hub_dataset: str) -> tuple[list[Example], list[Example]]:
    """Official train and dev splits from the hub (needs network or a populated datasets cache)."""
    from datasets import load_dataset

    ds = load_dataset(hub_dataset, spec.name)

    def examples(split) -> list[Example]:
        cols = [split[c] for c in spec.hub_text_columns]
        labels = split["label"]
        return [(tuple(c[i] for c in cols), labels[i]) for i in range(len(labels))]

    return examples(ds["train"]), examples(ds[spec.hub_validation_split])


class GLUEDataModule(PretrainedTokenizerMixin, DataModuleBase):
    """One GLUE task, tokenised for a pretrained encoder.

    task: any spelling of cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte (or wnli).
    data_dir: folder holding ``glue/<TASK>/`` (the shared data root).
    tokenizer: a Hugging Face tokenizer, or a hub name / local folder / alias (``minilm``) to load one.
    max_length: truncation length of the (pair) encoding.
    val_fraction: part of the train split held out (seeded) for validation.
    dev_test_fraction: part of dev used as test when only dev ships locally (QNLI offline).
    max_train_samples / max_eval_samples: caps for small runs (eval caps validation and test).
    """

    def __init__(
        self,
        task: str,
        data_dir: str,
        tokenizer: Any,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        dev_test_fraction: float = 0.2,
        seed: int = 0,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        num_workers: int = 0,
        hub_dataset: str = "nyu-mll/glue",
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.spec = glue_task(task)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 < dev_test_fraction < 1.0:
            raise ValueError(f"dev_test_fraction must be in (0, 1), got {dev_test_fraction}")
        self.data_dir = Path(data_dir)
        self.keep_tokenizer(tokenizer)
        self.max_length = max_length
        self.val_fraction, self.dev_test_fraction, self.seed = val_fraction, dev_test_fraction, seed
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.hub_dataset = hub_dataset
        self.source: str | None = None  # "local", "local-dev-split" or "hub", set by setup()

    # --- what the model and regime need before setup -----------------------------------------------------
    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def num_labels(self) -> int:
        return self.spec.num_labels

    @property
    def is_regression(self) -> bool:
        return self.spec.is_regression

    @property
    def metric_names(self) -> tuple[str, ...]:
        return glue_metric_names(self.spec.name)

    @property
    def splits(self) -> dict[str, ListDataset] | None:
        """The encoded ``{"train", "validation", "test"}`` datasets (``self.datasets``); None before ``setup``."""
        return self.datasets

    # --- data ---------------------------------------------------------------------------------------------
    def task_dir(self) -> Path:
        for candidate in (self.data_dir / "glue" / self.spec.folder, self.data_dir / self.spec.folder):
            if candidate.is_dir():
                return candidate
        return self.data_dir / "glue" / self.spec.folder

    def data_files(self) -> list[Path]:
        """The local TSVs this task reads (none when it comes from the hub)."""
        folder = self.task_dir()
        return [path for path in (folder / "train.tsv", folder / self.spec.dev_file) if path.is_file()]

    def load_examples(self) -> dict[str, list[Example]]:
        """Raw ``{"train", "validation", "test"}`` examples, split as the module docstring says."""
        folder = self.task_dir()
        train_file, dev_file = folder / "train.tsv", folder / self.spec.dev_file
        g = torch.Generator().manual_seed(self.seed)
        if train_file.is_file():
            if not dev_file.is_file():
                raise FileNotFoundError(
                    f"GLUE {self.spec.folder}: {train_file} exists but {dev_file} (the split used as test) does not"
                )
            pool, test = read_glue_tsv(train_file, self.spec), read_glue_tsv(dev_file, self.spec)
            self.source = "local"
        elif dev_file.is_file():
            dev = read_glue_tsv(dev_file, self.spec)
            pool, test = held_out(dev, self.dev_test_fraction, g)
            self.source = "local-dev-split"
            log.warning(
                "GLUE %s: no %s, so the official dev split (%d rows) is split (seed %d) into test (%d) and "
                "train+validation (%d); scores are not comparable with published dev scores",
                self.spec.folder, train_file, len(dev), self.seed, len(test), len(pool),
            )
        else:
            try:
                pool, test = _load_hub(self.spec, self.hub_dataset)
            except Exception as err:  # offline, missing cache, renamed dataset...
                raise FileNotFoundError(
                    f"GLUE {self.spec.folder}: no local {train_file} or {dev_file}, and "
                    f"load_dataset({self.hub_dataset!r}, {self.spec.name!r}) failed ({type(err).__name__}: {err}). "
                    f"Put the task's TSVs in {folder} or set data_dir (env HEDGEHOG_DATA_DIR)."
                ) from None
            self.source = "hub"
        return train_validation_test(pool, test, self.val_fraction, g, self.max_train_samples, self.max_eval_samples)

    def encode(self, examples: list[Example]) -> list[dict[str, Any]]:
        if not examples:
            return []
        texts = list(zip(*(e[0] for e in examples)))
        enc = self.tokenizer(*[list(t) for t in texts], truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        return [
            {**{k: enc[k][i] for k in keys}, "labels": examples[i][1]} for i in range(len(examples))
        ]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:  # run.py calls fit once per regime stage; encode once
            return
        raw = self.load_examples()
        self.datasets = {name: ListDataset(self.encode(ex)) for name, ex in raw.items()}
        log.info(
            "GLUE %s (%s): %s", self.spec.folder, self.source,
            ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items()),
        )

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence in the batch (right padding, attention_mask 0 on pads)."""
        n = max(len(f["input_ids"]) for f in features)
        pad = pad_id(self.tokenizer)
        ids = torch.full((len(features), n), pad, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        types = torch.zeros((len(features), n), dtype=torch.long) if "token_type_ids" in features[0] else None
        for i, f in enumerate(features):
            m = len(f["input_ids"])
            ids[i, :m] = torch.tensor(f["input_ids"])
            mask[i, :m] = 1
            if types is not None:
                types[i, :m] = torch.tensor(f["token_type_ids"])
        dtype = torch.float32 if self.is_regression else torch.long
        batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in features], dtype=dtype)}
        if types is not None:
            batch["token_type_ids"] = types
        return batch

    def collate_fn(self, split: str) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """Every split is padded by ``collate``."""
        return self.collate
