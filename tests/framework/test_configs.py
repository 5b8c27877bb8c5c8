"""Every experiment file composes, passes validation and builds (DataModule, model, regime, callbacks,
loggers, Trainer) without training. Experiment files are discovered, so files added later are covered too."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from framework_helpers import CONF_DIR, compose_config
from hedgehog.train.pipeline import (
    build_callbacks, build_datamodule, build_loggers, build_model, build_module, build_trainer, training_stages,
)
from hedgehog.train.validation import attention_choices, validate_config

EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
GROUPS = ["attention", "model", "data", "regime", "trainer", "logger", "callbacks", "hparams_search"]


def hub_only_names(cfg) -> list[str]:
    """Models, tokenizers or data sets in ``cfg`` that only the Hugging Face hub has (not reachable here)."""
    try:
        from hedgehog.models.pretrained import ALIASES
    except ImportError:
        ALIASES = {}
    names = []
    for node_key in ("model", "data", "regime"):
        node = OmegaConf.to_container(cfg[node_key], resolve=True)
        for key in ("name_or_path", "tokenizer", "teacher_checkpoint"):
            value = node.get(key)
            if isinstance(value, str) and value != "word" and value.lower() not in ALIASES and not Path(value).exists():
                names.append(f"{node_key}.{key}={value}")
        if node_key == "data" and "data_dir" in node and node["data_dir"] is None:
            names.append("data.data_dir=null (hub data set)")
    return names


def test_experiment_folder_has_a_file_per_attention_type():
    names = attention_choices()
    for family in ("mqar", "wikitext_gpt"):
        missing = [name for name in names if f"{family}_{name}" not in EXPERIMENTS]
        assert not missing, f"conf/experiment lacks {family}_<attention> for {missing}"


_built_data: dict[str, object] = {}
_built_models: dict[str, torch.nn.Module] = {}


def _datamodule(cfg):
    key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
    if key not in _built_data:
        _built_data[key] = build_datamodule(cfg)
    return _built_data[key]


def _model(cfg, datamodule):
    """Pretrained models take seconds to load: each distinct model config is built once per session and
    shared (building a regime must not change it; checked by the caller)."""
    sizes = {name: getattr(datamodule, name, None) for name in ("vocab_size", "num_labels")}
    key = json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True) + repr(sizes)
    if key not in _built_models:
        _built_models[key] = build_model(cfg, datamodule)
    return key, _built_models[key]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_validates_and_builds(experiment, tmp_path):
    overrides = [f"experiment={experiment}"]
    if not torch.cuda.is_available():
        overrides += ["trainer.accelerator=cpu", "trainer.precision=32-true"]
    cfg = compose_config(overrides, tmp_path)
    validate_config(cfg)
    assert cfg.attention.name in attention_choices()
    named = [name for name in attention_choices() if experiment.endswith(f"_{name}")]
    if named:  # the longest match: wikitext_gpt_hedgehog_window names hedgehog_window, not window
        assert cfg.attention.name == max(named, key=len), "the file name says which attention it uses"
    hub = hub_only_names(cfg)
    if hub:
        pytest.skip(f"composed and validated; not built: needs the Hugging Face hub (offline here): {', '.join(hub)}")

    datamodule = _datamodule(cfg)
    key, model = _model(cfg, datamodule)
    parameters_before = {name: p.shape for name, p in model.named_parameters()}
    module = build_module(cfg, model, datamodule)
    if {name: p.shape for name, p in model.named_parameters()} != parameters_before:
        del _built_models[key]  # the regime changed the model: do not share it
    stages, _ = training_stages(module)
    assert stages and all(stage.name for stage in stages)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, tmp_path / "checkpoints" / stages[0].name, bool(loggers))
    trainer = build_trainer(cfg, stages[0] if len(stages) > 1 else None, callbacks, loggers)
    checkpoints = [c for c in trainer.callbacks if type(c).__name__ == "ModelCheckpoint"]
    assert checkpoints and all(Path(c.dirpath) == tmp_path / "checkpoints" / stages[0].name for c in checkpoints)


def test_command_line_attention_wins_over_the_experiments(tmp_path):
    cfg = compose_config(["experiment=mqar_softmax", "attention=elu"], tmp_path)
    assert cfg.attention.name == "elu"
    assert cfg.model.attention.name == "elu"  # the model reads the attention group through ${attention}


@pytest.mark.parametrize("group", GROUPS)
def test_unknown_group_option_lists_the_choices(group, tmp_path):
    with pytest.raises(MissingConfigException) as info:
        compose_config([f"{group}=no_such_option"], tmp_path)
    message = str(info.value)
    assert f"Could not find '{group}/no_such_option'" in message
    available = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert available and all(name in message for name in available), message


def test_unknown_experiment_lists_the_choices(tmp_path):
    with pytest.raises(MissingConfigException) as info:
        compose_config(["experiment=mqar_hedgehogg"], tmp_path)
    assert "mqar_hedgehog" in str(info.value) and "wikitext_gpt_softmax" in str(info.value)


def test_trainer_configs_build_on_cpu(tmp_path):
    """cpu, debug and ddp (on CPU: gloo) build a Trainer here; gpu and fsdp compose with the expected settings."""
    for name, extra in (("cpu", []), ("debug", []), ("ddp", ["trainer.accelerator=cpu"])):
        cfg = compose_config([f"trainer={name}", *extra], tmp_path)
        validate_config(cfg)
        trainer = build_trainer(cfg, None, [], [])
        assert trainer.max_steps == cfg.trainer.max_steps
        if name == "ddp":
            assert type(trainer.strategy).__name__ == "DDPStrategy"
            assert trainer.strategy._process_group_backend == "gloo" or trainer.strategy.process_group_backend is None
            assert str(trainer.precision) == "32-true"
    gpu = compose_config(["trainer=gpu"], tmp_path)
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.precision == "bf16-mixed"
    fsdp = compose_config(["trainer=fsdp"], tmp_path)
    validate_config(fsdp)
    assert fsdp.trainer.strategy._target_.endswith("FSDPStrategy")
    assert fsdp.trainer.strategy.state_dict_type == "full"
    strategy = instantiate(fsdp.trainer.strategy)  # the strategy itself builds anywhere; the Trainer needs GPUs
    assert type(strategy).__name__ == "FSDPStrategy"
