"""The Triton kernels, run by Triton's CPU interpreter on tiny shapes, against float64 references.

Chunks of 16 tokens and segments of 32 keep the interpreter fast while exercising every part of the kernels:
several chunks per segment, several segments (the cross-segment scan), a last partial chunk, GQA, padding.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the kernels cannot run")

from hedgehog.attention import RecurrentState, build_feature_map, linear_attention, recurrent_step  # noqa: E402
from hedgehog.kernels import chunked, decode  # noqa: E402
from hedgehog.kernels import chunked_forward  # noqa: E402

pytestmark = pytest.mark.skipif(
    type(chunked_forward.chunk_output_kernel).__name__ != "InterpretedFunction",
    reason="the kernels were compiled for a GPU (TRITON_INTERPRET was not set before hedgehog.kernels "
    "was imported); the interpreter tests run on CPU-only machines, tests/gpu on CUDA ones",
)

SMALL = dict(chunk_size=16, segment_size=32)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    assert torch.isfinite(a).all(), "non-finite values in the kernel result"
    return ((a - b).norm() / b.norm()).item()


def padding(b: int, n: int) -> torch.Tensor:
    mask = torch.rand(b, n) > 0.25
    mask[0, :5] = False  # a run of left padding: the first queries attend to nothing
    return mask


def hedgehog_case(b, hq, hk, n, d, dv, hidden, dtype, causal, mask, stable=True, bias=True, heads_inner=False):
    """Kernel output and gradients next to the float64 reference through ``hedgehog.attention``."""
    def draw(h, x, scale):
        t = torch.randn(b, n, h, x) if heads_inner else torch.randn(b, h, n, x)
        t = (t * scale).to(dtype)
        return t.transpose(1, 2) if heads_inner else t

    q, k, v = draw(hq, d, 0.5), draw(hk, d, 0.5), draw(hk, dv, 1.0)
    fq = build_feature_map("hedgehog", hq, d, feature_dim=hidden, init="random", stable=stable, bias=bias)
    fk = build_feature_map("hedgehog", hk, d, feature_dim=hidden, init="random", stable=stable, bias=bias)
    params = [q, k, v, fq.weight, fk.weight] + ([fq.bias, fk.bias] if bias else [])
    for t in params:
        t.requires_grad_(True)
    out = chunked.hedgehog_attention(
        q, k, v, fq.weight, fq.bias, fk.weight, fk.bias, causal=causal, key_padding_mask=mask, stable=stable, **SMALL
    )
    grad_out = torch.randn(out.shape).to(dtype)
    grads = torch.autograd.grad(out, params, grad_out)

    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    fq64, fk64 = fq.double(), fk.double()
    ref_params = [q64, k64, v64, fq64.weight, fk64.weight] + ([fq64.bias, fk64.bias] if bias else [])
    ref = linear_attention(fq64(q64, is_query=True), fk64(k64), v64, causal, key_padding_mask=mask)
    ref_grads = torch.autograd.grad(ref, ref_params, grad_out.double())
    assert out.dtype == v.dtype and out.shape == ref.shape
    return rel_err(out, ref), [rel_err(g, r) for g, r in zip(grads, ref_grads)]


@pytest.mark.parametrize(
    "case",
    [
        dict(b=2, hq=2, hk=1, n=45, d=16, dv=16, hidden=16, causal=True, mask=True),  # GQA, padding, 2 segments
        dict(b=1, hq=3, hk=3, n=37, d=24, dv=40, hidden=20, causal=True, mask=False, heads_inner=True),
        dict(b=1, hq=4, hk=2, n=50, d=16, dv=16, hidden=16, causal=True, mask=True, stable=False, bias=False),
        dict(b=2, hq=2, hk=1, n=33, d=16, dv=16, hidden=16, causal=False, mask=True),  # bidirectional
        dict(b=1, hq=1, hk=1, n=13, d=16, dv=16, hidden=16, causal=True, mask=False),  # one partial chunk
    ],
)
def test_fused_hedgehog_float32_matches_float64(case):
    torch.manual_seed(0)
    mask = padding(case["b"], case["n"]) if case.pop("mask") else None
    out_err, grad_errs = hedgehog_case(dtype=torch.float32, mask=mask, **case)
    assert out_err < 1e-5
    assert max(grad_errs) < 1e-5, grad_errs


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_hedgehog_16bit_within_rounding(dtype):
    """16-bit inputs: tensor-core operands in bfloat16, so errors of a few 1e-3 (the PyTorch path on the same
    16-bit inputs is near 2e-3 for outputs, 5e-3 for gradients)."""
    torch.manual_seed(1)
    out_err, grad_errs = hedgehog_case(1, 2, 1, 45, 16, 16, 16, dtype, True, padding(1, 45))
    assert out_err < 1e-2
    assert max(grad_errs) < 3e-2, grad_errs


@pytest.mark.parametrize("causal", [True, False])
def test_fused_hedgehog_at_real_activation_scales(causal):
    """Entries of q and k near 100 (real LLM heads): ``exp(u)`` would overflow float32 and bfloat16 without the key
    shift. The bf16 kernel is finite and matches the float64 evaluation of the same bf16 inputs."""
    torch.manual_seed(6)
    b, hq, hk, n, d = 1, 2, 1, 45, 16
    q = (torch.randn(b, hq, n, d) * 40).bfloat16()
    k = (torch.randn(b, hk, n, d) * 40).bfloat16()
    v = torch.randn(b, hk, n, d).bfloat16()
    fq, fk = build_feature_map("hedgehog", hq, d), build_feature_map("hedgehog", hk, d)  # identity: u = q, k
    assert k.float().abs().max() > 100
    args = fq.fused_kernel_args(fk, q, k)
    assert args.pop("window") is None
    out = chunked.hedgehog_attention(q, k, v, causal=causal, **args, **SMALL)
    from hedgehog.attention import attend

    ref = attend(q.double(), k.double(), v.double(), feature_map_q=fq.double(), feature_map_k=fk.double(), causal=causal)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 2e-2


@pytest.mark.parametrize("causal", [True, False])
def test_features_path_matches_float64(causal):
    torch.manual_seed(2)
    b, hq, hk, n, f, dv = 1, 4, 2, 45, 24, 16
    qf, kf, v = torch.rand(b, hq, n, f), torch.rand(b, hk, n, f), torch.randn(b, hk, n, dv)
    mask = padding(b, n)
    for t in (qf, kf, v):
        t.requires_grad_(True)
    out = chunked.linear_attention(qf, kf, v, causal=causal, key_padding_mask=mask, **SMALL)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (qf, kf, v), grad_out)
    ref_in = [t.detach().double().requires_grad_(True) for t in (qf, kf, v)]
    ref = linear_attention(*ref_in, causal, key_padding_mask=mask)
    ref_grads = torch.autograd.grad(ref, ref_in, grad_out.double())
    assert rel_err(out, ref) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < 1e-5


def test_every_output_written_and_padded_queries_finite():
    """Poisoned output buffers would show through; left-padded queries (no key to attend to) give 0, not NaN."""
    torch.manual_seed(3)
    b, h, n, f = 1, 1, 40, 16
    qf, kf, v = torch.rand(b, h, n, f), torch.rand(b, h, n, f), torch.randn(b, h, n, f)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, :20] = False
    out = chunked.linear_attention(qf, kf, v, causal=True, key_padding_mask=mask, **SMALL)
    assert torch.isfinite(out).all()
    assert out[:, :, :20].abs().max() == 0
    ref = linear_attention(qf.double(), kf.double(), v.double(), True, key_padding_mask=mask)
    assert rel_err(out, ref) < 1e-5


def test_dispatch_runs_the_fused_kernel(monkeypatch):
    """``attend`` hands real ``build_feature_map`` modules to the fused kernel (the CUDA check bypassed for the
    interpreter) and gets the reference's answer."""
    import hedgehog.attention.dispatch as dispatch
    import hedgehog.kernels as kernels
    from hedgehog.attention import attend

    torch.manual_seed(4)
    calls = []
    original = kernels.hedgehog_attention
    monkeypatch.setattr(dispatch, "kernels_for", lambda *tensors: kernels)
    monkeypatch.setattr(kernels, "hedgehog_attention", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    b, hq, hk, n, d = 1, 2, 1, 40, 16
    q, k, v = torch.randn(b, hq, n, d), torch.randn(b, hk, n, d), torch.randn(b, hk, n, d)
    fq, fk = build_feature_map("hedgehog", hq, d, init="random"), build_feature_map("hedgehog", hk, d, init="random")
    out = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True)
    assert calls == [1]
    ref = linear_attention(fq(q, is_query=True), fk(k), v, True)
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_matches_recurrent_step(dtype):
    torch.manual_seed(5)
    b, hq, hk, f, dv = 3, 4, 2, 24, 40
    state = RecurrentState(torch.rand(b, hk, f, dv), torch.rand(b, hk, f))
    qf, kf, v = torch.rand(b, hq, 1, f).to(dtype), torch.rand(b, hk, 1, f).to(dtype), torch.randn(b, hk, 1, dv).to(dtype)
    mask = torch.tensor([[True], [False], [True]])
    ref, ref_state = recurrent_step(qf, kf, v, state, key_padding_mask=mask)
    out, S, z = decode.recurrent_step(qf, kf, v, state.S, state.z, mask)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-5 if dtype == torch.float32 else 8e-3, atol=1e-6)
    torch.testing.assert_close(S, ref_state.S)
    torch.testing.assert_close(z, ref_state.z)
    assert torch.equal(S[1], state.S[1])  # a padded token leaves its sequence's state alone


