import math

import pytest
import torch

from hedgehog.attention import build_feature_map, linear_attention
from attention_references import linear_output, softmax_output


def rand(*shape, dtype=torch.float64, scale=1.0):
    return torch.randn(*shape, dtype=dtype) * scale


# ---------------------------------------------------------------- hedgehog
def test_hedgehog_identity_init_kernel():
    torch.manual_seed(0)
    fq = build_feature_map("hedgehog", 3, 6).double()
    fk = build_feature_map("hedgehog", 3, 6).double()
    q, k = rand(2, 3, 5, 6), rand(2, 3, 7, 6)
    kernel = torch.einsum("bhif,bhjf->bhij", fq(q, is_query=False), fk(k))
    expected = (torch.exp(q[:, :, :, None] + k[:, :, None]) + torch.exp(-q[:, :, :, None] - k[:, :, None])).sum(-1)
    torch.testing.assert_close(kernel, expected)
    assert fq.weight.shape == (3, 6, 6) and fq.bias.shape == (3, 6) and fq.feature_dim == 12


def test_hedgehog_stable_query_is_a_per_token_rescaling():
    torch.manual_seed(1)
    fm = build_feature_map("hedgehog", 2, 4, init="random").double()
    x = rand(1, 2, 9, 4, scale=5.0)
    stable, plain = fm(x, is_query=True), fm(x, is_query=False)
    ratio = plain / stable
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
    assert stable.max() <= 1.0 + 1e-12
    torch.testing.assert_close(stable.amax(-1), torch.ones(1, 2, 9, dtype=torch.float64))


@pytest.mark.parametrize("feature_dim", [3, 6, 10])
def test_hedgehog_identity_like_init_for_other_widths(feature_dim):
    fm = build_feature_map("hedgehog", 2, 6, feature_dim=feature_dim)
    assert fm.feature_dim == 2 * feature_dim
    torch.testing.assert_close(fm.weight[1], torch.eye(6, feature_dim))
    x = torch.randn(1, 2, 4, 6)
    u = x[..., :feature_dim] if feature_dim <= 6 else torch.cat([x, torch.zeros(1, 2, 4, feature_dim - 6)], -1)
    torch.testing.assert_close(fm(x), torch.cat([u.exp(), (-u).exp()], -1))


def test_hedgehog_random_init_bias_and_softmax_activation():
    torch.manual_seed(2)
    fm = build_feature_map("hedgehog", 2, 4, init="random", bias=False, feature_dim=5).double()
    assert fm.bias is None and not torch.allclose(fm.weight[0, :, :4], torch.eye(4, dtype=torch.float64))
    x = rand(3, 2, 6, 4)
    u = torch.einsum("bhnd,hdf->bhnf", x, fm.weight)
    torch.testing.assert_close(fm(x), torch.cat([u.exp(), (-u).exp()], -1))
    sm = build_feature_map("hedgehog", 2, 4, activation="softmax").double()
    out = sm(x, is_query=True)
    torch.testing.assert_close(out, torch.cat([torch.softmax(x, -1), torch.softmax(-x, -1)], -1))
    assert [n for n, _ in fm.named_parameters()] == ["weight"]


@pytest.mark.parametrize("causal", [True, False])
def test_hedgehog_bf16_with_entries_at_70_stays_finite_and_accurate(causal):
    torch.manual_seed(3)
    b, h, n, d = 2, 2, 40, 8
    q = (torch.rand(b, h, n, d) * 2 - 1) * 70
    k = (torch.rand(b, h, n, d) * 2 - 1) * 70
    q[..., 0], k[..., 1] = 70.0, -70.0
    v = torch.randn(b, h, n, 4)
    fq, fk = build_feature_map("hedgehog", h, d), build_feature_map("hedgehog", h, d)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    qf, kf = fq(qb, is_query=True), fk(kb)
    assert torch.isfinite(qf).all() and torch.isfinite(kf).all()
    out = linear_attention(qf, kf, vb, causal, chunk_size=16)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    # reference: the exact kernel on the same (bf16-rounded) inputs, in float64 via log-sum-exp
    qd, kd = qb.double(), kb.double()
    logk = torch.logsumexp(torch.stack([qd[:, :, :, None] + kd[:, :, None], -qd[:, :, :, None] - kd[:, :, None]]), 0)
    logk = torch.logsumexp(logk, -1)
    if causal:
        logk = logk.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    ref = torch.softmax(logk, -1) @ vb.double()
    assert (out.double() - ref).abs().max() < 0.05


