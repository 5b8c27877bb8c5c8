"""Fixtures for the tests of experiments/: the batch runner script loaded as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def batch_runner():
    """``experiments/batch_runner.py`` as a module (``read_plan``, ``main``, ...)."""
    spec = importlib.util.spec_from_file_location("batch_runner", REPO / "experiments" / "batch_runner.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
