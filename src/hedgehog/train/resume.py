"""Exact resumption: a run killed at any step and rerun ends with the same weights and metrics as one that
never stopped (same seed, same machine).

Three things make the training after a restart identical to the training without one:

1. the model, optimizer, scheduler and loop state come back from ``last.ckpt`` (Lightning does this);
2. the data order: ``make_train_loader_resumable`` swaps the DataModule's train loader for a
   ``ResumableDataLoader`` whose shuffling depends only on ``(seed, epoch)`` and whose position (batches
   handed out this epoch) is saved in every checkpoint; after a restart it skips the batches already seen.
   Under DDP, Lightning replaces the sampler with a ``DistributedSampler``, which also shuffles by
   ``(seed, epoch)``;
3. the randomness inside a step (dropout, random features): ``StepSeed`` reseeds Python, NumPy and torch from
   ``(seed, epoch, batch index, rank)`` before every training batch, so a step never depends on how much
   randomness earlier code (validation, a restart) consumed.

Stages (``hedgehog.regimes.stages``): each stage keeps its checkpoints in ``<run dir>/checkpoints/<stage>/``;
``mark_stage_done`` writes ``done.json`` there (metrics, steps) once the stage's ``final.ckpt`` is saved, and a
rerun restores finished stages from it instead of training them again.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler

from hedgehog.utils.atomic_files import write_text_atomically

log = logging.getLogger(__name__)

DONE_FILE = "done.json"
FINAL_CHECKPOINT = "final.ckpt"
LAST_CHECKPOINT = "last.ckpt"


def derived_seed(*parts: int) -> int:
    """A 32-bit seed mixing ``parts`` (NumPy's SeedSequence: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class EpochShuffleSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled by a generator seeded from ``(seed, epoch)`` when ``shuffle`` is True.

    Lightning calls ``set_epoch`` before every epoch, so the order of any epoch can be regenerated after a
    restart without replaying the ones before it.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator()
        generator.manual_seed(derived_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose place in the epoch is part of every checkpoint.

    Lightning stores ``state_dict()`` in checkpoints and calls ``load_state_dict()`` before iterating again
    after a restart; the next iterator then skips the batches the interrupted run had already trained on.
    The skip happens on the first ``next()``, after Lightning has set the sampler's epoch.

    Args: those of ``DataLoader``; ``shuffle`` and ``seed`` choose an ``EpochShuffleSampler`` when no sampler
    is given.
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool = False, sampler=None, seed: int = 0,
                 **kwargs: Any) -> None:
        if sampler is None and kwargs.get("batch_sampler") is None:
            sampler = EpochShuffleSampler(len(dataset), seed=seed, shuffle=bool(shuffle))
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._batches_yielded = 0
        self._skip_next = 0

    def __iter__(self) -> Iterator[Any]:
        return _CountingIterator(self, super().__iter__())

    def state_dict(self) -> dict[str, int]:
        return {"batches_yielded": self._batches_yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip_next = int(state.get("batches_yielded", 0))


class _CountingIterator:
    """Wraps one epoch's iterator: skips the batches to skip (lazily), counts the ones handed out."""

    def __init__(self, loader: ResumableDataLoader, iterator: Iterator[Any]) -> None:
        self.loader = loader
        self.iterator = iterator
        self.to_skip = loader._skip_next
        loader._skip_next = 0
        loader._batches_yielded = 0

    def __iter__(self) -> "_CountingIterator":
        return self

    def __next__(self) -> Any:
        while self.to_skip > 0:
            self.to_skip -= 1
            next(self.iterator)  # StopIteration here means the saved epoch was already complete
            self.loader._batches_yielded += 1
        batch = next(self.iterator)
        self.loader._batches_yielded += 1
        return batch

    def __len__(self) -> int:
        return len(self.loader)


def resumable_loader(loader: Any, seed: int) -> Any:
    """``loader`` rebuilt as a ``ResumableDataLoader`` (same dataset, batch size, collate, workers...).

    Loaders it cannot rebuild faithfully (iterable datasets, custom samplers or batch samplers) are returned
    as they are, with a warning: they still resume, but a restart in the middle of an epoch starts that epoch
    over.
    """
    if isinstance(loader, ResumableDataLoader) or not isinstance(loader, DataLoader):
        return loader
    plain_batches = type(loader.batch_sampler) is BatchSampler and type(loader.sampler) in (RandomSampler, SequentialSampler)
    random_sampler = loader.sampler if isinstance(loader.sampler, RandomSampler) else None
    if (
        isinstance(loader.dataset, IterableDataset)
        or not plain_batches
        or (random_sampler is not None and (random_sampler.replacement or random_sampler._num_samples is not None))
    ):
        log.warning(
            "the train loader (%s) has a custom sampler or an iterable dataset: a restart in the middle of an "
            "epoch will start that epoch over instead of continuing it exactly", type(loader).__name__,
        )
        return loader
    kwargs: dict[str, Any] = dict(
        batch_size=loader.batch_size,
        shuffle=random_sampler is not None,
        seed=seed,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return ResumableDataLoader(loader.dataset, **kwargs)


def make_train_loader_resumable(datamodule: L.LightningDataModule, seed: int) -> None:
    """Make ``datamodule.train_dataloader()`` return ``resumable_loader(...)`` of what it returned before.

    Lightning calls the method itself (and, under DDP, rebuilds the loader with a ``DistributedSampler``); the
    wrapper only changes the loader class and its sampler, never the data.
    """
    build = datamodule.train_dataloader
    if getattr(build, "_hedgehog_resumable", False):
        return

    def train_dataloader():
        return resumable_loader(build(), seed)

    train_dataloader._hedgehog_resumable = True  # type: ignore[attr-defined]
    datamodule.train_dataloader = train_dataloader  # type: ignore[method-assign]


class StepSeed(L.Callback):
    """Reseed Python, NumPy and torch (all devices) from ``(seed, epoch, batch index, rank)`` before every
    training batch, so that the randomness of a step does not depend on what ran before it."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        seed = derived_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


# --- stage bookkeeping ----------------------------------------------------------------------------------


def stage_done(stage_dir: Path) -> dict[str, Any] | None:
    """The ``done.json`` record of a finished stage, or None if the stage has not finished."""
    path = Path(stage_dir) / DONE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a half-written marker: the stage reruns from its last checkpoint


def mark_stage_done(stage_dir: Path, record: dict[str, Any]) -> None:
    """Write ``done.json`` atomically (a temporary file beside it, fsync, rename)."""
    write_text_atomically(Path(stage_dir) / DONE_FILE, json.dumps(record, indent=2, sort_keys=True))


def restore_weights(module: L.LightningModule, checkpoint_path: Path) -> None:
    """Load a stage's final weights into ``module`` as Lightning would (``on_load_checkpoint`` then the state dict)."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
