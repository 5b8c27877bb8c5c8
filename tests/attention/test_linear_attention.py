import pytest
import torch

from hedgehog.attention import RecurrentState, attention_weights, linear_attention, recurrent_step
from attention_references import linear_output, linear_weights, padding_mask

LENGTHS = [1, 7, 16, 37, 64, 100]


def positive_features(*shape, dtype=torch.float64):
    return torch.rand(*shape, dtype=dtype) + 0.05


def inputs(n, hq=4, hk=2, f=6, dv=5, b=2, dtype=torch.float64):
    return (
        positive_features(b, hq, n, f, dtype=dtype),
        positive_features(b, hk, n, f, dtype=dtype),
        torch.randn(b, hk, n, dv, dtype=dtype),
    )


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_linear_attention_matches_float64_reference(n, causal, padded):
    torch.manual_seed(n)
    qf, kf, v = inputs(n)
    mask = padding_mask(2, n) if padded else None
    out = linear_attention(qf, kf, v, causal, key_padding_mask=mask, chunk_size=16)
    ref = linear_output(qf, kf, v, causal, mask)
    assert out.shape == (2, 4, n, 5) and out.dtype == torch.float64
    assert torch.isfinite(out).all()
    if mask is None:
        torch.testing.assert_close(out, ref)
    else:
        real = mask[:, None, :, None].expand_as(out)
        rows_ok = torch.isfinite(ref)
        torch.testing.assert_close(out[real & rows_ok], ref[real & rows_ok])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n", [1, 37, 64])
def test_attention_weights_match_reference(causal, n):
    torch.manual_seed(1)
    qf, kf, _ = inputs(n, hq=6, hk=3)
    mask = padding_mask(2, n)
    w = attention_weights(qf, kf, causal, mask)
    ref = linear_weights(qf, kf, causal, mask)
    assert w.shape == (2, 6, n, n)
    torch.testing.assert_close(w, torch.nan_to_num(ref))
    rows = w.sum(-1)
    nonempty = ref.sum(-1) > 0.5
    torch.testing.assert_close(rows[nonempty], torch.ones_like(rows[nonempty]))
    assert (w[..., ~mask[0]][0] == 0).all()  # padded keys get zero weight
    assert attention_weights(qf.float(), kf.float(), causal).dtype == torch.float32
    assert attention_weights(qf.bfloat16(), kf.bfloat16(), causal).dtype == torch.float32


@pytest.mark.parametrize("chunk", [1, 3, 16, 64, 200])
def test_chunk_size_does_not_change_the_result(chunk):
    torch.manual_seed(2)
    qf, kf, v = inputs(50)
    torch.testing.assert_close(
        linear_attention(qf, kf, v, True, chunk_size=chunk), linear_output(qf, kf, v, True)
    )


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3), (torch.float32, 1e-5)])
@pytest.mark.parametrize("causal", [True, False])
def test_low_precision_within_tolerance(dtype, tol, causal):
    torch.manual_seed(3)
    qf, kf, v = inputs(100, dtype=torch.float64)
    mask = padding_mask(2, 100)
    out = linear_attention(qf.to(dtype), kf.to(dtype), v.to(dtype), causal, mask)
    assert out.dtype == dtype
    ref = linear_output(qf.to(dtype), kf.to(dtype), v.to(dtype), causal, mask)
    real = mask[:, None, :, None].expand_as(ref)
    assert (out.double() - ref)[real].abs().max() < tol


def test_gqa_equals_repeated_heads():
    torch.manual_seed(4)
    qf, kf, v = inputs(33, hq=6, hk=2)
    for causal in (True, False):
        grouped = linear_attention(qf, kf, v, causal, chunk_size=8)
        repeated = linear_attention(qf, kf.repeat_interleave(3, 1), v.repeat_interleave(3, 1), causal, chunk_size=8)
        torch.testing.assert_close(grouped, repeated)


@pytest.mark.parametrize("padded", [False, True])
def test_recurrent_equals_chunked_equals_quadratic(padded):
    torch.manual_seed(5)
    n = 23
    qf, kf, v = inputs(n, hq=4, hk=1)
    mask = padding_mask(2, n) if padded else None
    chunked = linear_attention(qf, kf, v, True, mask, chunk_size=8)
    quadratic = attention_weights(qf, kf, True, mask) @ v.repeat_interleave(4, 1)
    state, steps = None, []
    for t in range(n):
        step_mask = None if mask is None else mask[:, t : t + 1]
        out, state = recurrent_step(qf[:, :, t : t + 1], kf[:, :, t : t + 1], v[:, :, t : t + 1], state, step_mask)
        steps.append(out)
    recurrent = torch.cat(steps, dim=2)
    torch.testing.assert_close(chunked, quadratic)
    keep = torch.ones_like(chunked, dtype=torch.bool) if mask is None else mask[:, None, :, None].expand_as(chunked)
    torch.testing.assert_close(recurrent[keep], chunked[keep])
    assert isinstance(state, RecurrentState) and state.S.shape == (2, 1, 6, 5) and state.z.shape == (2, 1, 6)


