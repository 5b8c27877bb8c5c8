"""The sliding-window + Hedgehog hybrid against a float64 reference built from its definition: weights, outputs,
gradients, GQA, padding, both directions, bf16 at real activation scales, and decoding on the constant state."""

import math

import pytest
import torch

from hedgehog.attention import (
    attend, build_feature_map, calibrated_log_balance, hybrid_attention, hybrid_prefill, hybrid_step, hybrid_weights,
)
from hybrid_reference import hedgehog_logs, hybrid_reference
from attention_references import padding_mask


def maps(hq, hk, d, window, dtype=torch.float64, seed=0, feature_dim=None):
    torch.manual_seed(seed)
    fq = build_feature_map("hedgehog_window", hq, d, window=window, init="random", feature_dim=feature_dim).to(dtype)
    fk = build_feature_map("hedgehog_window", hk, d, window=window, init="random", feature_dim=feature_dim).to(dtype)
    return fq, fk


def inputs(b, hq, hk, n, d, dv=None, scale=1.0, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, n, d, generator=g, dtype=torch.float64) * scale
    k = torch.randn(b, hk, n, d, generator=g, dtype=torch.float64) * scale
    v = torch.randn(b, hk, n, dv or d, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def reference(q, k, v, fq, fk, beta, window, causal, mask=None):
    return hybrid_reference(q, k, v, fq.weight, fq.bias, fk.weight, fk.bias, beta, window, causal, mask)


@pytest.mark.parametrize("n,window", [(1, 4), (5, 4), (8, 4), (13, 4), (21, 1), (19, 8), (40, 3)])
@pytest.mark.parametrize("hq,hk", [(4, 4), (6, 2)])
@pytest.mark.parametrize("causal", [True, False])
def test_output_and_weights_match_reference(n, window, hq, hk, causal):
    d = 8
    fq, fk = maps(hq, hk, d, window)
    q, k, v = inputs(2, hq, hk, n, d, dv=5)
    beta = torch.randn(hq, dtype=torch.float64)
    w_ref, y_ref = reference(q, k, v, fq, fk, beta, window, causal)
    y = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=causal, log_balance=beta)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    w = hybrid_weights(q, k, fq.pair(fk, q, k), window=window, log_balance=beta, causal=causal)
    torch.testing.assert_close(w, w_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w[..., 0]))


@pytest.mark.parametrize("causal", [True, False])
def test_key_padding(causal):
    fq, fk = maps(4, 2, 8, 3)
    q, k, v = inputs(2, 4, 2, 11, 8)
    mask = padding_mask(2, 11)
    beta = torch.randn(4, dtype=torch.float64)
    _, y_ref = reference(q, k, v, fq, fk, beta, 3, causal, mask)
    y = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=causal, key_padding_mask=mask, log_balance=beta)
    real = mask[:, None, :, None] if not causal else torch.ones_like(y, dtype=torch.bool)
    # rows of padded queries are free in the bidirectional case; causal rows all have a defined value
    torch.testing.assert_close(torch.where(real, y, 0), torch.where(real, y_ref, 0), rtol=1e-9, atol=1e-10)


