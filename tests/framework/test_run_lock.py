"""A run folder has one owner: a second start of the same command stops with a clear message while the first runs
on undisturbed, and a lock left by a dead process is taken over."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework_helpers import TINY_MQAR, run_py
from hedgehog.utils.errors import RunFolderBusy
from hedgehog.train.run_lock import LOCK_FILE, RunLock, is_launched_worker, read_lock

HOLD_LOCK = """
import sys, time
from hedgehog.train.run_lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_second_lock_on_the_same_folder_is_refused_until_the_first_is_released(tmp_path):
    with RunLock(tmp_path) as first:
        assert read_lock(first.path)["pid"] == os.getpid()
        with pytest.raises(RunFolderBusy) as info:
            RunLock(tmp_path).acquire()
        message = str(info.value)
        assert f"process {os.getpid()} on host {socket.gethostname()}" in message
        assert str(tmp_path) in message and "hydra.run.dir=" in message
    with RunLock(tmp_path) as again:  # released: free again, and nothing was taken over
        assert again.taken_over is None


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2] / "src"),
                                                                   os.environ.get("PYTHONPATH")])))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"process {holder.pid} "):
            RunLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert read_lock(tmp_path / LOCK_FILE)["pid"] == holder.pid  # the dead process's record is still there
    with RunLock(tmp_path) as lock:
        assert lock.taken_over is not None and lock.taken_over["pid"] == holder.pid
        assert read_lock(lock.path)["pid"] == os.getpid()


def test_stale_record_without_flock_is_judged_by_pid_and_host(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    record = {"pid": dead_pid, "host": socket.gethostname(), "started": time.time(), "command": "run.py"}
    assert RunLock._held_elsewhere(record) is False
    assert RunLock._held_elsewhere({**record, "pid": os.getppid()}) is True  # a live process on this host
    assert RunLock._held_elsewhere({**record, "host": "another-host"}) is True


def test_workers_of_a_distributed_run_do_not_take_the_lock(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert not is_launched_worker()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not is_launched_worker()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_launched_worker()


def test_two_concurrent_starts_of_the_same_command(tmp_path):
    """The first run holds the folder (paused at step 3); the second start exits 2 naming it and starts nothing;
    the first then finishes with a complete CSV log, one checkpoint file and one W&B run."""
    gate = tmp_path / "go"
    overrides = [o for o in TINY_MQAR if o != "logger=csv"] + ["logger=many", "trainer.log_every_n_steps=1"]
    run_dir = tmp_path / "run"
    env = dict(os.environ, HEDGEHOG_LOG_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1")
    first = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parents[2] / "run.py"), *overrides, f"hydra.run.dir={run_dir}",
         "+callbacks.wait._target_=framework_support.WaitForFile", "+callbacks.wait.step=3",
         f"+callbacks.wait.path={gate}"],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and read_lock(run_dir / LOCK_FILE).get("pid") != first.pid:
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.2)
        assert read_lock(run_dir / LOCK_FILE).get("pid") == first.pid

        second = run_py(overrides + [f"hydra.run.dir={run_dir}"], tmp_path, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        message = second.stderr.strip()
        assert message.startswith("error: the run folder") and "\n" not in message
        assert f"in use by process {first.pid} on host {socket.gethostname()}" in message

        gate.write_text("go")
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["stages"]["train"]["global_step"] == 6
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]
    assert steps == list(range(6)), steps
    assert sorted(p.name for p in (run_dir / "checkpoints" / "train").glob("*.ckpt")) == ["final.ckpt", "last.ckpt"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert read_lock(run_dir / LOCK_FILE) == {}, "the lock is released at the end"
