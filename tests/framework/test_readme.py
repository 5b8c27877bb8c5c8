"""The README's set-up commands are the ones CI runs, and the commands it shows exist."""

from __future__ import annotations

import re

from framework_helpers import CONF_DIR, REPO_ROOT


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    assert test_command.startswith("pip install torch==2.13.0 && pip install -e ")
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
    assert "set -euo pipefail" in ci_lines


def test_readme_default_job_command():
    assert "pip install torch==2.13.0 && pip install -e . && python run.py" in readme_commands()


def test_experiments_named_in_the_readme_exist():
    for command in readme_commands():
        for name in re.findall(r"experiment=([\w]+)", command):
            assert (CONF_DIR / "experiment" / f"{name}.yaml").is_file(), name
        for group, name in re.findall(r"\b(trainer|data|hparams_search|attention)=([\w/]+)", command):
            for option in name.split(","):
                assert (CONF_DIR / group / f"{option}.yaml").is_file(), f"{group}={option}"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)


def test_readme_python_examples_run():
    """The usage examples of the README (attention library, conversion of the pip-installed MiniLM) run as shown."""
    blocks = readme_python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
