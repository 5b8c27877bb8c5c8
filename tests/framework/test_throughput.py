"""TrainThroughput: tokens counted per batch kind, validation time left out of the training seconds."""

import torch

from hedgehog.callbacks import throughput
from hedgehog.callbacks.throughput import TrainThroughput, batch_tokens


def test_batch_tokens_counts_real_tokens_or_elements():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert int(batch_tokens({"input_ids": torch.zeros(2, 3), "attention_mask": mask})) == 3
    assert batch_tokens({"input_ids": torch.zeros(2, 5)}) == 10
    assert batch_tokens((torch.zeros(4, 7), torch.zeros(4, 7))) == 28
    assert batch_tokens({"labels": [1, 2]}) == 0


def test_seconds_exclude_validation(monkeypatch):
    clock = iter([0.0, 1.0, 1.5, 3.5, 5.0])  # first batch start, its end, validation start and end, last batch end
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    cb = TrainThroughput()
    assert cb.result() == {}
    batch = {"input_ids": torch.zeros(2, 8)}
    cb.on_train_batch_start(None, None, batch, 0)
    cb.on_train_batch_end(None, None, None, batch, 0)
    cb.on_validation_start(None, None)
    cb.on_validation_end(None, None)
    cb.on_train_batch_start(None, None, batch, 1)
    cb.on_train_batch_end(None, None, None, batch, 1)
    result = cb.result()
    # 5 s from the first batch to the last, 2 s of them validating: 32 tokens in 3 s
    assert result == {"train_batches": 2, "train_tokens": 32, "train_seconds": 3.0, "tokens_per_s": round(32 / 3, 1)}
