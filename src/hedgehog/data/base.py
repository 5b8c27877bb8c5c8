"""What every DataModule shares: train/val/test dataloaders over a dict of split datasets built on first use.

A subclass sets up ``self.datasets`` (``{split name: Dataset}``, or None before ``setup``) and calls
``DataModuleBase.__init__`` with its batch sizes and worker count. Each dataloader reads one split of
``split_names`` (``train``, ``validation``, ``test`` unless the subclass names them otherwise); a split that is
not set up yet is set up through ``setup(<its stage>)`` (``fit`` for train, ``validate`` for validation, ``test``).
Training batches are shuffled (a fresh order every epoch) and hold ``batch_size`` items; evaluation batches are
in order and hold ``eval_batch_size`` items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

SPLIT_STAGES = {"train": "fit", "val": "validate", "validation": "validate", "test": "test"}


def check_loader_sizes(owner: str, num_workers: int, **sizes: int) -> None:
    """ValueError naming the first of ``sizes`` (in order) that is not a positive int, then ``num_workers`` if it
    is not an int >= 0; messages start with ``owner``."""
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"{owner}: num_workers must be an int >= 0, got {num_workers!r}")


class ListDataset(Dataset):
    """A dataset over a list of ready items (``dataset[i]`` is ``items[i]``)."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class DataModuleBase(L.LightningDataModule):
    """Dataloaders over ``self.datasets``; subclasses build the datasets and may pick collate functions.

    batch_size: items per training batch (per process). eval_batch_size: items per validation / test batch,
    ``batch_size`` when None or 0. num_workers: loader worker processes (kept alive between epochs when > 0).
    """

    split_names: tuple[str, str, str] = ("train", "validation", "test")  # keys read by train/val/test loaders
    drop_last_train: bool = False  # True: the last, incomplete training batch of an epoch is dropped

    def __init__(self, batch_size: int, num_workers: int = 0, eval_batch_size: int | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.datasets: dict[str, Dataset] | None = None

    def data_files(self) -> list[Path]:
        """The data files this module reads (for data identity)."""
        return []

    def collate_fn(self, split: str) -> Callable[[list[Any]], Any] | None:
        """How the items of ``split`` become a batch; None: PyTorch's default (stacked tensors)."""
        return None

    def missing_split_message(self, split: str) -> str:
        """The error for a loader of a split this module does not have after ``setup``."""
        return f"{type(self).__name__} has no {split!r} split"

    def split_dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (a key of ``self.datasets``), set up first if it is not there yet."""
        if self.datasets is None or split not in self.datasets:
            self.setup(SPLIT_STAGES.get(split))
        if split not in self.datasets:
            raise ValueError(self.missing_split_message(split))
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool, batch_size: int, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            self.split_dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            collate_fn=self.collate_fn(split),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split_names[0], True, self.batch_size, drop_last=self.drop_last_train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split_names[1], False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split_names[2], False, self.eval_batch_size)
