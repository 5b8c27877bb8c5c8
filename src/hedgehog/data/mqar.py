"""Multi-query associative recall (MQAR), as in Zoology (Arora et al., 2023) and the Hedgehog paper (Sec. 5.1).

One example of length ``seq_len`` (k = ``num_kv_pairs``, V = ``vocab_size``):

    k1 v1 k2 v2 ... kk vk | . . k3 . . . . . k1 . . . k2 ...
    `-- 2k tokens: pairs -'  `-- queries: each key once more, in random order, at even offsets 2*g

Keys are drawn without replacement from ``[1, V/2)``, values from ``[V/2, V)`` (disjoint halves). The query gaps
``g`` are drawn without replacement from ``[0, (seq_len - 2k) // 2)`` with ``P(g) ~ (g + 1)^(power_a - 1)``
(a power law: most queries come soon after the pairs, a few far away). The label at a query's position is the
value paired with that key; every other label is -100. Positions that are neither pairs nor queries hold
uniformly random tokens from ``[0, V)`` (Zoology's ``random_non_queries=True``), or 0 with
``random_filler=False`` (``random_non_queries=False``, the setting of Zoology's Figure 2).

Examples are generated on the fly from ``(seed, split, index)``: the same index always gives the same example,
independent of workers, processes and shuffling; train, val and test use different derived seeds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from hedgehog.data.base import DataModuleBase, check_loader_sizes

IGNORE_INDEX = -100
SPLITS = {"train": 0, "val": 1, "test": 2}


def mqar_example(
    rng: np.random.Generator, vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float = 0.01,
    random_filler: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One MQAR example: ``(input_ids [seq_len], labels [seq_len])`` as int64 arrays (labels -100 off-query)."""
    k = num_kv_pairs
    half = vocab_size // 2
    keys = 1 + rng.choice(half - 1, size=k, replace=False)  # from [1, V/2)
    values = half + rng.choice(vocab_size - half, size=k, replace=False)  # from [V/2, V)
    space = (seq_len - 2 * k) // 2  # number of even slots available for queries
    p = (np.arange(1, space + 1, dtype=np.float64)) ** (power_a - 1.0)
    gaps = rng.choice(space, size=k, replace=False, p=p / p.sum())

    input_ids = rng.integers(0, vocab_size, size=seq_len, dtype=np.int64)  # random filler
    if not random_filler:
        input_ids[:] = 0  # drawn anyway, so both settings give the same keys, values and gaps
    input_ids[0 : 2 * k : 2] = keys
    input_ids[1 : 2 * k : 2] = values
    query_positions = 2 * k + 2 * gaps
    input_ids[query_positions] = keys
    labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    labels[query_positions] = values
    return input_ids, labels


def check_mqar_args(vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float) -> None:
    """Raise ValueError naming the first invalid MQAR setting."""
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("num_kv_pairs", num_kv_pairs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"MQAR: {name} must be a positive int, got {value!r}")
    if vocab_size // 2 - 1 < num_kv_pairs:
        raise ValueError(
            f"MQAR: vocab_size={vocab_size} is too small for {num_kv_pairs} distinct keys and values "
            f"(keys come from [1, vocab_size/2)); use vocab_size >= {2 * num_kv_pairs + 2}"
        )
    if seq_len < 4 * num_kv_pairs:
        raise ValueError(
            f"MQAR: seq_len={seq_len} is too short for num_kv_pairs={num_kv_pairs} (2 tokens per pair plus one "
            f"query slot of 2 tokens per key); use seq_len >= {4 * num_kv_pairs} or fewer pairs"
        )
    if not 0 < power_a <= 1:
        raise ValueError(f"MQAR: power_a must be in (0, 1], got {power_a!r}")


class MQARDataset(Dataset):
    """``num_examples`` MQAR examples, example ``i`` generated from ``SeedSequence([seed, split, i])``."""

    def __init__(
        self, num_examples: int, vocab_size: int, seq_len: int, num_kv_pairs: int, seed: int, split: str,
        power_a: float = 0.01, random_filler: bool = True,
    ) -> None:
        check_mqar_args(vocab_size, seq_len, num_kv_pairs, power_a)
        self.num_examples = num_examples
        self.vocab_size, self.seq_len, self.num_kv_pairs, self.power_a = vocab_size, seq_len, num_kv_pairs, power_a
        self.random_filler = bool(random_filler)
        self.seed, self.split_id = seed, SPLITS[split]

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"MQAR example {index} out of range [0, {self.num_examples})")
        rng = np.random.default_rng([self.seed, self.split_id, index])
        input_ids, labels = mqar_example(rng, self.vocab_size, self.seq_len, self.num_kv_pairs, self.power_a,
                                         self.random_filler)
        return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}


class MQARDataModule(DataModuleBase):
    """MQAR train/val/test splits; batches ``{"input_ids": [B, seq_len], "labels": [B, seq_len]}``.

    The three datasets exist from construction on (examples are generated when read), and so does
    ``vocab_size`` (the model is built from it). ``val/acc`` of ``CausalLMModule`` on this data is the recall
    accuracy over all queries.
    """

    split_names = ("train", "val", "test")

    def __init__(
        self,
        vocab_size: int = 8192,
        seq_len: int = 256,
        num_kv_pairs: int = 16,
        num_train: int = 20000,
        num_val: int = 1000,
        num_test: int = 1000,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        power_a: float = 0.01,
        random_filler: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_mqar_args(vocab_size, seq_len, num_kv_pairs, power_a)
        check_loader_sizes(
            "MQARDataModule", num_workers, num_train=num_train, num_val=num_val, num_test=num_test, batch_size=batch_size
        )
        self.save_hyperparameters()
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_kv_pairs = num_kv_pairs
        sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.datasets = {
            split: MQARDataset(n, vocab_size, seq_len, num_kv_pairs, seed, split, power_a, random_filler)
            for split, n in sizes.items()
        }

    def data_files(self) -> list:
        """No files: every example is generated from the seed."""
        return []

    def chance_levels(self) -> dict[str, dict[str, float]]:
        """Recall accuracy without recall: guessing any value (values are drawn from ``vocab_size - vocab_size // 2``
        tokens), and guessing one of the ``num_kv_pairs`` values in the sequence (the plateau a model sits on
        until it learns to recall)."""
        values = self.vocab_size - self.vocab_size // 2
        return {
            "acc": {
                f"a random value (1/{values})": 1.0 / values,
                f"a random one of the {self.num_kv_pairs} values in the sequence (1/{self.num_kv_pairs})":
                    1.0 / self.num_kv_pairs,
            }
        }
