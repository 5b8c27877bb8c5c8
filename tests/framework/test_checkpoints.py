"""Checkpoints are written atomically (a failure mid-write leaves the earlier one intact), and a checkpoint that does
not load is named in a clear error; the run then falls back to the previous good one or says how to start over."""

from __future__ import annotations

import errno
import json
import zipfile
from pathlib import Path

import pytest
import torch

from framework_helpers import TINY_MQAR, run_killed, run_py
from hedgehog.utils.atomic_files import previous_version, write_atomically
from hedgehog.train.checkpoints import AtomicCheckpointIO, checkpoint_problem, resume_checkpoint
from hedgehog.utils.errors import CheckpointError


def lightning_checkpoint(step: int) -> dict:
    return {"state_dict": {"weight": torch.full((64, 64), float(step))}, "global_step": step}


def write(path: Path, step: int) -> Path:
    AtomicCheckpointIO().save_checkpoint(lightning_checkpoint(step), path)
    return path


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_save_replaces_atomically_and_keeps_the_previous_version(tmp_path):
    last = tmp_path / "stage" / "last.ckpt"
    write(last, 1)
    assert not previous_version(last).exists()
    write(last, 2)
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert torch.load(previous_version(last), weights_only=False)["global_step"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.ckpt.previous"]  # no temporary files


def test_a_failure_mid_write_leaves_the_earlier_checkpoint_intact(tmp_path, monkeypatch):
    last = write(tmp_path / "last.ckpt", 1)
    before = last.read_bytes()

    def half_then_full_disk(obj, file):
        file.write(b"PK\x03\x04" + b"\0" * 1000)  # the start of a zip, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full_disk)
    with pytest.raises(CheckpointError) as info:
        AtomicCheckpointIO().save_checkpoint(lightning_checkpoint(2), last)
    message = str(info.value)
    assert str(last) in message and "no space left" in message and "unchanged" in message
    assert "paths.log_dir=" in message and "\n" not in message
    assert last.read_bytes() == before and checkpoint_problem(last) is None
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "the temporary file is removed"


def test_atomic_write_removes_its_temporary_file_when_interrupted(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def interrupted(file):
        file.write(b"new, but only hal")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, interrupted, keep_previous=True)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncate", "truncated or not a PyTorch checkpoint"),
        ("empty", "empty (0 bytes)"),
        ("text", "truncated or not a PyTorch checkpoint"),
        ("flip", "damaged"),
        ("not_lightning", "not a Lightning checkpoint"),
        ("missing", "does not exist"),
    ],
)
def test_checkpoint_problem_names_what_is_wrong(damage, expected, tmp_path):
    path = write(tmp_path / "last.ckpt", 3)
    assert checkpoint_problem(path) is None
    if damage == "truncate":
        truncate(path)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("this is not a checkpoint\n" * 100)
    elif damage == "flip":
        with zipfile.ZipFile(path) as archive:
            member = max(archive.infolist(), key=lambda m: m.file_size)
        data = bytearray(path.read_bytes())
        data[member.header_offset + 200] ^= 0xFF  # inside the biggest tensor's bytes
        path.write_bytes(bytes(data))
    elif damage == "not_lightning":
        torch.save({"weight": torch.zeros(3)}, path)
    elif damage == "missing":
        path.unlink()
    assert expected in checkpoint_problem(path)


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, capsys):
    last = tmp_path / "checkpoints" / "train" / "last.ckpt"
    write(last, 4)
    write(last, 8)
    truncate(last)
    chosen = resume_checkpoint(last, "train", tmp_path)
    assert chosen == previous_version(last) and torch.load(chosen, weights_only=False)["global_step"] == 4
    assert not last.exists() and last.with_name("last.ckpt.damaged").exists(), "the damaged file is moved aside"
    assert "does not load" in capsys.readouterr().out


def test_resume_without_a_good_checkpoint_says_how_to_start_over(tmp_path):
    last = tmp_path / "checkpoints" / "train" / "last.ckpt"
    write(last, 4)
    truncate(last)
    with pytest.raises(CheckpointError) as info:
        resume_checkpoint(last, "train", tmp_path)
    message = str(info.value)
    assert str(last) in message and "truncated" in message and "delete" in message and str(tmp_path) in message
    assert resume_checkpoint(tmp_path / "none" / "last.ckpt", "train", tmp_path) is None  # nothing there: fresh start


def test_truncated_checkpoint_run_falls_back_then_ends_like_an_uninterrupted_run(tmp_path):
    """Killed at step 5 (checkpoints at steps 2 and 4), last.ckpt truncated as a full disk would leave it: the rerun
    says so, resumes from the previous checkpoint (step 2) and ends with the uninterrupted run's metrics."""
    common = TINY_MQAR + ["trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=2",
                          "trainer.log_every_n_steps=1"]
    reference = run_py(common + [f"hydra.run.dir={tmp_path / 'reference'}"], tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "run"
    run_killed(common, tmp_path, run_dir, kill_step=5)
    last = run_dir / "checkpoints" / "train" / "last.ckpt"
    assert torch.load(previous_version(last), weights_only=False)["global_step"] == 2
    truncate(last, 0.6)

    rerun = run_py(common + [f"hydra.run.dir={run_dir}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "does not load" in rerun.stdout and f"resuming from {previous_version(last)}" in rerun.stdout
    a = json.loads((tmp_path / "reference" / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert b["resumed"] and a["metrics"] == b["metrics"]


def test_no_loadable_checkpoint_stops_with_one_paragraph(tmp_path):
    common = TINY_MQAR + ["trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=2"]
    run_dir = tmp_path / "run"
    run_killed(common, tmp_path, run_dir, kill_step=3)
    last = run_dir / "checkpoints" / "train" / "last.ckpt"
    assert not previous_version(last).exists()
    last.write_text("not a checkpoint")
    rerun = run_py(common + [f"hydra.run.dir={run_dir}"], tmp_path)
    assert rerun.returncode == 2 and "Traceback" not in rerun.stderr
    message = rerun.stderr.strip()
    assert message.startswith("error: cannot resume stage 'train'") and "\n" not in message
    assert str(last) in message and "not a PyTorch checkpoint" in message and f"delete {last}" in message
