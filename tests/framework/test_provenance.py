"""Provenance: results record the commit of the code that ran and whether its checkout was dirty, and the reports
mark every run whose code is not a commit on main."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from hedgehog.report import markdown_table
from hedgehog.utils.provenance import code_label, code_status, code_version, package_dir

REPO = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> dict:
    """A checkout with two commits on main and one on a side branch; main is checked out."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "test")
    (path / "code.py").write_text("x = 1\n")
    git(path, "add", "code.py")
    git(path, "commit", "-q", "-m", "first")
    first = git(path, "rev-parse", "HEAD")
    git(path, "checkout", "-q", "-b", "side")
    (path / "code.py").write_text("x = 2\n")
    git(path, "commit", "-q", "-am", "side")
    side = git(path, "rev-parse", "HEAD")
    git(path, "checkout", "-q", "main")
    return {"path": path, "main": first, "side": side}


def test_code_version_names_the_commit_and_dirtiness_of_the_checkout(repo):
    version = code_version(repo["path"])
    assert version == {"commit": repo["main"], "dirty": False, "changed_files": [], "repository": str(repo["path"])}
    (repo["path"] / "code.py").write_text("x = 3\n")
    version = code_version(repo["path"])
    assert version["dirty"] is True and version["changed_files"] == ["code.py"]
    outside = repo["path"].parent / "not_a_checkout"
    outside.mkdir()
    assert code_version(outside)["commit"] is None


def test_the_commit_recorded_is_that_of_the_imported_package():
    version = code_version()
    top = git(package_dir(), "rev-parse", "--show-toplevel")
    assert version["repository"] == top and version["commit"] == git(package_dir(), "rev-parse", "HEAD")
    assert isinstance(version["dirty"], bool)


def test_code_status_of_recorded_runs(repo):
    path = repo["path"]
    assert code_status({"commit": repo["main"], "dirty": False}, path) == "main"
    assert code_status({"commit": repo["main"], "dirty": True}, path) == "uncommitted changes"
    assert code_status({"commit": repo["side"], "dirty": False}, path) == "not on main"
    assert code_status({"commit": "0" * 40}, path) == "not on main"  # a commit this checkout does not know
    assert code_status({}, path) == "unknown" and code_status(None, path) == "unknown"
    assert code_label({"commit": repo["main"], "dirty": False}, path) == ""
    assert code_label({"commit": repo["side"]}, path) == f"not on main ({repo['side'][:8]})"


def run_record(attention: str, acc: float, git_record: dict | None) -> dict:
    return {"status": "complete", "attention": attention, "experiment": "mqar", "wall_time_s": 1.0,
            "metrics": {"test/acc": acc}, **({"git": git_record} if git_record is not None else {})}


def test_sweep_report_marks_runs_not_on_main(repo):
    runs = [run_record("softmax", 0.9, {"commit": repo["main"], "dirty": False}),
            run_record("hedgehog", 0.8, {"commit": repo["side"], "dirty": False}),
            run_record("taylor", 0.7, {"commit": repo["main"], "dirty": True}),
            run_record("elu", 0.6, None)]
    lines = markdown_table(runs, ["test/acc"], repository=repo["path"]).strip().splitlines()
    assert lines[0].endswith("| run | code |")
    assert lines[2].endswith("|  |")  # on main: no mark
    assert lines[3].endswith(f"| not on main ({repo['side'][:8]}) |")
    assert lines[4].endswith(f"| uncommitted changes ({repo['main'][:8]}) |")
    assert lines[5].endswith("| unknown |")


def load_collect():
    spec = importlib.util.spec_from_file_location("collect", REPO / "experiments" / "collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_tables_mark_runs_not_on_main(repo, tmp_path):
    pytest.importorskip("pandas")
    collect = load_collect()
    runs = tmp_path / "results" / "runs" / "cpu_batch" / "mqar"
    for attention, acc, git_record in (("softmax", 0.9, {"commit": repo["main"], "dirty": False}),
                                       ("hedgehog", 0.8, {"commit": repo["side"], "dirty": False}),
                                       ("taylor", 0.7, {"commit": repo["main"], "dirty": True})):
        (runs / attention).mkdir(parents=True)
        record = run_record(attention, acc, git_record)
        record.update(device={"accelerator": "cpu", "name": "x"}, stages={"train": {"global_step": 10}}, seed=0)
        (runs / attention / "results.json").write_text(json.dumps(record))
    tables = collect.collect([], tmp_path / "results", tmp_path / "figures", repository=repo["path"])
    table = tables["mqar"].set_index("attention")
    assert table.loc["softmax", "code"] == ""
    assert table.loc["hedgehog", "code"] == f"not on main ({repo['side'][:8]})"
    assert table.loc["taylor", "code"] == f"uncommitted changes ({repo['main'][:8]})"
    markdown = (tmp_path / "results" / "mqar.md").read_text()
    assert "code" in markdown.splitlines()[0] and f"not on main ({repo['side'][:8]})" in markdown
