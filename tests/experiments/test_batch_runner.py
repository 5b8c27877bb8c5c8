"""experiments/batch_runner.py run: jobs in plan order after their prerequisites, a summary of every job, and with
--history one summary over several runs into the same log folder; paused runs (exit 3) and the sittings that the
work left needs (estimate)."""

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
        "first | 30 | - | echo hello", "second | 30 | first | exit 4", "third | 30 | second | true", "alone | 30 | - | true",
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


def test_a_run_paused_by_the_sitting_end_is_paused_and_its_followers_wait(batch_runner, tmp_path):
    statuses = run_plan(batch_runner, tmp_path, tmp_path / "logs", [
        "long | 30 | - | exit 3", "after_long | 30 | long | true", "later | 30 | after_long | true",
    ])
    assert statuses == {"long": "paused", "after_long": "waiting", "later": "waiting"}


def test_jobs_are_told_their_name_and_when_to_pause(batch_runner, tmp_path):
    run_plan(batch_runner, tmp_path, tmp_path / "logs", ["show | 30 | - | echo $HEDGEHOG_JOB_NAME ${HEDGEHOG_PAUSE_AT:-none}"])
    assert (tmp_path / "logs" / "_jobs" / "show.log").read_text().splitlines()[1] == "show none"
    run_plan(batch_runner, tmp_path, tmp_path / "logs2", ["show | 30 | - | echo $HEDGEHOG_PAUSE_AT $HEDGEHOG_JOB_DEADLINE"],
             "--pause-margin", "20")
    pause_at, deadline = map(int, (tmp_path / "logs2" / "_jobs" / "show.log").read_text().splitlines()[1].split())
    assert deadline - pause_at == 20


def test_sittings_needed(batch_runner):
    assert batch_runner.sittings_needed([], 4, 100) == 0
    assert batch_runner.sittings_needed([50, 50, 50, 50], 4, 100) == 1
    assert batch_runner.sittings_needed([90] * 9, 4, 100) == 3  # 810 s over 4 slots of 100 s
    assert batch_runner.sittings_needed([250, 10], 8, 100) == 3  # one run is in one slot at a time


def test_estimate_reads_progress_and_lists_runs_without_a_step_time(batch_runner, tmp_path, capsys):
    logs = tmp_path / "logs"
    for run, record in {
        "a": {"status": "paused", "job": "a", "steps_left": 1000, "seconds_per_step": 0.5},
        "b": {"status": "complete", "job": "b", "steps_left": 0, "seconds_per_step": 0.2},
        "c": {"status": "paused", "job": "c", "steps_left": None, "seconds_per_step": 0.1},  # epoch-based
    }.items():
        (logs / run).mkdir(parents=True)
        (logs / run / "progress.json").write_text(json.dumps(record))
    plan = tmp_path / "plan.txt"
    plan.write_text("a | 30 | - | true\nb | 30 | - | true\nnew | 30 | - | true\n")
    assert batch_runner.main(["estimate", "--log-dir", str(logs), "--workers", "2", "--sitting", "260",
                              "--overhead", "10", "--plan", str(plan)]) == 0
    estimate = json.loads((logs / "_jobs" / "estimate.json").read_text())
    assert estimate["seconds_left"] == 510  # 1000 steps x 0.5 s + 10 s of overhead
    assert estimate["sittings_needed"] == 3  # one run of 510 s in sittings of 250 s of training
    assert estimate["unknown"] == ["c", "new"]
    assert "3 more sitting(s)" in capsys.readouterr().out


def test_pack_keeps_the_checkpoints_of_paused_runs_only_when_asked(batch_runner, tmp_path):
    import tarfile

    logs = tmp_path / "logs"
    for run, status in (("paused_run", "paused"), ("done_run", "complete")):
        (logs / run / "checkpoints" / "train").mkdir(parents=True)
        (logs / run / "checkpoints" / "train" / "last.ckpt").write_bytes(b"weights")
        (logs / run / "progress.json").write_text(json.dumps({"status": status}))

    def packed(*extra):
        out = tmp_path / f"out{len(extra)}.tar.gz"
        assert batch_runner.main(["pack", "--log-dir", str(logs), "--out", str(out), *extra]) == 0
        with tarfile.open(out) as tar:
            return {name for name in tar.getnames() if name.endswith(".ckpt")}

    assert packed() == set()
    assert packed("--paused-checkpoints") == {"logs/paused_run/checkpoints/train/last.ckpt"}
