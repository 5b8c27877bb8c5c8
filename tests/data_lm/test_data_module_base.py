import pytest
import torch

from hedgehog.data.base import DataModuleBase, ListDataset, check_loader_sizes


class Numbers(DataModuleBase):
    """Splits of consecutive integers; records the stages ``setup`` was called with."""

    def __init__(self, sizes: dict[str, int], batch_size: int, eval_batch_size: int | None = None) -> None:
        super().__init__(batch_size, eval_batch_size=eval_batch_size)
        self.sizes = sizes
        self.stages: list[str | None] = []

    def setup(self, stage: str | None = None) -> None:
        self.stages.append(stage)
        if self.datasets is None:
            self.datasets = {name: ListDataset(list(range(n))) for name, n in self.sizes.items()}


def test_loaders_read_their_split_set_up_on_first_use():
    dm = Numbers({"train": 10, "validation": 5, "test": 7}, batch_size=4, eval_batch_size=3)
    assert dm.datasets is None and dm.stages == []
    torch.manual_seed(0)
    train = [b.tolist() for b in dm.train_dataloader()]
    assert dm.stages == ["fit"]
    assert [len(b) for b in train] == [4, 4, 2]
    assert sorted(sum(train, [])) == list(range(10)) and sum(train, []) != list(range(10))  # shuffled
    assert [b.tolist() for b in dm.val_dataloader()] == [[0, 1, 2], [3, 4]]  # in order, eval batch size
    assert [b.tolist() for b in dm.test_dataloader()] == [[0, 1, 2], [3, 4, 5], [6]]
    assert dm.stages == ["fit"], "splits already set up are not set up again"


def test_eval_batch_size_defaults_to_batch_size():
    dm = Numbers({"train": 4, "validation": 4, "test": 4}, batch_size=2)
    assert dm.eval_batch_size == 2 and dm.val_dataloader().batch_size == 2


def test_subclass_choices_split_names_collate_drop_last_and_missing_split():
    class Pairs(Numbers):
        split_names = ("train", "val", "test")
        drop_last_train = True

        def collate_fn(self, split):
            return lambda items: (split, items)

        def missing_split_message(self, split):
            return f"no {split} here"

    dm = Pairs({"train": 5, "val": 2}, batch_size=2)
    assert [len(items) for _, items in dm.train_dataloader()] == [2, 2]  # the incomplete batch is dropped
    assert [b for b in dm.val_dataloader()] == [("val", [0, 1])]
    with pytest.raises(ValueError, match="no test here"):
        dm.test_dataloader()
    assert dm.stages == ["fit", "test"], "a missing split is set up with its stage before it is reported"
    assert dm.data_files() == []


def test_check_loader_sizes_names_the_first_bad_value():
    check_loader_sizes("M", 0, seq_len=4, batch_size=1)
    with pytest.raises(ValueError, match="M: batch_size must be a positive int, got 0"):
        check_loader_sizes("M", 0, seq_len=4, batch_size=0)
    with pytest.raises(ValueError, match="M: seq_len must be a positive int, got 2.0"):
        check_loader_sizes("M", -1, seq_len=2.0, batch_size=0)
    with pytest.raises(ValueError, match="M: num_workers must be an int >= 0, got -1"):
        check_loader_sizes("M", -1, seq_len=4)