def test_autotuning_trials_leave_gradients_exact(monkeypatch):
    """With autotuning on, every candidate (chunk, warps, stages) runs during the search and the weight
    gradients (accumulated atomically) are reset before the real launch; a non-default winner is then used."""
    import itertools

    from hedgehog.kernels import launch

    # the second candidate (32-token chunks) wins every search
    timings = itertools.cycle([3.0, 1.0] + [2.0] * (len(launch.CANDIDATES) - 2))
    assert launch.CANDIDATES[1] == (32, 4, 2)

    def fake_bench(fn):
        fn()
        fn()
        return next(timings)

    monkeypatch.setattr(launch, "autotuning", lambda: True)
    monkeypatch.setattr(launch, "do_bench", fake_bench)
    monkeypatch.setattr(launch, "_tuned", {})
    torch.manual_seed(6)
    b, h, n, d = 1, 1, 140, 16
    q, k, v = (torch.randn(b, h, n, d).bfloat16() for _ in range(3))  # (float32 inputs are not tuned)
    fq = build_feature_map("hedgehog", h, d, init="random")
    fk = build_feature_map("hedgehog", h, d, init="random")
    params = [q, k, v, fq.weight, fq.bias, fk.weight, fk.bias]
    for t in params:
        t.requires_grad_(True)
    out = chunked.hedgehog_attention(q, k, v, fq.weight, fq.bias, fk.weight, fk.bias, causal=True, segment_size=128)
    grads = torch.autograd.grad(out, params, torch.ones_like(out))
    ref_in = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    fq64, fk64 = fq.double(), fk.double()
    ref = linear_attention(fq64(ref_in[0], is_query=True), fk64(ref_in[1]), ref_in[2], True)
    ref_grads = torch.autograd.grad(ref, ref_in + [fq64.weight, fq64.bias, fk64.weight, fk64.bias], torch.ones_like(ref))
    assert rel_err(out, ref) < 1e-2
    for g, r in zip(grads, ref_grads):  # trials left in the accumulators would be off by several times
        assert rel_err(g, r) < 3e-2
    chosen = launch.tuned_configs()
    assert chosen and all(cfg == (32, 4, 2) for cfg in chosen.values()), chosen


