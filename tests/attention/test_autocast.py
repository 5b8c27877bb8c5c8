"""The attention forms keep their fp32 accumulation under mixed-precision autocast (as Lightning's
``bf16-mixed`` runs them), instead of overflowing or silently summing in bf16."""

import torch

from hedgehog.attention import attention_weights, build_feature_map, linear_attention, softmax_weights


def _inputs(n=37):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(2, 4, n, 16, generator=g)
    k = torch.randn(2, 2, n, 16, generator=g)
    v = torch.randn(2, 2, n, 16, generator=g)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, : n // 3] = False
    return q, k, v, mask


def test_softmax_and_linear_weights_under_bf16_autocast_match_fp32():
    q, k, v, mask = _inputs()
    fq, fk = build_feature_map("hedgehog", 4, 16), build_feature_map("hedgehog", 2, 16)
    qf, kf = fq(q, is_query=True), fk(k)
    ref_s = softmax_weights(q, k, True, mask)
    ref_l = attention_weights(qf, kf, True, mask)
    ref_o = linear_attention(qf, kf, v, True, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = softmax_weights(q, k, True, mask)
        w = attention_weights(qf, kf, True, mask)
        o = linear_attention(qf, kf, v, True, mask)
    assert s.dtype == torch.float32 and w.dtype == torch.float32
    assert torch.isfinite(s).all() and torch.isfinite(w).all() and torch.isfinite(o).all()
    torch.testing.assert_close(s, ref_s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w, ref_l, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(o, ref_o, rtol=1e-5, atol=1e-5)