def test_gradients_match_reference():
    hq, hk, d, n, window = 4, 2, 6, 14, 4
    fq, fk = maps(hq, hk, d, window)
    q, k, v = inputs(1, hq, hk, n, d)
    beta = torch.randn(hq, dtype=torch.float64)
    leaves = [q, k, v, beta, fq.weight, fq.bias, fk.weight, fk.bias]
    for t in leaves:
        t.requires_grad_(True)
    upstream = torch.randn(1, hq, n, d, dtype=torch.float64)
    y = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True, log_balance=beta)
    grads = torch.autograd.grad((y * upstream).sum(), leaves)
    _, y_ref = reference(q, k, v, fq, fk, beta, window, True)
    grads_ref = torch.autograd.grad((y_ref * upstream).sum(), leaves)
    for name, g, r in zip("q k v beta Wq bq Wk bk".split(), grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_large_activations_in_bfloat16():
    """Real LLM heads reach |q|, |k| ~ 100: the bf16 path stays finite and close to the exact float64 answer."""
    hq, hk, d, n, window = 6, 2, 16, 70, 8
    fq, fk = maps(hq, hk, d, window)
    with torch.no_grad():
        for fm in (fq, fk):
            fm.weight.copy_(torch.eye(d).expand_as(fm.weight))
            fm.bias.zero_()
    q, k, v = (t.bfloat16() for t in inputs(2, hq, hk, n, d, scale=30.0))
    assert q.abs().max() > 90
    beta = torch.zeros(hq, dtype=torch.float64)
    _, y_ref = reference(q.double(), k.double(), v.double(), fq, fk, beta, window, True)  # exact, same inputs
    y = attend(q, k, v, feature_map_q=fq.float(), feature_map_k=fk.float(), causal=True, log_balance=beta.float())
    assert torch.isfinite(y).all()
    err = (y.double() - y_ref).norm() / y_ref.norm()
    assert err < 2e-2, err


def test_decoding_matches_the_parallel_form():
    hq, hk, d, n, window = 4, 2, 8, 17, 5
    fq, fk = maps(hq, hk, d, window)
    q, k, v = inputs(2, hq, hk, n, d, scale=3.0)
    beta = torch.randn(hq, dtype=torch.float64)
    full = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True, log_balance=beta)
    for prompt in (1, 3, 5, 9):
        out, state = hybrid_prefill(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt], fq, fk, window=window,
                                    log_balance=beta)
        outs = [out]
        for t in range(prompt, n):
            y, state = hybrid_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], fq, fk, state, log_balance=beta)
            outs.append(y)
        torch.testing.assert_close(torch.cat(outs, 2), full, rtol=1e-9, atol=1e-10)
        assert state.keys.shape[2] == window and state.seen == n


def test_decoding_state_stays_exact_when_later_keys_are_larger():
    """A key larger than every key of the prompt raises the key shift; the state is rescaled, not broken."""
    hq, hk, d, window = 2, 2, 4, 2
    fq, fk = maps(hq, hk, d, window)
    q, k, v = inputs(1, hq, hk, 12, d)
    k[:, :, 8:] *= 40.0
    beta = torch.zeros(hq, dtype=torch.float64)
    full = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True, log_balance=beta)
    out, state = hybrid_prefill(q[:, :, :4], k[:, :, :4], v[:, :, :4], fq, fk, window=window, log_balance=beta)
    outs = [out]
    for t in range(4, 12):
        y, state = hybrid_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], fq, fk, state, log_balance=beta)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 2), full, rtol=1e-8, atol=1e-10)


def test_calibrated_balance_matches_definition():
    hq, hk, d, n, window = 4, 2, 6, 12, 3
    fq, fk = maps(hq, hk, d, window)
    q, k, _ = inputs(2, hq, hk, n, d)
    beta = calibrated_log_balance(q, k, fq.pair(fk, q, k), window=window, causal=True)
    s = torch.einsum("bhid,bhjd->bhij", q, k.repeat_interleave(2, 1)) / math.sqrt(d)
    lq, lk = hedgehog_logs(q, fq.weight, fq.bias), hedgehog_logs(k, fk.weight, fk.bias).repeat_interleave(2, 1)
    lin = torch.logsumexp(lq[:, :, :, None] + lk[:, :, None], -1)
    rel = torch.arange(n)[:, None] - torch.arange(n)[None]
    in_w = (rel >= 0) & (rel < window)
    gap = torch.logsumexp(s.masked_fill(~in_w, -math.inf), -1) - torch.logsumexp(lin.masked_fill(~in_w, -math.inf), -1)
    torch.testing.assert_close(beta.double(), gap.mean(dim=(0, 2)), rtol=1e-5, atol=1e-5)
    # with that balance, the window's linear mass equals its softmax mass on average (in log space)


def test_window_beyond_the_sequence_is_softmax():
    """A window covering every key is exact softmax attention, whatever the balance."""
    from attention_references import softmax_output

    fq, fk = maps(4, 2, 8, 64)
    q, k, v = inputs(2, 4, 2, 20, 8)
    y = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True, log_balance=torch.full((4,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(y, softmax_output(q, k, v, True), rtol=1e-9, atol=1e-10)


def test_default_balance_and_bad_window():
    fq, fk = maps(2, 2, 4, 3)
    q, k, v = inputs(1, 2, 2, 5, 4)
    _, y_ref = reference(q, k, v, fq, fk, torch.zeros(2, dtype=torch.float64), 3, True)
    torch.testing.assert_close(attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True), y_ref)
    with pytest.raises(ValueError, match="window"):
        build_feature_map("hedgehog_window", 2, 4, window=0)
