import types

import pytest
import torch

import hedgehog.attention.backend as backend
import hedgehog.attention.dispatch as dispatch
import hedgehog.attention.linear as linear
from hedgehog.attention import attend, build_feature_map, linear_attention, softmax_attention, softmax_weights
from attention_references import linear_output, padding_mask, softmax_output, softmax_probs


def qkv(n, hq=4, hk=2, d=8, dv=5, b=2, dtype=torch.float64):
    return torch.randn(b, hq, n, d, dtype=dtype), torch.randn(b, hk, n, d, dtype=dtype), torch.randn(b, hk, n, dv, dtype=dtype)


@pytest.mark.parametrize("n", [1, 13, 64])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_softmax_matches_reference(n, causal, padded):
    torch.manual_seed(n)
    q, k, v = qkv(n)
    mask = padding_mask(2, n) if padded else None
    w = softmax_weights(q, k, causal, mask)
    ref_w = torch.nan_to_num(softmax_probs(q, k, causal, mask))
    torch.testing.assert_close(w, ref_w)
    out = softmax_attention(q, k, v, causal, mask)
    assert out.shape == (2, 4, n, 5) and torch.isfinite(out).all()
    ref = softmax_output(q, k, v, causal, mask)
    keep = torch.isfinite(ref)
    if mask is not None:
        keep &= mask[:, None, :, None]
    torch.testing.assert_close(out[keep], ref[keep])


def test_softmax_scale_and_fully_masked_rows():
    torch.manual_seed(1)
    q, k, v = qkv(6)
    torch.testing.assert_close(softmax_weights(q, k, False, scale=0.3), softmax_probs(q, k, False, scale=0.3))
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    w = softmax_weights(q.requires_grad_(), k, True, mask)
    assert (w[0, :, :2] == 0).all()  # left-padded queries see no real key: zero rows, not NaN
    w.sum().backward()
    assert torch.isfinite(q.grad).all()
    out = softmax_attention(q.detach().float(), k.float(), v.float(), True, mask)
    assert torch.isfinite(out).all()


def test_softmax_attention_bf16():
    torch.manual_seed(2)
    q, k, v = qkv(40)
    out = softmax_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), True)
    assert out.dtype == torch.bfloat16
    assert (out.double() - softmax_output(q, k, v, True)).abs().max() < 3e-2


@pytest.mark.parametrize("name", ["softmax", "hedgehog", "taylor", "elu", "performer", "cosformer", "t2r"])
@pytest.mark.parametrize("causal", [True, False])
def test_attend_dispatches_every_type(name, causal):
    torch.manual_seed(3)
    q, k, v = qkv(19)
    mask = padding_mask(2, 19)
    fq, fk = build_feature_map(name, 4, 8), build_feature_map(name, 2, 8)
    if fq is not None:
        fq, fk = fq.double(), fk.double()
    out = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=causal, key_padding_mask=mask)
    assert out.shape == (2, 4, 19, 5) and out.dtype == v.dtype and torch.isfinite(out).all()
    if fq is None:
        ref = softmax_output(q, k, v, causal, mask)
    else:
        ref = linear_output(fq(q, is_query=True), fk(k), v, causal, mask)
    keep = mask[:, None, :, None].expand_as(out) & torch.isfinite(ref)
    torch.testing.assert_close(out[keep], ref[keep])


def test_attend_passes_positions_to_the_maps():
    torch.manual_seed(4)
    q, k, v = qkv(5, hq=2, hk=2)
    fq, fk = build_feature_map("cosformer", 2, 8, max_positions=64), build_feature_map("cosformer", 2, 8, max_positions=64)
    pos = torch.tensor([0, 2, 9, 30, 31])  # uneven gaps: the kernel depends on i - j only
    out = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True, positions=pos)
    expected = linear_attention(fq(q, positions=pos), fk(k, positions=pos), v, True)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True))


