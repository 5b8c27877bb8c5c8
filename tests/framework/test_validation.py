"""Bad configs stop before any work with a short message that names the key and the fix."""

from __future__ import annotations

import pytest

from framework_helpers import compose_config
from hedgehog.utils.errors import ConfigError, DataNotFoundError
from hedgehog.train.validation import attention_choices, validate_config


def error_for(overrides, tmp_path, kind=ConfigError) -> str:
    cfg = compose_config(overrides, tmp_path)
    with pytest.raises(kind) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "\n" not in message.strip() and len(message) < 600, f"not one short paragraph: {message!r}"
    return message


def test_the_default_config_is_valid(tmp_path):
    validate_config(compose_config([], tmp_path))


def test_unknown_attention_name_lists_the_registered_ones(tmp_path):
    message = error_for(["attention.name=hedgehogg"], tmp_path)
    assert "attention.name" in message and "'hedgehogg'" in message and "did you mean 'hedgehog'" in message
    for name in attention_choices():
        assert name in message
    assert set(attention_choices()) >= {"softmax", "hedgehog", "taylor", "elu", "performer", "cosformer", "t2r"}


def test_unknown_attention_backend_lists_the_valid_ones(tmp_path):
    message = error_for(["attention_backend=cuda"], tmp_path)
    assert "attention_backend" in message and "'cuda'" in message
    assert all(name in message for name in ("auto", "torch", "triton"))


def test_attention_backend_from_the_config_is_applied(tmp_path):
    from hedgehog.attention import backend

    cfg = compose_config(["attention_backend=torch"], tmp_path)
    validate_config(cfg)
    assert cfg.attention_backend == "torch"
    previous = backend.get_backend()
    try:
        from hedgehog.train.pipeline import set_backend

        set_backend(cfg.attention_backend)  # what train() does first
        assert backend.get_backend() == "torch"
    finally:
        backend.set_backend(previous)


def test_bad_attention_option_is_named(tmp_path):
    message = error_for(["+attention.options.feature_dimm=8"], tmp_path)
    assert "attention.options" in message and "feature_dimm" in message


def test_key_the_target_does_not_take(tmp_path):
    message = error_for(["+model.d_modle=32"], tmp_path)
    assert "model.d_modle" in message and "GPT" in message and "did you mean 'd_model'" in message


def test_nested_target_keys_are_checked(tmp_path):
    message = error_for(["+callbacks.model_checkpoint.every_n_steps=5"], tmp_path)
    assert "callbacks.model_checkpoint.every_n_steps" in message and "ModelCheckpoint" in message


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("trainer.max_steps=abc", "trainer.max_steps", "int"),
        ("data.batch_size=1.5", "data.batch_size", "int"),
        ("regime.lr=fast", "regime.lr", "float"),
        ("trainer.precision=bf17", "trainer.precision", "bf16-mixed"),
        ("model.tie_embeddings=maybe", "model.tie_embeddings", "bool"),
        ("seed=one", "seed", "int"),
    ],
)
def test_wrong_value_type_names_key_and_expected_type(override, key, expected, tmp_path):
    message = error_for([override], tmp_path)
    assert message.startswith(key) and expected in message, message


def test_unknown_top_level_key(tmp_path):
    message = error_for(["+modle.d_model=3"], tmp_path)
    assert "'modle'" in message and "model" in message


def test_unset_mandatory_value(tmp_path):
    message = error_for(["experiment=mqar", "data.num_kv_pairs=???"], tmp_path)
    assert "data.num_kv_pairs" in message and "must be set" in message


def test_broken_interpolation_names_the_key(tmp_path):
    message = error_for(["model.seq_len=${data.seq_lenn}"], tmp_path)
    assert message.startswith("model.seq_len") and "data.seq_lenn" in message


def test_unimportable_target(tmp_path):
    message = error_for(["data._target_=hedgehog.data.nope.NopeDataModule"], tmp_path)
    assert "data._target_" in message and "hedgehog.data.nope.NopeDataModule" in message


def test_missing_data_folder_names_the_path_and_how_to_provide_it(tmp_path):
    missing = tmp_path / "no_data_here"
    message = error_for(["experiment=wikitext_gpt_softmax", f"paths.data_dir={missing}"], tmp_path, DataNotFoundError)
    assert f"{missing}/wikitext" in message
    assert "paths.data_dir=" in message and "HEDGEHOG_DATA_DIR" in message