@pytest.mark.parametrize("nseg", [1, 5, 37])
@pytest.mark.parametrize("mode", ["prefix", "suffix", "total"])
def test_segment_scan_matches_cumulative_sums(nseg, mode):
    """Exclusive prefix / suffix sums over segments (blocks of 16 segments, so 37 spans three with a carry)
    and the total, in place for the exclusive sums, against float64 ``torch.cumsum``."""
    from hedgehog.kernels.chunked import SCAN_BLOCK_S
    from hedgehog.kernels.scan import segment_scan_kernel

    bh, E = 2, 300  # E not a multiple of the 256-wide tile
    src = torch.randn(bh, nseg, E)
    rows = src.double()
    if mode == "total":
        want = rows.sum(1, keepdim=True)
        dst, stride = torch.full((bh, 1, E), float("nan")), E
    else:
        inclusive = rows.flip(1).cumsum(1).flip(1) if mode == "suffix" else rows.cumsum(1)
        want = inclusive - rows
        dst, stride = src, nseg * E  # in place
    src_copy = src.clone()
    block_s = min(SCAN_BLOCK_S, triton.next_power_of_2(nseg))
    segment_scan_kernel[(bh, triton.cdiv(E, 256))](
        src, dst, stride, nseg, E, REVERSE=mode == "suffix", TOTAL=mode == "total",
        BLOCK_S=block_s, BLOCK_E=256,
    )
    if mode == "total":
        assert torch.equal(src, src_copy), "the scan wrote into its source"
    assert rel_err(dst, want) < 1e-6 if want.abs().sum() > 0 else dst.abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_hedgehog_step_with_maps_matches_pair_and_recurrent_step(dtype, bias):
    """Three decoding steps with the maps in the kernel (state, key shift updated in place) against the PyTorch
    path (``pair`` with the running key shift, the rescaled state, ``recurrent_step``), from a prefilled state;
    grouped-query heads, a padded row, keys larger than the prefill's so that the shift moves."""
    from hedgehog.attention.feature_maps.hedgehog import KEY_HEADROOM
    from hedgehog.conversion.layer import _rescaled, _state_from_keys

    torch.manual_seed(11)
    b, hq, hk, d, hid, dv, n = 3, 4, 2, 16, 12, 20, 7
    fq = build_feature_map("hedgehog", hq, d, feature_dim=hid, bias=bias, init="random")
    fk = build_feature_map("hedgehog", hk, d, feature_dim=hid, bias=bias, init="random")
    q, k, v = torch.randn(b, hq, n, d), torch.randn(b, hk, n, d), torch.randn(b, hk, n, dv)
    with torch.no_grad():
        pair = fq.pair(fk, q[:, :, :0], k, positions=torch.arange(0), key_positions=torch.arange(n))
        ref_state, ref_shift = _state_from_keys(pair.k, v, None), pair.key_shift
    S, z, shift = ref_state.S.clone().contiguous(), ref_state.z.clone().contiguous(), ref_shift.clone().contiguous()
    mask = torch.tensor([[True], [False], [True]])
    before_S = S.clone()
    for step in range(3):
        scale = 3.0 if step == 1 else 1.0  # a larger key moves the shift
        qt = torch.randn(b, hq, 1, d).to(dtype)
        kt, vt = (scale * torch.randn(b, hk, 1, d)).to(dtype), torch.randn(b, hk, 1, dv).to(dtype)
        with torch.no_grad():
            p = fq.pair(fk, qt, kt, key_padding_mask=mask, key_shift=ref_shift)
            ref, ref_state = recurrent_step(p.q, p.k, vt, _rescaled(ref_state, ref_shift, p.key_shift), key_padding_mask=mask)
            ref_shift = p.key_shift
            out = decode.hedgehog_step(qt, kt, vt, fq.weight, fq.bias, fk.weight, fk.bias, S, z, shift, KEY_HEADROOM, mask)
        assert out.dtype == dtype
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
        torch.testing.assert_close(out.float(), ref.float(), **tol)
        torch.testing.assert_close(shift, ref_shift, rtol=1e-5, atol=1e-5)
        # the state's entries reach exp(KEY_HEADROOM) ~ 6e27 and cancel to ~0 elsewhere: compare as a whole (the
        # reference rounds bf16 keys' features to bf16, the kernel keeps them in float32)
        limit = 1e-5 if dtype == torch.float32 else 2e-3
        assert rel_err(S, ref_state.S) < limit and rel_err(z, ref_state.z) < limit
        assert torch.equal(S[1], before_S[1]) if step == 0 else True


def test_fused_decode_step_is_opt_in_and_cuda_only(monkeypatch):
    """Off by default; on CPU tensors it declines (None) even when switched on, and the state is untouched."""
    from hedgehog.attention.dispatch import DECODE_MAPS_ENV, fused_decode_step

    fq, fk = build_feature_map("hedgehog", 2, 8), build_feature_map("hedgehog", 2, 8)
    state = RecurrentState(torch.rand(1, 2, 16, 8), torch.rand(1, 2, 16))
    shift = torch.zeros(1, 2, 16)
    q = k = v = torch.randn(1, 2, 1, 8)
    before = state.S.clone()
    monkeypatch.delenv(DECODE_MAPS_ENV, raising=False)
    assert fused_decode_step(q, k, v, fq, fk, state, shift) is None
    monkeypatch.setenv(DECODE_MAPS_ENV, "1")
    assert fused_decode_step(q, k, v, fq, fk, state, shift) is None
    assert torch.equal(state.S, before)
