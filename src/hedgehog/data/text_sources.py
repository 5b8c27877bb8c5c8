"""Training text shipped with the project's data folder, as plain documents, for the conversion corpus.

Sources (``read_source(name, data_dir)``), each from a *training* file only:

- ``wikitext_valid``: WikiText's valid split (``wikitext/wiki.valid.tokens``, detokenised), one document per
  article (split at its `` = Title = `` headings). Offline there is no WikiText train split; the test split is
  never read.
- ``samsum_train``: ``samsum/train.jsonl``, one document per dialogue followed by its summary.
- ``glue_train``: the sentences of every local GLUE ``train.tsv`` (CoLA, SST-2, MRPC, STS-B, RTE, WNLI), each
  distinct sentence once. GLUE's dev files are the reported evaluation split and are never read.

``check_training_file`` refuses any path that names a test or dev split, so a misconfigured source fails
loudly instead of leaking evaluation text into training.
"""

from __future__ import annotations

import re
from pathlib import Path

from hedgehog.data.glue import GLUE_TASKS, read_glue_tsv
from hedgehog.data.samsum import read_samsum_jsonl
from hedgehog.data.text import wikitext_detokenize

SOURCES = ("wikitext_valid", "samsum_train", "glue_train")
GLUE_TRAIN_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
_EVALUATION_NAMES = re.compile(r"(^|[^a-z])(test|dev)([^a-z]|$)", re.IGNORECASE)
_HEADING = re.compile(r"^ = [^=].* = $")


def check_training_file(path: Path) -> Path:
    """``path`` if it exists and is not an evaluation split; ValueError / FileNotFoundError otherwise."""
    if _EVALUATION_NAMES.search(path.name):
        raise ValueError(f"{path} is an evaluation split (its name says test/dev); training text never reads it")
    if not path.is_file():
        raise FileNotFoundError(
            f"training text file not found: {path}. Point paths.data_dir (env HEDGEHOG_DATA_DIR) at the data root "
            f"(../shared/data) or drop the source from data.sources"
        )
    return path


def wikitext_articles(path: Path) -> list[str]:
    """WikiText (tokenised release) cut into articles at their top-level headings, detokenised."""
    articles: list[list[str]] = []
    for line in check_training_file(path).read_text(encoding="utf-8").splitlines(keepends=True):
        if _HEADING.match(line.rstrip("\n")) or not articles:
            articles.append([])
        if line.strip():
            articles[-1].append(line)
    return [wikitext_detokenize("".join(a)).strip() for a in articles if a]


def samsum_documents(path: Path) -> list[str]:
    """Each SAMSum dialogue with its summary: ``"<dialogue>\\n\\nSummary: <summary>"``."""
    rows = read_samsum_jsonl(check_training_file(path))
    return [f"{r['dialogue'].strip()}\n\nSummary: {r['summary'].strip()}" for r in rows]


def glue_sentences(folder: Path, tasks: tuple[str, ...] = GLUE_TRAIN_TASKS) -> list[str]:
    """Every distinct sentence of the given tasks' local ``train.tsv`` files (first-seen order)."""
    seen: dict[str, None] = {}
    for name in tasks:
        task = GLUE_TASKS[name]
        for texts, _ in read_glue_tsv(check_training_file(folder / task.folder / "train.tsv"), task):
            for text in texts:
                text = text.strip()
                if text:
                    seen.setdefault(text, None)
    return list(seen)


def read_source(name: str, data_dir: str | Path) -> list[str]:
    """The documents of source ``name`` (one of ``SOURCES``) under the data root ``data_dir``."""
    root = Path(data_dir).expanduser()
    if name == "wikitext_valid":
        return wikitext_articles(root / "wikitext" / "wiki.valid.tokens")
    if name == "samsum_train":
        return samsum_documents(root / "samsum" / "train.jsonl")
    if name == "glue_train":
        return glue_sentences(root / "glue")
    raise ValueError(f"unknown text source {name!r}; valid: {', '.join(SOURCES)} (and 'teacher' for sampled text)")


def source_files(name: str, data_dir: str | Path) -> list[Path]:
    """The files source ``name`` reads (for cache keys and data identity)."""
    root = Path(data_dir).expanduser()
    if name == "wikitext_valid":
        return [root / "wikitext" / "wiki.valid.tokens"]
    if name == "samsum_train":
        return [root / "samsum" / "train.jsonl"]
    if name == "glue_train":
        return [root / "glue" / GLUE_TASKS[t].folder / "train.tsv" for t in GLUE_TRAIN_TASKS]
    raise ValueError(f"unknown text source {name!r}; valid: {', '.join(SOURCES)}")
