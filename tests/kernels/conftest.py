"""Kernel tests run in Triton's CPU interpreter when there is no GPU.

The switch (``TRITON_INTERPRET=1``) is set in ``tests/conftest.py``: Triton reads it when a kernel is defined,
and other test folders import ``hedgehog.kernels`` before this one is collected. On a CUDA machine nothing
changes (the GPU tests live in tests/gpu).
"""
