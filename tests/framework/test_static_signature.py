"""Config checks read the signatures of ``_target_`` classes from their source without importing them: for every
target in ``conf/`` the result must agree with ``inspect.signature`` of the imported object, and composing and
checking every experiment must not import torch."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys

import pytest

from framework_helpers import CONF_DIR, REPO_ROOT
from hedgehog.train.static_signature import NON_LITERAL_DEFAULT, static_constant, static_signature
from hedgehog.train.validation import _matches, _type_hints, attention_registry

TARGETS = sorted({m for path in CONF_DIR.rglob("*.yaml") for m in re.findall(r"_target_:\s*([\w.]+)", path.read_text())})


def imported(path: str):
    from hydra._internal.utils import _locate

    return _locate(path)


def test_conf_names_the_expected_kinds_of_targets():
    assert "lightning.pytorch.Trainer" in TARGETS and "hedgehog.models.gpt.GPT" in TARGETS and len(TARGETS) >= 20


@pytest.mark.parametrize("target", TARGETS)
def test_signature_from_source_agrees_with_the_imported_object(target):
    static = static_signature(target)
    assert static is not None, f"{target}: not readable from source; checking it would import torch"
    real = inspect.signature(imported(target))
    assert [(p.name, p.kind) for p in static.parameters.values()] == [(p.name, p.kind) for p in real.parameters.values()]
    for name, parameter in static.parameters.items():
        real_default = real.parameters[name].default
        if parameter.default is NON_LITERAL_DEFAULT:
            assert real_default is not inspect.Parameter.empty, name
        else:
            assert parameter.default == real_default, f"{target}.{name}"
    hints = _type_hints(imported(target))
    # where both sides are plain types, they judge sample values the same way
    for name, parameter in static.parameters.items():
        if name not in hints:
            continue
        for value in (1, 1.5, "text", True, None, [1, 2], {"a": 1}):
            verdict = _matches(value, parameter.annotation)
            if verdict is not None:
                assert verdict == _matches(value, hints[name]), f"{target}.{name}: {value!r}"


def test_attention_registry_read_from_source_is_the_registry():
    from hedgehog.attention import ATTENTION_NAMES
    from hedgehog.attention.backend import BACKENDS
    from hedgehog.attention.registry import feature_map_class

    registry = attention_registry()
    assert tuple(registry) == tuple(ATTENTION_NAMES)
    for name, path in registry.items():
        if name != "softmax":
            assert imported(path) is feature_map_class(name)
    assert static_constant("hedgehog.attention.backend.BACKENDS") == BACKENDS


def test_unreadable_targets_are_left_to_the_import_fallback():
    assert static_signature("hedgehog.data.nope.NopeDataModule") is None
    assert static_signature("math.sqrt") is None  # a C function: no source


CHECK_EVERY_EXPERIMENT = """
import sys
sys.path.insert(0, {support!r})
from framework_helpers import compose_config, CONF_DIR
from hedgehog.train.validation import validate_config
names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
for name in names:
    validate_config(compose_config([f"experiment={{name}}", "trainer.accelerator=cpu", "trainer.precision=32-true"]))
heavy = sorted(m for m in ("torch", "lightning", "wandb", "transformers") if m in sys.modules)
print(len(names), "checked; imported:", heavy)
"""


def test_every_experiment_is_checked_without_importing_torch():
    code = CHECK_EVERY_EXPERIMENT.format(support=str(REPO_ROOT / "tests" / "framework"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checked; imported: []" in result.stdout, result.stdout
