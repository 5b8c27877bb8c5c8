"""Sittings: a run paused at the end of a sitting (a step budget or a time) checkpoints, writes no results, exits 3,
and continues with the same command to the same result as a run that was never paused."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from omegaconf import open_dict

from framework_helpers import TINY_MQAR, compose_config, run_py
from hedgehog.callbacks.sitting import PAUSE_AT_ENV, SITTING_STEPS_ENV, SittingClock, SittingLimit
from hedgehog.train.pipeline import train
from hedgehog.utils.errors import ConfigError, RunPaused
from test_resume import two_stage_config


def test_limit_reads_the_environment_and_names_a_bad_value():
    assert not SittingLimit.from_env({}).active
    limit = SittingLimit.from_env({PAUSE_AT_ENV: "1700000000.5", SITTING_STEPS_ENV: "12"})
    assert limit == SittingLimit(pause_at=1700000000.5, max_steps=12) and limit.active
    for env, name in (({SITTING_STEPS_ENV: "0"}, SITTING_STEPS_ENV), ({SITTING_STEPS_ENV: "1.5"}, SITTING_STEPS_ENV),
                      ({PAUSE_AT_ENV: "tomorrow"}, PAUSE_AT_ENV), ({PAUSE_AT_ENV: "inf"}, PAUSE_AT_ENV)):
        with pytest.raises(ConfigError, match=name):
            SittingLimit.from_env(env)


def test_clock_is_due_by_steps_or_by_time():
    clock = SittingClock(SittingLimit(max_steps=3))
    clock.steps = 2
    assert not clock.due(0.0)
    clock.steps = 3
    assert clock.due(0.0)
    timed = SittingClock(SittingLimit(pause_at=100.0))
    assert not timed.due(99.9) and timed.due(100.0)
    assert SittingClock().seconds_per_step is None


def test_paused_sittings_end_where_an_unpaused_run_ends(tmp_path, monkeypatch):
    reference = train(two_stage_config(tmp_path, "reference", first_steps=6, second_steps=6))
    run_dir = tmp_path / "sittings"

    monkeypatch.setenv(SITTING_STEPS_ENV, "4")
    with pytest.raises(RunPaused) as first:  # sitting 1: steps 1-4 of the first stage
        train(two_stage_config(tmp_path, "sittings"))
    assert (first.value.stage, first.value.step, first.value.exit_code) == ("first", 4, 3)
    assert not (run_dir / "results.json").exists()
    assert torch.load(run_dir / "checkpoints" / "first" / "last.ckpt", weights_only=False)["global_step"] == 4
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["status"] == "paused" and progress["stage"] == "first"
    assert progress["planned_steps"] == {"first": 6, "second": 6} and progress["done_steps"] == {"first": 4}
    assert progress["steps_left"] == 8 and progress["steps_this_sitting"] == 4
    assert progress["seconds_per_step"] > 0

    with pytest.raises(RunPaused) as second:  # sitting 2: the first stage's last 2 steps, then 2 of the second
        train(two_stage_config(tmp_path, "sittings"))
    assert (second.value.stage, second.value.step) == ("second", 2)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["done_steps"] == {"first": 6, "second": 2} and progress["steps_left"] == 4

    monkeypatch.delenv(SITTING_STEPS_ENV)
    resumed = train(two_stage_config(tmp_path, "sittings"))  # no limit: runs to the end
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["stages"]["second"]["global_step"] == 6
    assert json.loads((run_dir / "progress.json").read_text())["status"] == "complete"


def test_a_sitting_that_ends_with_the_stage_does_not_pause(tmp_path, monkeypatch):
    monkeypatch.setenv(SITTING_STEPS_ENV, "3")
    results = train(two_stage_config(tmp_path, "exact", first_steps=3, second_steps=0))
    assert results["status"] == "complete" and results["stages"]["first"]["global_step"] == 3


def test_a_past_pause_time_pauses_after_one_step(tmp_path, monkeypatch):
    monkeypatch.setenv(PAUSE_AT_ENV, "1")
    with pytest.raises(RunPaused) as paused:
        train(two_stage_config(tmp_path, "late"))
    assert (paused.value.stage, paused.value.step) == ("first", 1)


@pytest.mark.slow
def test_run_py_exits_3_and_the_rerun_continues(tmp_path):
    common = TINY_MQAR + ["trainer.max_steps=8", "trainer.log_every_n_steps=1", "hydra.run.dir=" + str(tmp_path / "r")]
    paused = run_py(common, tmp_path, env={SITTING_STEPS_ENV: "5"})
    assert paused.returncode == 3, paused.stderr[-3000:]
    message = paused.stdout + paused.stderr
    assert "Paused at the end of the sitting" in message and "Traceback" not in message
    assert "Rerun the same command" in message
    rerun = run_py(common, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["stages"]["train"]["global_step"] == 8 and results["resumed"] is True
    with open(tmp_path / "r" / "csv" / "metrics.csv", newline="") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 8  # every step logged once across the two sittings
