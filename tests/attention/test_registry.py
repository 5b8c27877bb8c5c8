import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import hedgehog.attention as attention
from hedgehog.attention import ATTENTION_NAMES, FEATURE_MAP_NAMES, FeatureMap, build_feature_map, register_feature_map
from hedgehog.attention.registry import _REGISTRY, valid_options

CONF = Path(__file__).resolve().parents[2] / "conf" / "attention"
CONTRACT = [
    "ATTENTION_NAMES", "FEATURE_MAP_NAMES", "FeatureMap", "register_feature_map", "build_feature_map", "attend",
    "linear_attention", "attention_weights", "softmax_weights", "softmax_attention", "RecurrentState",
    "recurrent_step", "distillation_loss", "attention_entropy", "monotonicity", "fidelity_kl",
    "FeaturePair", "HybridState", "hybrid_attention", "hybrid_weights", "hybrid_prefill", "hybrid_step",
    "calibrated_log_balance", "WindowBalance",
]


def test_public_api_is_the_contract():
    assert sorted(attention.__all__) == sorted(CONTRACT)
    for name in CONTRACT:
        assert getattr(attention, name) is not None
    assert ATTENTION_NAMES == ("softmax", "hedgehog", "taylor", "elu", "performer", "cosformer", "t2r", "hedgehog_window")
    assert FEATURE_MAP_NAMES == ATTENTION_NAMES[1:]


@pytest.mark.parametrize("name", FEATURE_MAP_NAMES)
def test_every_map_builds_and_maps_shapes(name):
    fm = build_feature_map(name, num_heads=3, head_dim=4)
    assert isinstance(fm, FeatureMap)
    out = fm(torch.randn(2, 3, 5, 4))
    assert out.shape == (2, 3, 5, fm.feature_dim)
    assert torch.isfinite(out).all()


def test_softmax_has_no_feature_map():
    assert build_feature_map("softmax", 4, 8) is None
    with pytest.raises(ValueError, match=r"unknown option 'feature_dim'.*takes no options"):
        build_feature_map("softmax", 4, 8, feature_dim=3)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_feature_map("hedgehgo", 4, 8)
    message = str(err.value)
    assert "'hedgehgo'" in message
    for name in ATTENTION_NAMES:
        assert name in message


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError) as err:
        build_feature_map("hedgehog", 4, 8, feature_dims=16)
    message = str(err.value)
    assert "'feature_dims'" in message
    for option in ("feature_dim", "bias", "init", "activation", "stable"):
        assert option in message


def test_bad_option_values_are_named():
    with pytest.raises(ValueError, match="init 'orthogonal'.*identity, random"):
        build_feature_map("hedgehog", 4, 8, init="orthogonal")
    with pytest.raises(ValueError, match="activation 'relu'"):
        build_feature_map("hedgehog", 4, 8, activation="relu")
    with pytest.raises(ValueError, match="num_features"):
        build_feature_map("performer", 4, 8, num_features=0)


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_yaml_config_matches_constructor(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert (CONF / f"{name}.yaml").read_text().startswith("# @package attention")
    assert cfg.name == name
    assert set(cfg.options) == set(valid_options(name))
    # every default in the yaml equals the constructor default, and the map builds from it
    for key, value in cfg.options.items():
        assert value == valid_options(name)[key], (name, key)
    fm = build_feature_map(cfg.name, 2, 4, **cfg.options)
    assert (fm is None) == (name == "softmax")


def test_register_a_new_map():
    @register_feature_map("square_test")
    class Square(FeatureMap):
        def __init__(self, num_heads, head_dim, power: int = 2):
            super().__init__(num_heads, head_dim)
            self.power = power

        def forward(self, x, *, is_query=False, positions=None):
            return self.check_input(x) ** self.power

    try:
        fm = build_feature_map("square_test", 2, 3, power=4)
        x = torch.randn(1, 2, 5, 3)
        torch.testing.assert_close(fm(x), x**4)
        with pytest.raises(ValueError, match="unknown option 'pow'.*power"):
            build_feature_map("square_test", 2, 3, pow=4)
        with pytest.raises(TypeError, match="not a FeatureMap subclass"):
            register_feature_map("not_a_map")(int)
        with pytest.raises(ValueError, match="already registered"):
            register_feature_map("square_test")(type("Other", (FeatureMap,), {}))
    finally:
        _REGISTRY.pop("square_test", None)


def test_map_rejects_wrong_input():
    fm = build_feature_map("hedgehog", num_heads=4, head_dim=8)
    with pytest.raises(ValueError, match=r"D = head_dim = 8"):
        fm(torch.randn(1, 4, 3, 7))
    with pytest.raises(ValueError, match=r"H = num_heads = 4"):
        fm(torch.randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match=r"\[B, H, N, D\]"):
        fm(torch.randn(4, 3, 8))
    with pytest.raises(TypeError, match="float16/bfloat16/float32/float64"):
        fm(torch.ones(1, 4, 3, 8, dtype=torch.long))
    # maps without per-head parameters accept any head count (e.g. k/v heads under GQA)
    assert build_feature_map("elu", 4, 8)(torch.randn(1, 2, 3, 8)).shape == (1, 2, 3, 8)


def test_signatures_share_the_forward_contract():
    for name in FEATURE_MAP_NAMES:
        params = inspect.signature(_REGISTRY[name].forward).parameters
        assert params["is_query"].kind == inspect.Parameter.KEYWORD_ONLY
        assert params["positions"].kind == inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("name", FEATURE_MAP_NAMES)
def test_trainable_class_fact_matches_the_built_map(name):
    """``FeatureMap.trainable`` is read without building a map; it must say what a built map has."""
    from hedgehog.attention.registry import is_trainable

    fmap = build_feature_map(name, 2, 8)
    assert is_trainable(name) == any(p.requires_grad for p in fmap.parameters())
    assert not is_trainable("softmax")


def test_parse_attention_is_the_one_reading_of_a_spec():
    from hedgehog.attention.registry import parse_attention

    spec = OmegaConf.create({"name": "hedgehog", "options": {"feature_dim": 4, "bias": False}})
    assert parse_attention(spec) == ("hedgehog", {"feature_dim": 4, "bias": False})
    assert parse_attention("t2r") == ("t2r", {}) and parse_attention(None) == ("softmax", {})
    with pytest.raises(ValueError, match="unknown attention type 'hedgehogg'; valid: softmax, hedgehog"):
        parse_attention("hedgehogg")
    with pytest.raises(ValueError, match="unknown option 'featuredim'"):
        parse_attention({"name": "hedgehog", "options": {"featuredim": 4}})
    with pytest.raises(ValueError, match=r"unknown keys \['opts'\]"):
        parse_attention({"name": "hedgehog", "opts": {}})
