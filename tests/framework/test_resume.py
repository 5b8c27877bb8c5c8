"""Checkpoints and resumption: a run stopped at any step and rerun ends exactly where an uninterrupted run
ends; multi-stage regimes skip finished stages and resume the unfinished one."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader

from framework_helpers import TINY_MQAR, compose_config, run_killed, run_py
from framework_support import TwoStageModule
from hedgehog.train.pipeline import train
from hedgehog.train.resume import EpochShuffleSampler, ResumableDataLoader, resumable_loader


def test_resumable_loader_continues_mid_epoch_in_the_same_order():
    data = list(range(40))
    full = ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3)
    full.sampler.set_epoch(2)
    epoch = [b.tolist() for b in full]
    assert sorted(sum(epoch, [])) == data and epoch != [data[i:i + 4] for i in range(0, 40, 4)]

    first = ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3)
    first.sampler.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"batches_yielded": 3}

    restarted = ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3)
    restarted.load_state_dict(state)
    iterator = iter(restarted)
    restarted.sampler.set_epoch(2)  # Lightning sets the epoch after iter(); the skip happens on next()
    rest = [b.tolist() for b in iterator]
    assert seen + rest == epoch
    assert [b.tolist() for b in restarted] == epoch  # the following pass starts at the beginning again

    other_epoch = EpochShuffleSampler(40, seed=3)
    other_epoch.set_epoch(3)
    assert list(other_epoch) != sum(epoch, [])


def test_plain_loaders_are_rebuilt_as_resumable_and_custom_ones_kept():
    data = list(range(10))
    rebuilt = resumable_loader(DataLoader(data, batch_size=3, shuffle=True, drop_last=True), seed=0)
    assert isinstance(rebuilt, ResumableDataLoader) and rebuilt.batch_size == 3 and rebuilt.drop_last
    assert isinstance(rebuilt.sampler, EpochShuffleSampler) and rebuilt.sampler.shuffle
    assert not resumable_loader(DataLoader(data, batch_size=3), seed=0).sampler.shuffle
    custom = DataLoader(data, sampler=[3, 1, 2])
    assert resumable_loader(custom, seed=0) is custom


def two_stage_config(tmp_path, name, first_steps=6, second_steps=6, extra=()):
    cfg = compose_config(["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                          "trainer.val_check_interval=3", "trainer.num_sanity_val_steps=0",
                          "callbacks.model_checkpoint.every_n_train_steps=2", *extra], tmp_path / name)
    with open_dict(cfg):
        cfg.data = OmegaConf.create({"_target_": "framework_support.CountingDataModule", "num_train": 64})
        cfg.model = OmegaConf.create({"_target_": "framework_support.TinyLM", "seq_len": 8, "dropout": 0.2})
        cfg.regime = OmegaConf.create({"_target_": "framework_support.TwoStageModule", "first_steps": first_steps,
                                       "second_steps": second_steps})
    return cfg


def test_two_stage_run_resumes_inside_the_unfinished_stage(tmp_path):
    reference = train(two_stage_config(tmp_path, "reference"))
    assert list(reference["stages"]) == ["first", "second"]
    assert reference["stages"]["first"]["global_step"] == 6 and reference["stages"]["second"]["global_step"] == 6
    assert "val/loss" in reference["stages"]["first"]["metrics"] and "test/loss" in reference["metrics"]
    assert (tmp_path / "reference" / "checkpoints" / "second" / "final.ckpt").is_file()

    crashing = two_stage_config(tmp_path, "crashed")
    with open_dict(crashing):
        crashing.callbacks.crash = {"_target_": "framework_support.CrashAtStep", "step": 3, "stage": "second"}
    with pytest.raises(RuntimeError, match="crash at step 3"):
        train(crashing)
    run_dir = tmp_path / "crashed"
    assert json.loads((run_dir / "checkpoints" / "first" / "done.json").read_text())["global_step"] == 6
    assert (run_dir / "checkpoints" / "second" / "last.ckpt").is_file()
    assert not (run_dir / "checkpoints" / "second" / "done.json").exists() and not (run_dir / "results.json").exists()
    assert torch.load(run_dir / "checkpoints" / "second" / "last.ckpt", weights_only=False)["global_step"] == 2

    resumed = train(two_stage_config(tmp_path, "crashed"))
    module = TwoStageModule.instances[-1]
    assert module.started == ["first", "second"] and module.fitted == ["second"]  # first stage not retrained
    assert resumed["resumed"] is True and reference["resumed"] is False
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["stages"]["second"]["metrics"] == reference["stages"]["second"]["metrics"]

    built = len(TwoStageModule.instances)
    again = train(two_stage_config(tmp_path, "crashed"))  # complete: returned, nothing built or trained
    assert again["metrics"] == resumed["metrics"] and len(TwoStageModule.instances) == built


def test_zero_step_stage_is_started_but_not_trained(tmp_path):
    results = train(two_stage_config(tmp_path, "skip", first_steps=0, second_steps=4))
    module = TwoStageModule.instances[-1]
    assert module.started == ["first", "second"] and module.fitted == ["second"]
    assert results["stages"]["first"]["skipped"] is True and results["stages"]["second"]["global_step"] == 4


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    """kill -9 in the middle of an epoch, rerun the same command: same final weights and metrics as a run that
    was never interrupted (dropout on, so the randomness of each step must be replayed too)."""
    common = TINY_MQAR + ["trainer.max_steps=14", "trainer.val_check_interval=5", "model.dropout=0.1",
                          "callbacks.model_checkpoint.every_n_train_steps=3", "data.num_train=160",  # 5 batches/epoch
                          "trainer.log_every_n_steps=1"]
    uninterrupted = run_py(common + [f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    run_dir = tmp_path / "b"
    run_killed(common, tmp_path, run_dir, kill_step=8)
    assert not (run_dir / "results.json").exists()
    assert torch.load(run_dir / "checkpoints" / "train" / "last.ckpt", weights_only=False)["global_step"] == 6

    rerun = run_py(common + [f"hydra.run.dir={run_dir}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stdout
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert b["resumed"] and not a["resumed"]
    assert a["metrics"] == b["metrics"] and a["metrics"]["test/loss"] > 0
    weights_a = torch.load(tmp_path / "a" / "checkpoints" / "train" / "final.ckpt", weights_only=False)["state_dict"]
    weights_b = torch.load(run_dir / "checkpoints" / "train" / "final.ckpt", weights_only=False)["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # the CSV log of the resumed run holds every step once, with the same losses
    losses_a, losses_b = train_losses(tmp_path / "a"), train_losses(run_dir)
    assert len(losses_a) == 14 and losses_a == losses_b


def train_losses(run_dir):
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/loss")]
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {step: float(row["train/loss"]) for step, row in zip(steps, rows)}
