"""CONTRIBUTING.md names real files: every path it quotes exists (a ``<name>`` path: its folder), and every
test it names exists."""

from __future__ import annotations

import re

from framework_helpers import REPO_ROOT

TEXT = (REPO_ROOT / "CONTRIBUTING.md").read_text()


def test_quoted_paths_exist():
    paths = re.findall(r"`([\w./<>-]+/[\w.<>-]+)`", TEXT)  # src/..., conf/..., tests/..., experiments/...
    assert len(paths) > 20
    for path in paths:
        target = REPO_ROOT / path
        assert (target.parent if "<" in path else target).exists(), path


def test_named_tests_exist():
    for name in re.findall(r"`(test_\w+)`", TEXT):
        assert any(name in p.read_text() for p in (REPO_ROOT / "tests").rglob("test_*.py")), name
