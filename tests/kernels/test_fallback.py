"""Without CUDA the kernels step aside (``hedgehog.attention`` runs PyTorch), and the attention package alone
decides which maps the fused kernel computes."""

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed: hedgehog.kernels cannot be imported")

import hedgehog.kernels as kernels  # noqa: E402
from hedgehog.attention import RecurrentState, attend, build_feature_map, linear_attention  # noqa: E402
from hedgehog.attention.backend import use_backend  # noqa: E402
from hedgehog.attention.feature_maps.hedgehog import HedgehogFeatureMap  # noqa: E402


def test_the_kernels_import_nothing_from_the_attention_package():
    import ast
    from pathlib import Path

    for path in Path(kernels.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if n.startswith("hedgehog.attention")], path.name


def test_shapes_the_kernels_cover():
    assert kernels.supports_fused(64, 64, 64) and not kernels.supports_fused(256, 64, 64)
    assert kernels.supports_features(128, 64) and not kernels.supports_features(256, 64)
    assert kernels.supports_decode(128)


def test_attend_on_cpu_uses_the_reference_under_every_backend_that_allows_it():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 20, 16), torch.randn(2, 2, 20, 16), torch.randn(2, 2, 20, 16)
    fq, fk = build_feature_map("hedgehog", 2, 16, init="random"), build_feature_map("hedgehog", 2, 16, init="random")
    ref = linear_attention(fq(q, is_query=True), fk(k), v, True)
    for backend in ("auto", "torch"):
        with use_backend(backend):
            out = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True)
        torch.testing.assert_close(out, ref)
    with use_backend("triton"), pytest.raises(RuntimeError, match="CUDA"):
        attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True)


class _ShiftedHedgehog(HedgehogFeatureMap):
    def forward(self, x, *, is_query=False, positions=None):
        return super().forward(x + 1, is_query=is_query, positions=positions)


def test_only_stock_exp_hedgehog_maps_are_fused():
    q, k = torch.randn(1, 4, 8, 16), torch.randn(1, 2, 8, 16)

    def fused(fq, fk):
        return fq.fused_kernel_args(fk, q, k) is not None

    assert fused(build_feature_map("hedgehog", 4, 16), build_feature_map("hedgehog", 2, 16))
    assert not fused(build_feature_map("hedgehog", 2, 16), build_feature_map("hedgehog", 2, 16))  # head count
    assert not fused(build_feature_map("hedgehog", 4, 16, activation="softmax"),
                     build_feature_map("hedgehog", 2, 16, activation="softmax"))
    assert not fused(build_feature_map("taylor", 4, 16), build_feature_map("taylor", 2, 16))
    assert not fused(_ShiftedHedgehog(4, 16), build_feature_map("hedgehog", 2, 16))  # a changed forward
    assert not fused(build_feature_map("hedgehog", 4, 16).double(), build_feature_map("hedgehog", 2, 16).double())
    assert q.shape[1] == 4 and fq_window_args(q, k)["window"] == 3 and fq_args(q, k)["window"] is None


def fq_window_args(q, k):
    return build_feature_map("hedgehog_window", 4, 16, window=3).fused_kernel_args(
        build_feature_map("hedgehog_window", 2, 16, window=3), q, k)


def fq_args(q, k):
    return build_feature_map("hedgehog", 4, 16).fused_kernel_args(build_feature_map("hedgehog", 2, 16), q, k)


@pytest.mark.parametrize("feature, dot, table", [(1, "bf16", "DEFAULTS"), (0, "bf16", "DEFAULTS_FEATURES"),
                                                  (1, "fp32", "DEFAULTS_FP32")])
def test_launch_takes_the_tile_defaults_of_its_path(monkeypatch, feature, dot, table):
    """The fused map and the ready-made-features path have separate measured defaults; float32 its own."""
    import triton.language as tl

    from hedgehog.kernels import launch

    monkeypatch.delenv("HEDGEHOG_KERNELS_CONFIG", raising=False)
    monkeypatch.setattr(launch, "autotuning", lambda: False)
    seen = {}

    class FakeKernel:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: seen.update(kwargs)

    dtype = tl.bfloat16 if dot == "bf16" else tl.float32
    for name in launch.DEFAULTS_FEATURES:  # the kernels with both paths (the hybrid is fused-only)
        cfg = launch.launch(name, FakeKernel(), (1,), [], {"FEATURE": feature, "DOT": dtype}, ("key",), 128)
        want = launch.DEFAULTS_FP32 if table == "DEFAULTS_FP32" else getattr(launch, table)[name]
        assert cfg == want and (seen["BLOCK_N"], seen["num_warps"], seen["num_stages"]) == want
    assert launch.DEFAULTS["chunk_dkv"] != launch.DEFAULTS_FEATURES["chunk_dkv"]
