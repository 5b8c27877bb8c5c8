"""experiments/batch_runner.py run: jobs in plan order after their prerequisites, a summary of every job, and with
--history one summary over several runs into the same log folder."""

from __future__ import annotations

import json
from pathlib import Path


def run_plan(runner, tmp_path: Path, log_dir: Path, lines: list[str], *extra: str) -> dict[str, str]:
    """Run a plan of ``lines``; the statuses of summary.json's jobs by name."""
    plan = tmp_path / "plan.txt"
    plan.write_text("\n".join(lines) + "\n")
    assert runner.main(["run", str(plan), "--log-dir", str(log_dir), "--workers", "2", "--budget", "60",
                        "--min-time", "0", *extra]) == 0
    summary = json.loads((log_dir / "_jobs" / "summary.json").read_text())
    return {job["name"]: job["status"] for job in summary["jobs"]}


def test_prerequisites_and_statuses(batch_runner, tmp_path):
    statuses = run_plan(batch_runner, tmp_path, tmp_path / "logs", [
        "first | 30 | - | echo hello", "second | 30 | first | exit 3", "third | 30 | second | true", "alone | 30 | - | true",
    ])
    assert statuses == {"first": "ok", "second": "failed", "third": "blocked", "alone": "ok"}
    assert (tmp_path / "logs" / "_jobs" / "first.log").read_text() == "$ echo hello\nhello\n"


def test_without_history_the_summary_is_this_run_only(batch_runner, tmp_path):
    run_plan(batch_runner, tmp_path, tmp_path / "logs", ["first | 30 | - | true"])
    assert run_plan(batch_runner, tmp_path, tmp_path / "logs", ["second | 30 | - | true"]) == {"second": "ok"}


def test_history_keeps_one_summary_over_runs(batch_runner, tmp_path):
    history = tmp_path / "logs" / "_jobs" / "jobs.jsonl"
    run_plan(batch_runner, tmp_path, tmp_path / "logs", ["first | 30 | - | true", "second | 30 | - | exit 1"],
             "--history", str(history))
    statuses = run_plan(batch_runner, tmp_path, tmp_path / "logs", ["third | 30 | - | true"], "--history", str(history))
    assert statuses == {"first": "ok", "second": "failed", "third": "ok"}
    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert sorted((r["name"], r["status"], r["returncode"]) for r in records) == [
        ("first", "ok", 0), ("second", "failed", 1), ("third", "ok", 0)]
    assert len({r["run"] for r in records}) == 2 and all(r["command"] for r in records)
