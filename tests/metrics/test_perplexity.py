import math

import pytest
import torch

from hedgehog.metrics.perplexity import PerplexityAccumulator, perplexity, token_nll


def test_uniform_model_has_perplexity_vocab_size():
    torch.manual_seed(0)
    V = 37
    labels = torch.randint(0, V, (2, 5))
    labels[0, :2] = -100
    nll, n = token_nll(torch.zeros(2, 5, V), labels)
    assert int(n) == 8
    assert perplexity(float(nll), int(n)) == pytest.approx(V, rel=1e-5)


def test_accumulator_weights_batches_by_tokens():
    torch.manual_seed(0)
    acc = PerplexityAccumulator()
    batches = [(torch.randn(1, 7, 11, dtype=torch.float64), torch.randint(0, 11, (1, 7))),
               (torch.randn(3, 2, 11, dtype=torch.float64), torch.randint(0, 11, (3, 2)))]
    total, count = 0.0, 0
    for logits, labels in batches:
        acc.update(logits, labels)
        logp = torch.log_softmax(logits, -1)
        total -= logp.gather(-1, labels[..., None]).sum().item()
        count += labels.numel()
    assert acc.compute() == pytest.approx(math.exp(total / count), rel=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="line up"):
        token_nll(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one"):
        perplexity(1.0, 0)
