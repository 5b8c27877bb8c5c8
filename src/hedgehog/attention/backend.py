"""Which implementation runs the hot paths: the PyTorch reference here, or the Triton kernels.

``hedgehog.kernels`` (Triton) is optional. With backend ``"auto"`` (the default) ``kernels_for`` hands the kernel
module to the callers in this package (``dispatch.attend``, ``linear.linear_attention``, ``linear.recurrent_step``)
for CUDA inputs; they decide, from the feature maps and the kernels' ``supports_*`` answers, whether a kernel
covers the case, and otherwise run the PyTorch code of this package; CPU inputs always take the PyTorch path. ``"torch"`` never calls kernels; ``"triton"`` insists that the kernel package imports. The initial
value comes from the environment variable ``HEDGEHOG_ATTENTION_BACKEND`` (``run.py``: the config key
``attention_backend``). The kernels are on by default since they passed the GPU suite (``tests/gpu``) and
the every-type preflight (``experiments/preflight_kernels.py``) on an H100 on 2026-11-23.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType
from typing import Iterator

BACKENDS = ("auto", "torch", "triton")
ENV_VAR = "HEDGEHOG_ATTENTION_BACKEND"


def validate_backend(name: str, source: str) -> str:
    """``name`` normalised (``" Torch"`` -> ``"torch"``); ValueError naming ``source`` and the valid names if unknown."""
    value = str(name).strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"{source}: unknown attention backend {name!r}; valid: {', '.join(BACKENDS)}")
    return value


_backend = validate_backend(os.environ.get(ENV_VAR, "auto"), ENV_VAR)
_kernels: ModuleType | None = None
_kernels_error: Exception | None = None
_kernels_tried = False


def get_backend() -> str:
    """The active backend: ``"auto"``, ``"torch"`` or ``"triton"``."""
    return _backend


def set_backend(name: str) -> None:
    """Choose ``"auto"`` (kernels on CUDA when importable), ``"torch"`` (reference only) or ``"triton"``."""
    global _backend
    _backend = validate_backend(name, "set_backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Temporarily switch backend: ``with use_backend("torch"): ...``."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def kernels_for(*tensors) -> ModuleType | None:
    """The ``hedgehog.kernels`` module if the backend and the inputs (all on CUDA) call for it, else None.

    The import is attempted once. Under ``"auto"`` a failed import falls back silently to PyTorch; under
    ``"triton"`` it raises, as does CPU input (the kernels are CUDA-only).
    """
    global _kernels, _kernels_error, _kernels_tried
    if _backend == "torch":
        return None
    on_cuda = all(getattr(t, "is_cuda", False) for t in tensors if t is not None)
    if not on_cuda:
        if _backend == "triton":
            raise RuntimeError(
                "attention backend 'triton' needs CUDA tensors; use set_backend('auto') or 'torch' on CPU"
            )
        return None
    if not _kernels_tried:
        _kernels_tried = True
        try:
            _kernels = importlib.import_module("hedgehog.kernels")
        except ImportError as error:  # triton missing or the package not built yet
            _kernels, _kernels_error = None, error
    if _kernels is None and _backend == "triton":
        raise RuntimeError(
            f"attention backend 'triton' was requested ({ENV_VAR} or set_backend) but hedgehog.kernels "
            f"cannot be imported: {_kernels_error}. Install triton or use backend 'auto'/'torch'."
        )
    return _kernels