def test_attend_errors():
    q, k, v = qkv(4)
    fm = build_feature_map("elu", 4, 8)
    with pytest.raises(ValueError, match="both be FeatureMaps .* or both None"):
        attend(q, k, v, feature_map_q=fm, feature_map_k=None, causal=True)
    with pytest.raises(TypeError, match="feature_map_k must be a FeatureMap"):
        attend(q, k, v, feature_map_q=fm, feature_map_k=lambda x: x, causal=True)
    with pytest.raises(ValueError, match=r"attend: k must be \[B, Hk, N, D\] with Hq % Hk == 0"):
        attend(q, k[:, :, :3], v, feature_map_q=None, feature_map_k=None, causal=True)


# ---------------------------------------------------------------- backend hook
def test_backend_selection(monkeypatch):
    assert backend.get_backend() in backend.BACKENDS
    with backend.use_backend("torch"):
        assert backend.get_backend() == "torch"
        assert backend.kernels_for(torch.zeros(1)) is None
    with pytest.raises(ValueError, match="unknown attention backend 'cuda'; valid: auto, torch, triton"):
        backend.set_backend("cuda")
    with backend.use_backend("auto"):
        assert backend.kernels_for(torch.zeros(1)) is None  # CPU tensors never go to the kernels
    with backend.use_backend("triton"), pytest.raises(RuntimeError, match="needs CUDA tensors"):
        backend.kernels_for(torch.zeros(1))


def test_triton_backend_without_kernels_raises(monkeypatch):
    monkeypatch.setattr(backend, "_kernels_tried", False)
    monkeypatch.setattr(backend, "_kernels", None)

    def failing_import(name):
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(backend.importlib, "import_module", failing_import)
    cuda_like = types.SimpleNamespace(is_cuda=True)
    with backend.use_backend("auto"):
        assert backend.kernels_for(cuda_like) is None
    with backend.use_backend("triton"), pytest.raises(RuntimeError, match="cannot be imported: No module named 'triton'"):
        backend.kernels_for(cuda_like)


def test_kernel_hook_is_called_and_unsupported_cases_fall_back(monkeypatch):
    """``attend`` hands a stock Hedgehog pair to the kernels' fused entry with the maps' own arguments; where the
    kernels say a shape does not fit, the features path (or PyTorch) runs instead."""
    calls = []
    q, k, v = qkv(6, dtype=torch.float32)
    fq, fk = build_feature_map("hedgehog", 4, 8), build_feature_map("hedgehog", 2, 8)
    sentinel = torch.full((2, 4, 6, 5), 7.0)
    fits = {"fused": True}

    def hedgehog_attention(q_, k_, v_, **kwargs):
        calls.append(("fused", sorted(kwargs)))
        assert kwargs["weight_q"] is fq.weight and kwargs["bias_k"] is fk.bias
        return sentinel

    def linear_attention(qf, kf, v_, **kwargs):
        calls.append(("linear", sorted(kwargs)))
        return sentinel

    fake = types.SimpleNamespace(
        KERNEL_DTYPES=(torch.float16, torch.bfloat16, torch.float32), hedgehog_attention=hedgehog_attention,
        linear_attention=linear_attention, supports_fused=lambda *shape: fits["fused"],
        supports_features=lambda *shape: False,
    )
    monkeypatch.setattr(dispatch, "kernels_for", lambda *t: fake)
    monkeypatch.setattr(linear, "kernels_for", lambda *t: fake)
    assert attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True) is sentinel
    assert calls[0] == ("fused", ["bias_k", "bias_q", "causal", "key_headroom", "key_padding_mask", "stable",
                                  "weight_k", "weight_q"])
    fits["fused"] = False  # neither kernel fits: the PyTorch path
    out = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=False)
    expected = linear_output(fq(q, is_query=True), fk(k), v, False)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1
    window_q = build_feature_map("hedgehog_window", 4, 8, window=2)  # no fused kernel for the hybrid
    window_k = build_feature_map("hedgehog_window", 2, 8, window=2)
    fits["fused"] = True
    assert attend(q, k, v, feature_map_q=window_q, feature_map_k=window_k, causal=True) is not sentinel
    assert len(calls) == 1