# ---------------------------------------------------------------- taylor
@pytest.mark.parametrize("deduplicate", [False, True])
def test_taylor_kernel_identity(deduplicate):
    torch.manual_seed(4)
    d = 5
    fm = build_feature_map("taylor", 2, d, deduplicate=deduplicate)
    assert fm.feature_dim == (1 + d + d * (d + 1) // 2 if deduplicate else 1 + d + d * d)
    q, k = rand(2, 2, 6, d), rand(2, 2, 7, d)
    kernel = torch.einsum("bhif,bhjf->bhij", fm(q, is_query=True), fm(k))
    s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d)
    torch.testing.assert_close(kernel, 1 + s + s**2 / 2)


# ---------------------------------------------------------------- elu
def test_elu_map():
    x = rand(1, 2, 3, 4)
    out = build_feature_map("elu", 2, 4)(x)
    torch.testing.assert_close(out, torch.where(x > 0, x + 1, torch.exp(x)))
    assert (out > 0).all()


# ---------------------------------------------------------------- performer
def performer_kernel_error(num_features, q, k, seed):
    fq = build_feature_map("performer", 1, q.shape[-1], num_features=num_features, seed=seed)
    fk = build_feature_map("performer", 1, q.shape[-1], num_features=num_features, seed=seed)
    est = torch.einsum("bhif,bhjf->bhij", fq(q, is_query=True).double(), fk(k).double())
    # the query shift is a per-row factor: compare row-normalised kernels (what attention sees)
    exact = torch.exp(torch.einsum("bhid,bhjd->bhij", q.double(), k.double()) / math.sqrt(q.shape[-1]))
    est, exact = est / est.sum(-1, keepdim=True), exact / exact.sum(-1, keepdim=True)
    return ((est - exact).abs().sum(-1)).mean().item()


def test_performer_converges_to_softmax_kernel():
    torch.manual_seed(5)
    q, k = torch.randn(1, 1, 16, 16) * 0.5, torch.randn(1, 1, 32, 16) * 0.5
    errors = {m: sum(performer_kernel_error(m, q, k, seed) for seed in range(3)) / 3 for m in (16, 256, 4096)}
    assert errors[16] > errors[256] > errors[4096]
    assert errors[4096] < 0.25 * errors[16]
    assert errors[4096] < 0.035  # ~1/sqrt(m) decay; a biased projection stalls near 0.04


def test_performer_attention_approaches_softmax_attention():
    torch.manual_seed(6)
    q, k, v = torch.randn(1, 2, 20, 8) * 0.5, torch.randn(1, 2, 20, 8) * 0.5, torch.randn(1, 2, 20, 3)
    ref = softmax_output(q, k, v, causal=True)
    errs = []
    for m in (8, 4096):
        fq = build_feature_map("performer", 2, 8, num_features=m, seed=1)
        fk = build_feature_map("performer", 2, 8, num_features=m, seed=1)
        out = linear_attention(fq(q, is_query=True), fk(k), v, causal=True)
        errs.append((out.double() - ref).abs().mean().item())
    assert errs[1] < errs[0] and errs[1] < 0.03


