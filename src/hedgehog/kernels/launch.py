"""How the kernels are launched: tile sizes, segment length, dtypes of the tensor-core operands, and
(optionally) a small per-shape search over chunk length, warps and pipeline stages.

Environment:
    HEDGEHOG_KERNELS_AUTOTUNE=1   time a few (BLOCK_N, num_warps, num_stages) choices per kernel and shape
                                  family on first use and keep the fastest (``tuned_configs()`` lists them).
    HEDGEHOG_KERNELS_SEGMENT=<n>  tokens per segment (a multiple of 128), overriding the heuristic.
    HEDGEHOG_KERNELS_CONFIG=<k>:<n>,<w>,<s>[;...]  fixed (BLOCK_N, num_warps, num_stages) for kernel k.
    HEDGEHOG_KERNELS_SYNC=1       synchronise after every launch and name the kernel of a device fault.
    HEDGEHOG_KERNELS_SPLIT_WEIGHTS=0  project with the bf16-rounded weight only (one product instead of two).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import torch
import triton
import triton.language as tl

TINY = float(torch.finfo(torch.float32).tiny)
SEGMENT_UNIT = 128  # segments are multiples of this (every tuned BLOCK_N divides it)
SEGMENT_TOKENS = 1024  # default tokens per segment
CANDIDATES = ((64, 4, 2), (32, 4, 2), (128, 8, 2), (16, 4, 2), (16, 4, 3), (32, 4, 3))  # (BLOCK_N, warps, stages)
# without tuning (measured on an H100, 2026-11-23, N = 64K, bf16, D 64, F 128; the AOT compile for sm_90 shows
# the long-chunk variants spilling the loop-carried fp32 state): chunk_dkv 1.65 ms with 16-token chunks vs
# 2.35 with 32, chunk_output 0.77 ms with 16-token chunks and three pipeline stages vs 0.88 (32, two stages),
# segment_states 0.20 ms with 32-token chunks vs 0.24 with 64; chunk_dq and chunk_rstate were fastest as they were.
DEFAULTS = {
    "segment_states": (32, 4, 2),
    "chunk_rstate": (64, 4, 2),
    "chunk_output": (16, 4, 3),
    "chunk_dq": (32, 4, 2),
    "chunk_dkv": (16, 4, 2),
    # the sliding-window hybrid (kernels/hybrid.py): one chunk length for all its kernels, not yet tuned on a GPU
    "hybrid_output": (16, 4, 2),
    "hybrid_rstate": (16, 4, 2),
    "hybrid_dq": (16, 4, 2),
    "hybrid_dkv": (16, 4, 2),
}
# ready-made features (no feature map in the kernel): the 16-token tiles above made this path slower on the
# H100 (forward+backward 2.81 ms at N = 1K vs 1.78 with these, 2026-11-23), so it keeps its own defaults
DEFAULTS_FEATURES = {
    "segment_states": (64, 4, 2),
    "chunk_rstate": (64, 4, 2),
    "chunk_output": (32, 4, 2),
    "chunk_dq": (32, 4, 2),
    "chunk_dkv": (32, 4, 2),
}
# float32 operands: only 32-token chunks without load pipelining fit in shared memory (<= 197 KB of the
# H100's 227 KB per block; 64-token chunks need 246-262 KB)
DEFAULTS_FP32 = (32, 4, 1)

_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}
_tuned: dict[tuple, tuple[int, int, int]] = {}
_sm_count: dict[int, int] = {}


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def split_weights() -> bool:
    """Project with the bf16 weight plus its bf16 residue (fp32-accurate ``x W``, two products) unless
    ``HEDGEHOG_KERNELS_SPLIT_WEIGHTS=0`` (one product with the weight rounded to bf16: faster)."""
    return os.environ.get("HEDGEHOG_KERNELS_SPLIT_WEIGHTS", "1") not in ("", "0")


def autotuning() -> bool:
    return os.environ.get("HEDGEHOG_KERNELS_AUTOTUNE", "0") not in ("", "0") and not interpreting()


def _env_configs() -> dict[str, tuple[int, int, int]]:
    out = {}
    for item in filter(None, os.environ.get("HEDGEHOG_KERNELS_CONFIG", "").split(";")):
        name, _, cfg = item.partition(":")
        out[name.strip()] = tuple(int(c) for c in cfg.split(","))
    return out


MIN_TILE = 64  # every tile width is padded to at least this (the tile shapes verified on an H100)


def block(n: int, minimum: int | None = None) -> int:
    """Power-of-two tile width >= n and >= ``minimum`` (default ``MIN_TILE``; 16 = the smallest tensor-core
    operand). Widths below 64 are padded: an H100 run hit an illegal memory access with 32-wide tiles
    (head dim 32, GQA, padding) that the same code with 64-wide tiles does not show."""
    return max(MIN_TILE if minimum is None else minimum, triton.next_power_of_2(int(n)))


def tl_dtype(dtype: torch.dtype):
    return _TL_DTYPES[dtype]


def dot_dtypes(*tensors: torch.Tensor) -> tuple:
    """(DOT, PREC): tensor-core operand dtype of the attention products and the float32 product mode.

    16-bit inputs multiply in bfloat16 (also for float16 inputs: unshifted key features ``exp(u)`` overflow
    float16 beyond u ~ 11, bfloat16 has float32's range); float32 inputs on the tensor cores as three tf32
    products ("tf32x3", float32-accurate; "ieee" compiles to scalar FMA loops that spill badly), or one
    ("tf32") when ``torch.backends.cuda.matmul.allow_tf32`` is set.
    """
    if all(t.dtype in (torch.bfloat16, torch.float16) for t in tensors):
        return tl.bfloat16, "ieee"
    return tl.float32, ("tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3")


def sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _sm_count:
        _sm_count[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _sm_count[index]


def segment_length(batch_heads: int, n: int, unit: int, device: torch.device, override: int | None = None) -> int:
    """Tokens per segment (a multiple of ``unit``): ~1024, fewer when the grid would not give every
    multiprocessor about four programs."""
    if override is None and os.environ.get("HEDGEHOG_KERNELS_SEGMENT"):
        override = int(os.environ["HEDGEHOG_KERNELS_SEGMENT"])
    if override is not None:
        if override < unit or override % unit:
            raise ValueError(f"segment length must be a positive multiple of {unit}, got {override}")
        return override
    seg = max(unit, SEGMENT_TOKENS // unit * unit)
    target = 4 * sm_count(device)
    while seg > unit and batch_heads * triton.cdiv(n, seg) < target:
        seg = max(unit, seg // 2 // unit * unit)
    return seg


def launch(
    name: str, kernel, grid: tuple, args: list, constexprs: dict, key: tuple, seg: int,
    block_n: int | None = None, reset: Callable[[], None] | None = None,
) -> tuple[int, int, int]:
    """Launch ``kernel[grid](*args, **constexprs)`` with (BLOCK_N, num_warps, num_stages) from the
    environment, the tuned table, or the defaults; ``block_n`` fixes the chunk (tests). ``reset`` zeroes
    buffers the kernel accumulates into (atomics) before the real launch when tuning trials ran."""
    fp32 = constexprs.get("DOT") == tl.float32
    cfg = _env_configs().get(name) or _tuned.get((name,) + key)
    if cfg is None:
        defaults = DEFAULTS if constexprs.get("FEATURE", 1) else DEFAULTS_FEATURES
        cfg = DEFAULTS_FP32 if fp32 else defaults[name]
        if autotuning() and block_n is None and not fp32:
            cfg = _search(name, kernel, grid, args, constexprs, seg, reset, defaults[name])
            _tuned[(name,) + key] = cfg
            if reset is not None:
                reset()
    if block_n is not None:
        cfg = (block_n,) + tuple(cfg[1:])
    kernel[grid](*args, **constexprs, BLOCK_N=cfg[0], num_warps=cfg[1], num_stages=cfg[2])
    if os.environ.get("HEDGEHOG_KERNELS_SYNC", "0") not in ("", "0") and not interpreting():
        try:  # debugging: attribute an asynchronous fault to the kernel that caused it
            torch.cuda.synchronize()
        except Exception as error:
            shown = {k: v for k, v in constexprs.items() if k != "EMULATE"}
            message = f"{name} failed: grid {grid}, config {cfg}, {shown}: {error}"
            print(f"hedgehog.kernels: {message}", file=sys.stderr, flush=True)
            raise RuntimeError(message) from error
    return cfg


def _search(name, kernel, grid, args, constexprs, seg, reset, default) -> tuple[int, int, int]:
    best, best_ms = default, float("inf")
    for bn, warps, stages in CANDIDATES:
        if seg % bn:
            continue

        def run(bn=bn, w=warps, s=stages):
            kernel[grid](*args, **constexprs, BLOCK_N=bn, num_warps=w, num_stages=s)
        try:
            ms = do_bench(run)
        except Exception:  # a configuration that does not fit (registers, shared memory) is skipped
            continue
        if ms < best_ms:
            best, best_ms = (bn, warps, stages), ms
    return best


def do_bench(fn) -> float:
    """Median time (ms) of ``fn`` on the GPU (short: tuning happens inside the first real call)."""
    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


def tuned_configs() -> dict[str, tuple[int, int, int]]:
    """The (BLOCK_N, num_warps, num_stages) chosen so far by autotuning, by kernel and shape family."""
    return {" ".join(str(p) for p in k): v for k, v in _tuned.items()}
