"""Shared test settings: offline everywhere, and the two folders every test may need.

Environment (set before anything imports Hugging Face or W&B): no hub, no dataset downloads, W&B offline and
quiet. Fixtures: ``repo_root`` (the checkout) and ``data_dir`` (``$HEDGEHOG_DATA_DIR`` or ``<repo>/../shared/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HEDGEHOG_ROOT", str(REPO_ROOT))

# Triton reads TRITON_INTERPRET when a kernel is *defined*, i.e. when hedgehog.kernels is first imported -- and
# tests/attention imports it long before tests/kernels is collected. So without a GPU the CPU interpreter is
# switched on here, before any test module is imported. (On a CUDA machine the kernels compile as usual.)
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that read it fail with a clear message when it is missing."""
    path = Path(os.environ.get("HEDGEHOG_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()
    if not path.is_dir():
        pytest.fail(f"data folder {path} not found: put the shared data beside the repo or set HEDGEHOG_DATA_DIR")
    return path
