"""The sliding-window + Hedgehog hybrid's fused kernels (Triton's CPU interpreter) against the float64 PyTorch
reference: outputs and the gradients of q, k, v, both maps and the balance; GQA, padding, several segments,
windows shorter and longer than a chunk, 16-bit inputs at real activation scales."""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the kernels cannot run")

from hedgehog.attention import build_feature_map, hybrid_attention as reference_hybrid  # noqa: E402
from hedgehog.attention.feature_maps.hedgehog import KEY_HEADROOM  # noqa: E402
from hedgehog.kernels import chunked_forward, hybrid  # noqa: E402

pytestmark = pytest.mark.skipif(
    type(chunked_forward.chunk_output_kernel).__name__ != "InterpretedFunction",
    reason="the kernels were compiled for a GPU; the interpreter tests run on CPU-only machines",
)


def rel_err(a, b) -> float:
    """Relative error; where the reference is exactly 0 (no linear pair at all), the result's own size."""
    a, b = a.detach().double(), b.detach().double()
    assert torch.isfinite(a).all(), "non-finite values in the kernel result"
    return ((a - b).norm() / b.norm()).item() if b.norm() > 0 else a.abs().max().item()


def case(b, hq, hk, n, d, window, dtype, masked, scale=0.7, seed=0, segment_size=32, identity=False):
    torch.manual_seed(seed)
    q = (torch.randn(b, hq, n, d) * scale).to(dtype)
    k = (torch.randn(b, hk, n, d) * scale).to(dtype)
    v = torch.randn(b, hk, n, d).to(dtype)
    init = "identity" if identity else "random"
    fq = build_feature_map("hedgehog_window", hq, d, window=window, init=init)
    fk = build_feature_map("hedgehog_window", hk, d, window=window, init=init)
    beta = torch.randn(hq)
    mask = None
    if masked:
        mask = torch.rand(b, n) > 0.2
        mask[0, :3] = False
    leaves = [q, k, v, fq.weight, fq.bias, fk.weight, fk.bias, beta]
    for t in leaves:
        t.requires_grad_(True)
    out = hybrid.hybrid_attention(q, k, v, fq.weight, fq.bias, fk.weight, fk.bias, beta, window=window,
                                  scale=d ** -0.5, key_padding_mask=mask, key_headroom=KEY_HEADROOM,
                                  segment_size=segment_size)
    upstream = torch.randn(out.shape).to(dtype)
    grads = torch.autograd.grad(out, leaves, upstream)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    fq64, fk64 = fq.double(), fk.double()
    b64 = beta.detach().double().requires_grad_(True)
    ref = reference_hybrid(q64, k64, v64, fq64.pair(fk64, q64, k64, key_padding_mask=mask), window=window,
                           log_balance=b64, causal=True, key_padding_mask=mask)
    ref_grads = torch.autograd.grad(
        ref, [q64, k64, v64, fq64.weight, fq64.bias, fk64.weight, fk64.bias, b64], upstream.double()
    )
    assert out.dtype == dtype and out.shape == ref.shape
    return rel_err(out, ref), {n: rel_err(g, r) for n, g, r in zip("q k v Wq bq Wk bk beta".split(), grads, ref_grads)}


@pytest.mark.parametrize(
    "b,hq,hk,n,window,masked",
    [(2, 2, 1, 45, 5, True),    # GQA, padding, two segments, a window inside one chunk
     (1, 3, 3, 70, 20, False),  # a window of two chunks, three segments
     (1, 2, 2, 13, 64, True)],  # one partial chunk, a window longer than the sequence
)
def test_hybrid_kernels_float32_match_float64(b, hq, hk, n, window, masked):
    out_err, grad_errs = case(b, hq, hk, n, 16, window, torch.float32, masked)
    assert out_err < 1e-5
    assert max(grad_errs.values()) < 1e-4, grad_errs


def test_hybrid_kernels_bfloat16():
    out_err, grad_errs = case(1, 2, 1, 40, 16, 8, torch.bfloat16, True, scale=2.0, seed=3, identity=True)
    assert out_err < 1e-2
    assert max(grad_errs.values()) < 2e-2, grad_errs


def test_hybrid_kernels_bfloat16_at_real_activation_scales():
    """|q|, |k| above 100 in bf16: every output and gradient finite, the output and the value gradient within bf16
    rounding of the exact answer on the same inputs. (The attention is then one-hot, so the q / k gradients are
    tiny and ill-conditioned: the rounding of the bf16 output alone moves them by their own size.)"""
    out_err, grad_errs = case(1, 2, 1, 40, 16, 8, torch.bfloat16, True, scale=40.0, seed=3, identity=True)
    assert out_err < 2e-2
    assert grad_errs["v"] < 2e-2, grad_errs


def test_attend_uses_the_hybrid_kernels_when_switched_on(monkeypatch):
    """With ``HEDGEHOG_KERNELS_HYBRID=1`` (the CUDA check bypassed for the interpreter) ``attend`` hands the hybrid
    to its fused kernels with the layer's balance; without it, the PyTorch path runs."""
    import hedgehog.attention.dispatch as dispatch
    import hedgehog.kernels as kernels
    from hedgehog.attention import attend

    torch.manual_seed(5)
    calls = []
    original = kernels.hybrid_attention
    monkeypatch.setattr(dispatch, "kernels_for", lambda *tensors: kernels)
    monkeypatch.setattr(kernels, "hybrid_attention", lambda *a, **kw: calls.append(kw["window"]) or original(*a, **kw))
    q, k, v = torch.randn(1, 2, 40, 16), torch.randn(1, 1, 40, 16), torch.randn(1, 1, 40, 16)
    fq = build_feature_map("hedgehog_window", 2, 16, window=6, init="random")
    fk = build_feature_map("hedgehog_window", 1, 16, window=6, init="random")
    beta = torch.randn(2)
    monkeypatch.delenv("HEDGEHOG_KERNELS_HYBRID", raising=False)
    off = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True, log_balance=beta)
    assert calls == []
    monkeypatch.setenv("HEDGEHOG_KERNELS_HYBRID", "1")
    on = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True, log_balance=beta)
    assert calls == [6]
    assert rel_err(on, off) < 1e-5
