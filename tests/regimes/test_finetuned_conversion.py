"""FinetunedConversionModule through Lightning on a tiny random BERT and real GLUE rows."""

import logging

import pytest
import torch

from hedgehog.conversion import feature_map_parameters, is_converted
from hedgehog.data.glue import GLUEDataModule
from hedgehog.regimes.finetuned_conversion import FinetunedConversionModule
from regime_support import changed, run_stages, snapshot, tiny_bert, trainer_for

HEDGEHOG = {"name": "hedgehog", "options": {}}


def glue(task, data_dir, tokenizer, **kw):
    settings = dict(max_length=48, batch_size=8, max_train_samples=32, max_eval_samples=16)
    settings.update(kw)
    return GLUEDataModule(task, data_dir, tokenizer, **settings)


def module_for(model, task="rte", attention=HEDGEHOG, **kw):
    steps = dict(finetune_steps=3, distill_steps=3, finetune_linear_steps=3, finetune_lr=1e-3, distill_lr=1e-2,
                 finetune_linear_lr=1e-3, warmup_ratio=0.0)
    steps.update(kw)
    return FinetunedConversionModule(model, task=task, attention=attention, **steps)


def fmap_names(module):
    ids = {id(p) for p in feature_map_parameters(module.model)}
    return {n for n, p in module.model.named_parameters() if id(p) in ids}


def test_each_stage_trains_what_it_should_and_the_teacher_score_is_the_softmax_models(data_dir, wordpiece, tmp_path):
    dm = glue("rte", data_dir, wordpiece)
    module = module_for(tiny_bert(len(wordpiece)))
    assert [(s.name, s.max_steps) for s in module.stages] == [("finetune", 3), ("distill", 3), ("finetune_linear", 3)]

    module.start_stage("finetune")
    before = snapshot(module.model)
    trainer_for(tmp_path, 3).fit(module, datamodule=dm)
    assert {"bert.encoder.layer.0.attention.self.query.weight", "classifier.weight"} <= changed(before, module.model)
    softmax_test = trainer_for(tmp_path, -1).test(module, datamodule=dm, verbose=False)[0]

    module.start_stage("distill")
    assert is_converted(module.model)
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == fmap_names(module) and trainable
    before = snapshot(module.model)
    trainer = trainer_for(tmp_path, 3)
    trainer.fit(module, datamodule=dm)
    assert changed(before, module.model) == fmap_names(module)  # only the feature maps moved
    assert {"val/loss", "val/teacher_entropy", "val/student_entropy", "val/kl"} <= set(trainer.callback_metrics)

    module.start_stage("finetune_linear")
    before = snapshot(module.model)
    trainer_for(tmp_path, 3).fit(module, datamodule=dm)
    assert "bert.encoder.layer.1.attention.self.key.weight" in changed(before, module.model)

    test = trainer_for(tmp_path, -1).test(module, datamodule=dm, verbose=False)[0]
    assert {"test/accuracy", "test/score", "test/loss", "teacher/test/accuracy", "teacher/test/score"} <= set(test)
    # measured on the converted model in distillation mode, the teacher's score is exactly the softmax model's
    assert test["teacher/test/accuracy"] == softmax_test["test/accuracy"]
    assert test["teacher/test/score"] == pytest.approx(100 * test["teacher/test/accuracy"])
    assert test["test/score"] == pytest.approx(100 * test["test/accuracy"])


def test_distillation_loss_falls(data_dir, wordpiece, tmp_path):
    dm = glue("sst2", data_dir, wordpiece, max_train_samples=64, batch_size=16)
    module = module_for(tiny_bert(len(wordpiece)), task="sst2", finetune_steps=0, distill_steps=25,
                        finetune_linear_steps=0, distill_lr=3e-2)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    module.start_stage("finetune")
    module.start_stage("distill")
    with torch.no_grad():
        start = float(module.distill_loss(batch))
    trainer_for(tmp_path, 25).fit(module, datamodule=dm)
    with torch.no_grad():
        end = float(module.distill_loss(batch))
    assert start > 0.05 and end < 0.7 * start, (start, end)


def test_stsb_regression_softmax_arm(data_dir, wordpiece, tmp_path):
    dm = glue("STS-B", data_dir, wordpiece)
    module = module_for(tiny_bert(len(wordpiece), num_labels=dm.num_labels), task="stsb", attention="softmax",
                        finetune_steps=2, match_linear_budget=False)
    assert [s.max_steps for s in module.stages] == [2, 0, 0]  # nothing to distil, nothing linear to finetune
    out = run_stages(module, dm, tmp_path)
    assert not is_converted(module.model)
    test = out["test"]
    assert {"test/pearson", "test/spearmanr", "test/score", "test/loss"} <= set(test)
    assert test["test/score"] == pytest.approx(50 * (test["test/pearson"] + test["test/spearmanr"]), abs=1e-4)
    assert test["teacher/test/score"] == test["test/score"]  # the softmax arm is its own teacher


