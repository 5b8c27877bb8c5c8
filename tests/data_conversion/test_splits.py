import torch

from hedgehog.data.splits import held_out, train_validation_test


def test_held_out_is_seeded_disjoint_and_at_least_one():
    items = list(range(20))
    rest, out = held_out(items, 0.25, torch.Generator().manual_seed(0))
    assert len(out) == 5 and sorted(rest + out) == items
    assert held_out(items, 0.25, torch.Generator().manual_seed(0)) == (rest, out)
    assert held_out(items, 0.25, torch.Generator().manual_seed(1)) != (rest, out)
    assert len(held_out(items, 0.001, torch.Generator().manual_seed(0))[1]) == 1
    assert held_out(items, 0.0, torch.Generator().manual_seed(0))[1] == []


def test_caps_cut_the_same_shuffled_splits():
    pool, test = list(range(40)), list(range(100, 110))
    full = train_validation_test(pool, test, 0.2, torch.Generator().manual_seed(3))
    assert [len(full[k]) for k in ("train", "validation", "test")] == [32, 8, 10]
    assert full["test"] == test and not set(full["train"]) & set(full["validation"])
    capped = train_validation_test(pool, test, 0.2, torch.Generator().manual_seed(3), max_train=5, max_eval=3)
    assert capped == {"train": full["train"][:5], "validation": full["validation"][:3], "test": test[:3]}
