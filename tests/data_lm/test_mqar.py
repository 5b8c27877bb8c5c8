"""MQAR generator: layout, labels, power-law gaps, determinism under the seed, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hedgehog.data.mqar import MQARDataModule, MQARDataset

V, L, K = 128, 64, 8


def dataset(seed=0, split="train", n=50, **kwargs):
    options = dict(vocab_size=V, seq_len=L, num_kv_pairs=K)
    options.update(kwargs)
    return MQARDataset(n, seed=seed, split=split, **options)


def test_layout_and_labels():
    data = dataset(n=200)
    for i in range(len(data)):
        ids, labels = data[i]["input_ids"], data[i]["labels"]
        assert ids.shape == labels.shape == (L,) and ids.dtype == labels.dtype == torch.long
        keys, values = ids[0 : 2 * K : 2], ids[1 : 2 * K : 2]
        assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
        assert len(set(keys.tolist())) == K and len(set(values.tolist())) == K
        pairs = dict(zip(keys.tolist(), values.tolist()))
        queries = (labels != -100).nonzero().flatten()
        assert len(queries) == K  # one query per key
        assert (queries >= 2 * K).all() and ((queries - 2 * K) % 2 == 0).all()
        assert sorted(ids[queries].tolist()) == sorted(keys.tolist())  # every key asked once
        for p in queries.tolist():
            assert labels[p].item() == pairs[ids[p].item()]  # the value paired with that key earlier
        assert (ids >= 0).all() and (ids < V).all()


def test_gaps_follow_a_power_law():
    data = dataset(n=400, seq_len=256)
    space = (256 - 2 * K) // 2
    gaps = np.concatenate(
        [((data[i]["labels"] != -100).nonzero().flatten().numpy() - 2 * K) // 2 for i in range(len(data))]
    )
    assert gaps.min() >= 0 and gaps.max() < space
    counts = np.bincount(gaps, minlength=space)
    # P(g) ~ (g+1)^(-0.99): the first slot far more often than slots at the far end; near-by queries dominate
    assert counts[0] > 5 * counts[space // 2 :].mean()
    assert (gaps < space // 4).mean() > 0.5


def test_zero_filler_keeps_the_same_pairs_and_queries():
    """random_filler=False (Zoology's random_non_queries=False): filler is 0, pairs, queries and labels unchanged."""
    noisy, clean = dataset(n=20), dataset(n=20, random_filler=False)
    for i in range(len(noisy)):
        a, b = noisy[i], clean[i]
        assert torch.equal(a["labels"], b["labels"])
        used = torch.zeros(L, dtype=torch.bool)
        used[: 2 * K] = True
        used[a["labels"] != -100] = True
        assert torch.equal(a["input_ids"][used], b["input_ids"][used])
        assert (b["input_ids"][~used] == 0).all() and (a["input_ids"][~used] != 0).any()


def test_deterministic_under_seed_and_split():
    a, b = dataset(seed=3), dataset(seed=3)
    for i in (0, 7, 49):
        assert torch.equal(a[i]["input_ids"], b[i]["input_ids"]) and torch.equal(a[i]["labels"], b[i]["labels"])
    assert not torch.equal(a[0]["input_ids"], dataset(seed=4)[0]["input_ids"])
    assert not torch.equal(a[0]["input_ids"], dataset(seed=3, split="val")[0]["input_ids"])
    assert not torch.equal(a[0]["input_ids"], a[1]["input_ids"])


def test_datamodule_splits_batches_and_vocab():
    dm = MQARDataModule(vocab_size=V, seq_len=L, num_kv_pairs=K, num_train=40, num_val=10, num_test=12,
                        batch_size=8, seed=1)
    assert dm.vocab_size == V  # known before setup: the model is sized from it
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (8, L)
    assert [len(b["input_ids"]) for b in dm.test_dataloader()] == [8, 4]
    first_val = next(iter(dm.val_dataloader()))["input_ids"]
    again = MQARDataModule(vocab_size=V, seq_len=L, num_kv_pairs=K, num_train=40, num_val=10, num_test=12,
                           batch_size=8, seed=1)
    assert torch.equal(first_val, next(iter(again.val_dataloader()))["input_ids"])
    test_ids = torch.cat([b["input_ids"] for b in dm.test_dataloader()])
    assert not any(torch.equal(first_val[0], row) for row in test_ids)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="seq_len=30 is too short for num_kv_pairs=8"):
        MQARDataModule(vocab_size=V, seq_len=30, num_kv_pairs=8)
    with pytest.raises(ValueError, match="vocab_size=16 is too small"):
        MQARDataModule(vocab_size=16, seq_len=64, num_kv_pairs=8)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        MQARDataModule(vocab_size=V, seq_len=L, num_kv_pairs=K, batch_size=0)
