"""A diverging run stops with the step and the first non-finite layer, and its checkpoints stay finite."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from framework_helpers import TINY_MQAR, compose_config
from hedgehog.callbacks.nan_guard import first_non_finite_module
from hedgehog.utils.errors import NonFiniteLossError
from hedgehog.train.pipeline import train


def test_first_non_finite_module_is_the_earliest_in_execution_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.c(self.b(self.a(x)))

    net = Net()
    with torch.no_grad():
        net.b.weight.fill_(float("inf"))
    assert first_non_finite_module(net, lambda: net(torch.ones(1, 2))) == "b (Linear)"
    with torch.no_grad():
        net.b.weight.fill_(1.0)
    assert first_non_finite_module(net, lambda: net(torch.ones(1, 2))) is None


def test_nan_loss_stops_with_step_and_layer_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = compose_config(TINY_MQAR + ["trainer.max_steps=20", "callbacks.model_checkpoint.every_n_train_steps=2"],
                         tmp_path)
    with open_dict(cfg):
        cfg.model = OmegaConf.create(
            {"_target_": "framework_support.TinyLM", "seq_len": "${data.seq_len}", "nan_after": 5}
        )
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    message = str(info.value)
    assert "at step 5" in message and "model.blowup (BlowUp)" in message, message
    last = torch.load(tmp_path / "checkpoints" / "train" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "checkpoints" / "train" / "done.json").exists()


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from hedgehog.callbacks.nan_guard import NaNGuard

    class Trainer:
        global_step = 7

    with pytest.raises(NonFiniteLossError, match="weight w is not finite"):
        NaNGuard().on_save_checkpoint(Trainer(), None, {"state_dict": {"w": torch.tensor([1.0, float("nan")])}})
