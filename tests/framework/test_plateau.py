"""StopAtPlateau: ends only its own stage after `patience` validations without a `min_delta` improvement, and its
state survives a checkpoint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hedgehog.callbacks.plateau import StopAtPlateau


def validate(callback, values, stage="finetune", mode_metric="val/score"):
    """Feed one validation per value; returns the step at which the trainer was told to stop (or None)."""
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={}, should_stop=False, global_step=0)
    module = SimpleNamespace(stage=stage)
    for step, value in enumerate(values, 1):
        trainer.global_step = step * 100
        trainer.callback_metrics = {mode_metric: torch.tensor(value)}
        callback.on_validation_end(trainer, module)
        if trainer.should_stop:
            return trainer.global_step
    return None


def test_stops_after_patience_validations_without_enough_improvement():
    # best 0.80 at the 3rd validation; 0.85 beats it by less than min_delta=0.1, so it does not count
    assert validate(StopAtPlateau(patience=3, min_delta=0.1), [0.5, 0.65, 0.8, 0.85, 0.8, 0.82, 0.95]) == 600
    assert validate(StopAtPlateau(patience=3), [0.5, 0.6, 0.7, 0.8, 0.9]) is None  # still improving
    assert validate(StopAtPlateau(patience=2, mode="min", monitor="val/loss"), [3.0, 2.0, 2.5, 2.1],
                    mode_metric="val/loss") == 400


def test_other_stages_keep_their_budget():
    assert validate(StopAtPlateau(patience=1, stage="finetune"), [0.5, 0.4, 0.3], stage="finetune_linear") is None
    assert validate(StopAtPlateau(patience=1, stage=None), [0.5, 0.4], stage="anything") == 200


def test_state_survives_a_checkpoint():
    first = StopAtPlateau(patience=3)
    validate(first, [0.5, 0.9, 0.8, 0.8])  # best 0.9, waited 2
    second = StopAtPlateau(patience=3)
    second.load_state_dict(first.state_dict())
    assert validate(second, [0.85]) == 100  # the third validation without improvement


def test_bad_settings_and_a_missing_metric_are_clear_errors():
    with pytest.raises(ValueError, match="mode"):
        StopAtPlateau(mode="up")
    with pytest.raises(ValueError, match="patience"):
        StopAtPlateau(patience=0)
    with pytest.raises(KeyError, match="val/score"):
        validate(StopAtPlateau(), [0.5], mode_metric="val/acc")