def test_performer_determinism_and_redraw():
    a = build_feature_map("performer", 2, 8, num_features=24, seed=7)
    b = build_feature_map("performer", 2, 8, num_features=24, seed=7)
    c = build_feature_map("performer", 2, 8, num_features=24, seed=8)
    assert torch.equal(a.projection, b.projection)
    assert not torch.equal(a.projection, c.projection)
    assert "projection" in dict(a.named_buffers()) and not list(a.parameters())
    assert "projection" in a.state_dict()
    before = a.projection.clone()
    a.redraw()
    assert not torch.equal(before, a.projection)
    b.redraw()  # the same number of redraws keeps q and k maps identical
    assert torch.equal(a.projection, b.projection)
    a.redraw(seed=7)
    assert torch.equal(a.projection, before)
    # orthogonal directions within a block of D
    directions = a.projection[:8] / a.projection[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(directions @ directions.T, torch.eye(8), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- cosformer
def test_cosformer_kernel_is_relu_times_cos_of_distance():
    torch.manual_seed(9)
    m = 50
    fm = build_feature_map("cosformer", 2, 4, max_positions=m)
    q, k = rand(1, 2, 6, 4), rand(1, 2, 6, 4)
    pos = torch.tensor([0, 3, 7, 8, 20, 49])
    kernel = torch.einsum("bhif,bhjf->bhij", fm(q, is_query=True, positions=pos), fm(k, positions=pos))
    relu = torch.einsum("bhid,bhjd->bhij", q.relu(), k.relu())
    cos = torch.cos(math.pi * (pos[:, None] - pos[None, :]).double() / (2 * m))
    torch.testing.assert_close(kernel, relu * cos)
    # default positions are arange(N); [B, N] positions are accepted
    torch.testing.assert_close(fm(q, positions=torch.arange(6)[None]), fm(q))


def test_cosformer_position_errors():
    fm = build_feature_map("cosformer", 1, 4, max_positions=8)
    with pytest.raises(ValueError, match=r"max_positions=8.*larger max_positions"):
        fm(torch.randn(1, 1, 9, 4))
    with pytest.raises(ValueError, match=r"\[0, max_positions=8\), got \[0, 8\]"):
        fm(torch.randn(1, 1, 2, 4), positions=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match=r"got \[-1, 3\]"):
        fm(torch.randn(1, 1, 2, 4), positions=torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match=r"positions must be \[N\] or \[B, N\]"):
        fm(torch.randn(1, 1, 3, 4), positions=torch.arange(4))
    with pytest.raises(TypeError, match="integer tensor"):
        fm(torch.randn(1, 1, 3, 4), positions=torch.arange(3.0))


# ---------------------------------------------------------------- t2r
def test_t2r_is_per_head_linear_relu():
    torch.manual_seed(10)
    fm = build_feature_map("t2r", 3, 4, feature_dim=6).double()
    x = rand(2, 3, 5, 4)
    expected = torch.relu(torch.einsum("bhnd,hdf->bhnf", x, fm.weight) + fm.bias[None, :, None])
    torch.testing.assert_close(fm(x), expected)
    assert fm.weight.shape == (3, 4, 6) and fm.weight.requires_grad
    assert not torch.equal(fm.weight[0], fm.weight[1])  # random, per head


@pytest.mark.parametrize("name", ["hedgehog", "performer", "taylor", "elu", "cosformer", "t2r"])
def test_every_map_through_linear_attention_matches_reference(name):
    torch.manual_seed(11)
    fq = build_feature_map(name, 4, 8).double()
    fk = build_feature_map(name, 2, 8).double()
    q, k, v = rand(2, 4, 21, 8), rand(2, 2, 21, 8), rand(2, 2, 21, 3)
    qf, kf = fq(q, is_query=True), fk(k)
    for causal in (True, False):
        out = linear_attention(qf, kf, v, causal, chunk_size=8)
        torch.testing.assert_close(out, linear_output(qf, kf, v, causal))


def test_hedgehog_fp16_keys_stay_fp32_and_finite():
    fm = build_feature_map("hedgehog", 1, 4)
    x = torch.full((1, 1, 2, 4), 40.0, dtype=torch.float16)
    keys, queries = fm(x), fm(x, is_query=True)
    assert keys.dtype == torch.float32 and torch.isfinite(keys).all()  # exp(40) overflows fp16
    assert queries.dtype == torch.float16 and torch.isfinite(queries).all()


@pytest.mark.parametrize("name", ["hedgehog", "taylor", "elu", "performer", "cosformer", "t2r"])
def test_gradcheck_feature_maps_through_attention(name):
    torch.manual_seed(12)
    fq, fk = build_feature_map(name, 2, 3).double(), build_feature_map(name, 1, 3).double()
    q, k, v = (rand(1, 2, 4, 3) * 0.5).requires_grad_(), (rand(1, 1, 4, 3) * 0.5).requires_grad_(), rand(1, 1, 4, 2)
    params = [p for p in (*fq.parameters(), *fk.parameters())]

    def run(q_, k_, *_):
        return linear_attention(fq(q_, is_query=True), fk(k_), v, True, chunk_size=2)

    assert torch.autograd.gradcheck(run, (q, k, *params))
