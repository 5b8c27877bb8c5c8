"""Fixtures of the framework tests (the helpers themselves live in ``framework_helpers``)."""

from __future__ import annotations

import pytest

from framework_helpers import TINY_MQAR


@pytest.fixture
def tiny_mqar() -> list[str]:
    return list(TINY_MQAR)
