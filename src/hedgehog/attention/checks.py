"""Shape and dtype validation shared by the attention functions.

Every public function checks its inputs here first so that a wrong tensor gives one short message naming the
function, the tensor, the expected layout and what arrived -- never a stack trace from deep inside an einsum.
"""

from __future__ import annotations

import torch
from torch import Tensor

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def describe(x: object) -> str:
    """``shape [2, 4, 8, 16] float32 on cpu`` for a tensor, the type name for anything else."""
    if isinstance(x, Tensor):
        return f"shape {list(x.shape)} {str(x.dtype).replace('torch.', '')} on {x.device}"
    return f"a {type(x).__name__}"


def check_floating(fn: str, name: str, x: object, layout: str, ndim: int) -> Tensor:
    """Require a floating-point tensor with ``ndim`` dimensions described by ``layout`` (e.g. ``[B, H, N, D]``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor {layout}, got {describe(x)}")
    if x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {layout} ({ndim} dims), got {describe(x)}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{fn}: {name} must be float16/bfloat16/float32/float64, got {describe(x)}")
    return x


def check_same_device(fn: str, **tensors: Tensor | None) -> None:
    """All given tensors live on one device."""
    named = [(n, t) for n, t in tensors.items() if isinstance(t, Tensor)]
    devices = {t.device for _, t in named}
    if len(devices) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in named)
        raise ValueError(f"{fn}: all tensors must be on one device, got {where}")


def check_qkv(
    fn: str, q: Tensor, k: Tensor, v: Tensor, qn: str = "q", kn: str = "k", vn: str = "v", feat: str = "F"
) -> None:
    """q ``[B, Hq, N, F]``, k ``[B, Hk, N, F]``, v ``[B, Hk, N, Dv]`` with ``Hq % Hk == 0`` (grouped-query).
    ``feat`` names the last axis of q and k in messages (F for features, D for raw heads)."""
    check_floating(fn, qn, q, f"[B, Hq, N, {feat}]", 4)
    check_floating(fn, kn, k, f"[B, Hk, N, {feat}]", 4)
    check_floating(fn, vn, v, "[B, Hk, N, Dv]", 4)
    b, hq, n, f = q.shape
    if k.shape[0] != b or k.shape[2] != n or k.shape[3] != f or k.shape[1] == 0 or hq % k.shape[1] != 0:
        raise ValueError(
            f"{fn}: {kn} must be [B, Hk, N, {feat}] with Hq % Hk == 0, got {kn} {list(k.shape)} "
            f"for {qn} {list(q.shape)}"
        )
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise ValueError(
            f"{fn}: {vn} must be [B, Hk, N, Dv] matching {kn} {list(k.shape)} in B, Hk, N, got {vn} {list(v.shape)}"
        )
    check_same_device(fn, **{qn: q, kn: k, vn: v})


def check_qk(fn: str, q: Tensor, k: Tensor, qn: str = "q", kn: str = "k", feat: str = "F") -> None:
    """q ``[B, Hq, N, F]`` and k ``[B, Hk, N, F]`` with ``Hq % Hk == 0``."""
    check_floating(fn, qn, q, f"[B, Hq, N, {feat}]", 4)
    check_floating(fn, kn, k, f"[B, Hk, N, {feat}]", 4)
    b, hq, n, f = q.shape
    if k.shape[0] != b or k.shape[2] != n or k.shape[3] != f or k.shape[1] == 0 or hq % k.shape[1] != 0:
        raise ValueError(
            f"{fn}: {kn} must be [B, Hk, N, {feat}] with Hq % Hk == 0, got {kn} {list(k.shape)} "
            f"for {qn} {list(q.shape)}"
        )
    check_same_device(fn, **{qn: q, kn: k})


def check_key_padding_mask(fn: str, mask: object, batch: int, length: int, device: torch.device) -> Tensor | None:
    """A ``[B, N]`` mask, True (or 1) on real tokens; returned as bool on ``device``. None passes through."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{fn}: key_padding_mask must be a bool tensor [B, N] (True = real token), got {describe(mask)}")
    if mask.dtype.is_floating_point or mask.is_complex():
        raise TypeError(
            f"{fn}: key_padding_mask must be bool [B, N] (True = real token), got {describe(mask)}; "
            "pass mask.bool() if it holds 0/1"
        )
    if tuple(mask.shape) != (batch, length):
        raise ValueError(
            f"{fn}: key_padding_mask must be [B, N] = {[batch, length]} (True = real token), got {describe(mask)}"
        )
    if mask.device != device:
        raise ValueError(f"{fn}: key_padding_mask is on {mask.device} but the inputs are on {device}")
    return mask if mask.dtype == torch.bool else mask != 0


def check_weights(fn: str, name: str, w: object) -> Tensor:
    """Attention weights ``[B, H, N, N]``."""
    check_floating(fn, name, w, "[B, H, N, N]", 4)
    if w.shape[-1] != w.shape[-2]:
        raise ValueError(f"{fn}: {name} must be [B, H, N, N] (square in the last two dims), got {describe(w)}")
    return w


def accumulation_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 inputs accumulate in fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def full_precision(fn):
    """Run ``fn`` with autocast off, so its explicit fp32 accumulation is not recast to bf16/fp16.

    Under ``torch.autocast`` every einsum returns the autocast dtype whatever its inputs are, which would undo
    the fp32 sums (and overflow the fp32 mask fill used by the softmax weights)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper
