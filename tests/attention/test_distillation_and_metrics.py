import math

import pytest
import torch

from hedgehog.attention import (
    attention_entropy,
    attention_weights,
    build_feature_map,
    distillation_loss,
    fidelity_kl,
    monotonicity,
    softmax_weights,
)
from hedgehog.attention.distillation import attention_output_mse


def random_rows(*shape, causal=False):
    w = torch.rand(*shape, dtype=torch.float64) + 0.01
    if causal:
        w = w * torch.ones(shape[-1], shape[-1], dtype=torch.float64).tril()
    return w / w.sum(-1, keepdim=True)


def reference_kl(t, s):
    t, s = t.double(), s.double()
    terms = torch.where(t > 0, t * (torch.log(t) - torch.log(s)), torch.zeros_like(t))
    return terms.sum(-1)


def test_distillation_loss_zero_at_equality_positive_otherwise():
    torch.manual_seed(0)
    t = random_rows(2, 3, 9, 9, causal=True)
    assert distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    s = random_rows(2, 3, 9, 9, causal=True)
    loss = distillation_loss(t, s)
    assert loss.item() > 0
    torch.testing.assert_close(loss, reference_kl(t, s).mean())
    # it is the soft cross-entropy minus the teacher's entropy
    cross = -torch.xlogy(t, s).sum(-1).mean()
    entropy = -(torch.xlogy(t, t)).sum(-1).mean()
    torch.testing.assert_close(loss, cross - entropy)


def test_distillation_loss_masks_padded_queries():
    torch.manual_seed(1)
    t, s = random_rows(2, 2, 6, 6), random_rows(2, 2, 6, 6)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    s_changed = s.clone()
    s_changed[1, :, 3:] = random_rows(1, 2, 3, 6)[0]  # only padded query rows differ
    torch.testing.assert_close(distillation_loss(t, s, mask), distillation_loss(t, s_changed, mask))
    per_row = reference_kl(t, s)
    expected = (per_row * mask[:, None, :]).sum() / (mask.sum() * 2)
    torch.testing.assert_close(distillation_loss(t, s, mask), expected)
    assert distillation_loss(t, t, mask).item() == pytest.approx(0.0, abs=1e-12)


def test_distillation_trains_hedgehog_towards_softmax():
    torch.manual_seed(2)
    q, k = torch.randn(2, 2, 16, 4), torch.randn(2, 2, 16, 4)
    teacher = softmax_weights(q, k, causal=True)
    fq, fk = build_feature_map("hedgehog", 2, 4), build_feature_map("hedgehog", 2, 4)
    opt = torch.optim.Adam([*fq.parameters(), *fk.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        loss = distillation_loss(teacher, attention_weights(fq(q, is_query=True), fk(k), causal=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0]


def test_distillation_loss_errors():
    t = random_rows(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"same shape \[B, H, N, N\]"):
        distillation_loss(t, random_rows(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"student_weights must be \[B, H, N, N\] \(square"):
        distillation_loss(t, torch.rand(1, 2, 4, 3))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \[B, N\]"):
        distillation_loss(t, t, torch.ones(1, 5, dtype=torch.bool))


def test_attention_output_mse():
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(attention_output_mse(a, b), ((a - b) ** 2).mean())
    assert attention_output_mse(a, a).item() == 0.0
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    expected = ((a - b) ** 2).mean(-1)[mask[:, None, :].expand(2, 3, 4)].mean()
    torch.testing.assert_close(attention_output_mse(a, b, mask), expected)


def test_entropy_hand_made_cases():
    n = 7
    one_hot = torch.eye(n)[None, None].repeat(2, 3, 1, 1)
    assert attention_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-7)
    uniform = torch.full((2, 3, n, n), 1.0 / n)
    assert attention_entropy(uniform).item() == pytest.approx(math.log(n), rel=1e-6)
    causal_uniform = torch.ones(n, n).tril()
    causal_uniform = (causal_uniform / causal_uniform.sum(-1, keepdim=True))[None, None]
    per_query = attention_entropy(causal_uniform, reduction="none")
    torch.testing.assert_close(per_query[0, 0], torch.log(torch.arange(1, n + 1).float()))
    mask = torch.tensor([[True] * 3 + [False] * 4])
    assert attention_entropy(causal_uniform, mask).item() == pytest.approx(sum(math.log(i) for i in (1, 2, 3)) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="unknown reduction 'sum'"):
        attention_entropy(uniform, reduction="sum")


def test_fidelity_kl():
    torch.manual_seed(3)
    t, s = random_rows(1, 2, 5, 5), random_rows(1, 2, 5, 5)
    assert fidelity_kl(t, t).item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(fidelity_kl(t, s, reduction="none"), reference_kl(t, s))
    assert fidelity_kl(t, s).item() > 0


def test_monotonicity_hand_made_cases():
    torch.manual_seed(4)
    q, k = torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 8)
    scores = q @ k.transpose(-1, -2)
    for causal in (False, True):
        w = softmax_weights(q, k, causal)
        rho = monotonicity(scores, w, causal=causal, reduction="none")
        assert torch.isnan(rho[..., 0]).all() == causal  # causal query 0 sees one key: no correlation
        assert monotonicity(scores, w, causal=causal).item() == pytest.approx(1.0, abs=1e-6)
    # a strictly decreasing function of q.k gives -1; a permutation gives something in between
    assert monotonicity(scores, torch.softmax(-scores, -1)).item() == pytest.approx(-1.0, abs=1e-6)
    shuffled = torch.softmax(scores[..., torch.randperm(12)], -1)
    assert abs(monotonicity(scores, shuffled).item()) < 0.5
    # ties share ranks: weights that are a step function of the score still correlate positively, < 1
    step = (scores > 0).float()
    rho = monotonicity(scores, step / step.sum(-1, keepdim=True).clamp_min(1)).item()
    assert 0.5 < rho < 1.0


def test_monotonicity_matches_scipy_spearman_with_padding():
    scipy_stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(5)
    scores = torch.randn(1, 1, 6, 6)
    weights = torch.rand(1, 1, 6, 6)
    weights[..., 2] = weights[..., 3]  # a tie
    mask = torch.tensor([[True, True, True, True, True, False]])
    rho = monotonicity(scores, weights, mask, reduction="none")
    for i in range(6):
        expected = scipy_stats.spearmanr(scores[0, 0, i, :5].numpy(), weights[0, 0, i, :5].numpy()).statistic
        assert rho[0, 0, i].item() == pytest.approx(expected, abs=1e-6)
    assert monotonicity(scores, weights, mask).item() == pytest.approx(rho[0, 0, :5].mean().item(), abs=1e-6)