def test_prefill_state_then_decode_matches_full_sequence():
    torch.manual_seed(6)
    n, prefix = 30, 19
    qf, kf, v = inputs(n)
    full = linear_attention(qf, kf, v, True, chunk_size=8)
    out, state = linear_attention(qf[:, :, :prefix], kf[:, :, :prefix], v[:, :, :prefix], True, chunk_size=8, return_state=True)
    torch.testing.assert_close(out, full[:, :, :prefix])
    torch.testing.assert_close(state.S, torch.einsum("bhnf,bhnd->bhfd", kf[:, :, :prefix], v[:, :, :prefix]))
    torch.testing.assert_close(state.z, kf[:, :, :prefix].sum(2))
    # continue in one chunked call from the state, and token by token
    rest = linear_attention(qf[:, :, prefix:], kf[:, :, prefix:], v[:, :, prefix:], True, chunk_size=4, initial_state=state)
    torch.testing.assert_close(rest, full[:, :, prefix:])
    for t in range(prefix, n):
        y, state = recurrent_step(qf[:, :, t : t + 1], kf[:, :, t : t + 1], v[:, :, t : t + 1], state)
        torch.testing.assert_close(y, full[:, :, t : t + 1])


def test_bf16_state_accumulates_in_fp32():
    qf, kf, v = (t.bfloat16() for t in inputs(9))
    out, state = linear_attention(qf, kf, v, True, return_state=True)
    assert out.dtype == torch.bfloat16 and state.S.dtype == torch.float32 and state.z.dtype == torch.float32
    y, state = recurrent_step(qf[:, :, :1], kf[:, :, :1], v[:, :, :1], state)
    assert y.dtype == torch.bfloat16 and state.S.dtype == torch.float32


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck(causal):
    torch.manual_seed(7)
    qf, kf, v = inputs(5, hq=2, hk=1, f=3, dv=2, b=1)
    mask = torch.tensor([[True, True, True, True, False]])
    args = tuple(t.requires_grad_() for t in (qf, kf, v))
    assert torch.autograd.gradcheck(lambda a, b_, c: linear_attention(a, b_, c, causal, mask, chunk_size=2), args)
    assert torch.autograd.gradcheck(lambda a, b_: attention_weights(a, b_, causal, mask), args[:2])


def test_zero_denominator_is_finite_with_finite_gradients():
    qf = torch.zeros(1, 1, 4, 3, requires_grad=True)  # ReLU-type features can be all zero
    kf, v = torch.rand(1, 1, 4, 3), torch.randn(1, 1, 4, 2)
    out = linear_attention(qf, kf, v, True)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(qf.grad).all()


def test_bad_shapes_and_dtypes_name_the_tensor():
    qf, kf, v = inputs(8, hq=4, hk=3)
    with pytest.raises(ValueError, match=r"linear_attention: kf must be \[B, Hk, N, F\] with Hq % Hk == 0, got kf \[2, 3, 8, 6\]"):
        linear_attention(qf, kf, v, True)
    qf, kf, v = inputs(8)
    with pytest.raises(ValueError, match=r"linear_attention: v must be \[B, Hk, N, Dv\]"):
        linear_attention(qf, kf, v[:, :, :5], True)
    with pytest.raises(ValueError, match=r"linear_attention: qf must be \[B, Hq, N, F\] \(4 dims\)"):
        linear_attention(qf[0], kf, v, True)
    with pytest.raises(TypeError, match=r"linear_attention: kf must be float16/bfloat16/float32/float64"):
        linear_attention(qf, kf.long(), v, True)
    with pytest.raises(ValueError, match=r"key_padding_mask must be \[B, N\] = \[2, 8\]"):
        linear_attention(qf, kf, v, True, torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"key_padding_mask must be bool"):
        linear_attention(qf, kf, v, True, torch.ones(2, 8))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(qf, kf, v, True, chunk_size=0)
    with pytest.raises(ValueError, match="causal=True"):
        linear_attention(qf, kf, v, False, return_state=True)
    with pytest.raises(ValueError, match=r"N = 1"):
        recurrent_step(qf, kf, v)
    with pytest.raises(ValueError, match=r"state.S must be \[B, Hk, F, Dv\]"):
        recurrent_step(qf[:, :, :1], kf[:, :, :1], v[:, :, :1], RecurrentState.zeros(2, 4, 6, 5))
    # integer 0/1 masks (Hugging Face attention_mask) are accepted
    long_mask = torch.ones(2, 8, dtype=torch.long)
    torch.testing.assert_close(linear_attention(qf, kf, v, True, long_mask), linear_attention(qf, kf, v, True))
