"""The same maths on a CUDA device (skipped on CPU-only machines): every attention type against float64 on CPU."""

import pytest
import torch

from hedgehog.attention import ATTENTION_NAMES, attend, build_feature_map, linear_attention, recurrent_step
from attention_references import linear_output, padding_mask, softmax_output

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name", ATTENTION_NAMES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("causal", [True, False])
def test_attend_on_cuda_matches_cpu_float64(name, dtype, tol, causal):
    torch.manual_seed(0)
    b, hq, hk, n, d = 2, 6, 2, 203, 32
    q, k, v = torch.randn(b, hq, n, d), torch.randn(b, hk, n, d), torch.randn(b, hk, n, 16)
    mask = padding_mask(b, n)
    fq, fk = build_feature_map(name, hq, d), build_feature_map(name, hk, d)
    cuda = [t.cuda().to(dtype) for t in (q, k, v)]
    if fq is None:
        ref = softmax_output(*(t.cpu() for t in cuda), causal, mask)
        out = attend(*cuda, feature_map_q=None, feature_map_k=None, causal=causal, key_padding_mask=mask.cuda())
    else:
        qc, kc, vc = (t.cpu().double() for t in cuda)
        ref = linear_output(fq.double()(qc, is_query=True), fk.double()(kc), vc, causal, mask)
        fq, fk = fq.float().cuda(), fk.float().cuda()
        out = attend(*cuda, feature_map_q=fq, feature_map_k=fk, causal=causal, key_padding_mask=mask.cuda())
    assert out.is_cuda and out.dtype == dtype and torch.isfinite(out).all()
    keep = mask[:, None, :, None].expand_as(ref) & torch.isfinite(ref)
    assert (out.cpu().double() - ref)[keep].abs().max().item() < tol


def test_recurrent_on_cuda_matches_chunked():
    torch.manual_seed(1)
    qf, kf, v = torch.rand(1, 4, 70, 8, device="cuda"), torch.rand(1, 2, 70, 8, device="cuda"), torch.randn(1, 2, 70, 5, device="cuda")
    full = linear_attention(qf, kf, v, True)
    out, state = linear_attention(qf[:, :, :64], kf[:, :, :64], v[:, :, :64], True, return_state=True)
    for t in range(64, 70):
        y, state = recurrent_step(qf[:, :, t : t + 1], kf[:, :, t : t + 1], v[:, :, t : t + 1], state)
        torch.testing.assert_close(y, full[:, :, t : t + 1], rtol=1e-4, atol=1e-5)