def test_softmax_control_trains_on_for_a_linear_arms_steps(data_dir, wordpiece, tmp_path):
    """The equal-budget control: the teacher keeps finetuning (unconverted) for distill + finetune_linear steps."""
    dm = glue("rte", data_dir, wordpiece)
    module = module_for(tiny_bert(len(wordpiece)), attention="softmax", finetune_steps=2, distill_steps=2,
                        finetune_linear_steps=3)
    linear = module_for(tiny_bert(len(wordpiece)), finetune_steps=2, distill_steps=2, finetune_linear_steps=3)
    assert [s.max_steps for s in module.stages] == [2, 0, 5]
    assert sum(s.max_steps for s in module.stages) == sum(s.max_steps for s in linear.stages)
    trained = {}
    for stage in module.stages:
        module.start_stage(stage.name)
        if stage.max_steps:
            before = snapshot(module.model)
            trainer_for(tmp_path, max_steps=stage.max_steps).fit(module, datamodule=dm)
            trained[stage.name] = changed(before, module.model)
    assert set(trained) == {"finetune", "finetune_linear"} and trained["finetune_linear"]
    assert not is_converted(module.model)


def test_lora_in_the_linear_stage_trains_adapters_and_feature_maps_only(data_dir, wordpiece, tmp_path):
    dm = glue("mrpc", data_dir, wordpiece)
    module = module_for(tiny_bert(len(wordpiece)), task="mrpc", finetune_steps=0, distill_steps=2,
                        lora={"r": 4, "alpha": 8, "target_modules": ["query", "value"]})
    for name in ("finetune", "distill"):
        module.start_stage(name)
    trainer_for(tmp_path, 2).fit(module, datamodule=dm)
    module.start_stage("finetune_linear")
    assert hasattr(module.model, "peft_config")
    before = snapshot(module.model)
    trainer_for(tmp_path, 3).fit(module, datamodule=dm)
    moved = changed(before, module.model)
    assert moved and all("lora_" in n or n in fmap_names(module) for n in moved), moved
    assert any("lora_" in n for n in moved) and any(n in fmap_names(module) for n in moved)
    test = trainer_for(tmp_path, -1).test(module, datamodule=dm, verbose=False)[0]
    assert {"test/accuracy", "test/f1", "test/score"} <= set(test)


def test_feature_maps_without_parameters_skip_distillation(wordpiece, caplog):
    with caplog.at_level(logging.WARNING):
        module = module_for(tiny_bert(len(wordpiece)), attention={"name": "elu", "options": {}})
    assert [s.max_steps for s in module.stages] == [3, 0, 3]
    assert "no trainable feature map" in caplog.text
    module.start_stage("finetune")
    module.start_stage("distill")  # 0 steps: converts, trains nothing
    assert is_converted(module.model)


def test_teacher_checkpoint_is_loaded_and_skips_finetuning(wordpiece, tmp_path):
    finetuned = tiny_bert(len(wordpiece), seed=1)
    finetuned.save_pretrained(tmp_path / "teacher")
    module = module_for(tiny_bert(len(wordpiece), seed=2), teacher_checkpoint=str(tmp_path / "teacher"))
    assert [s.max_steps for s in module.stages] == [0, 3, 3]
    for name, p in finetuned.named_parameters():
        assert torch.equal(p, dict(module.model.named_parameters())[name])


def test_bad_settings_fail_at_construction(wordpiece):
    with pytest.raises(ValueError, match="num_labels=2 but GLUE stsb needs 1"):
        module_for(tiny_bert(len(wordpiece)), task="stsb")
    with pytest.raises(ValueError, match=r"'q_proj' matches no linear module .*'query'"):
        module_for(tiny_bert(len(wordpiece)), lora={"target_modules": ["q_proj"]})
    with pytest.raises(ValueError, match="unknown lora options"):
        module_for(tiny_bert(len(wordpiece)), lora={"target_modules": ["query"], "rank": 4})
    with pytest.raises(ValueError, match="unknown GLUE task"):
        module_for(tiny_bert(len(wordpiece)), task="glue")
    with pytest.raises(ValueError):
        module_for(tiny_bert(len(wordpiece)), attention={"name": "hedgehogg", "options": {}})
