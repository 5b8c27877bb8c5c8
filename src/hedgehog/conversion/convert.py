"""``convert(model, attention="hedgehog", **options)``: swap the attention of a Hugging Face model.

The model keeps its own q/k/v/o projections, rotary embeddings (applied before the feature map), grouped-query
heads, scaling, causal or bidirectional masking and padding: only the function that turns q, k, v into the
attention output changes. Each attention module gets a ``hedgehog`` child (``ConvertedAttention``, holding the
layer's q and k feature maps, saved with the state dict), the config gets
``config._attn_implementation = "hedgehog_linear"`` and a ``config.hedgehog`` section
``{"attention": name, "options": {...}}``, and causal LMs generate with ``LinearAttentionCache``.
``attention="softmax"`` (the control arm) records the section and leaves the model exactly as it was.
"""

from __future__ import annotations

import inspect
import json
from functools import lru_cache

import torch
from torch import nn

from hedgehog.attention.registry import parse_attention, registered_names
from hedgehog.conversion.cache import LinearAttentionCache
from hedgehog.conversion.interface import ATTENTION_IMPLEMENTATION, MODULE_ATTRIBUTE, register
from hedgehog.conversion.layer import ConvertedAttention

CONFIG_SECTION = "hedgehog"
SUPPORTED_MODELS = (
    "BERT-style encoders (e.g. BertModel, BertForSequenceClassification), GPT-2 (GPT2Model, GPT2LMHeadModel), "
    "Llama-style decoders (LlamaModel, LlamaForCausalLM), and other transformers models whose self-attention "
    "modules dispatch through transformers' AttentionInterface"
)
# The name under which transformers hands the cache to attention modules and ``generate``: ``past_key_values``
# (older releases; also ``past_key_value`` / ``layer_past``) or ``cache`` (5.24 and later).
_CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")


@lru_cache(maxsize=None)
def _generation_cache_key(cls: type) -> str:
    """``"cache"`` if ``cls.forward`` takes its cache under that name (transformers >= 5.24), else
    ``"past_key_values"``."""
    try:
        parameters = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


@lru_cache(maxsize=None)
def _dispatches_through_interface(cls: type) -> bool:
    """True if ``cls.forward`` looks its attention function up in transformers' ``ALL_ATTENTION_FUNCTIONS``."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every attention module of ``model`` that uses transformers' attention interface."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if module is not model and _dispatches_through_interface(type(module))
    ]


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def conversion_info(model: nn.Module) -> dict | None:
    """``{"attention": name, "options": {...}}`` of a converted model, None for an unconverted one."""
    config = getattr(_unwrap(model), "config", None)
    info = getattr(config, CONFIG_SECTION, None)
    return dict(info) if isinstance(info, dict) else None


def is_converted(model: nn.Module) -> bool:
    """Whether ``convert`` (or ``load_converted``) has been applied to ``model``."""
    return conversion_info(model) is not None


def converted_layers(model: nn.Module) -> list[ConvertedAttention]:
    """The ``ConvertedAttention`` of every converted layer, in model order (empty for softmax)."""
    return [m for m in _unwrap(model).modules() if isinstance(m, ConvertedAttention)]


def _first_int(*values) -> int | None:
    return next((int(v) for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0), None)


def _geometry(module: nn.Module) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) of an attention module, read from it or its config."""
    config = getattr(module, "config", None)
    heads = _first_int(
        getattr(module, "num_heads", None), getattr(module, "num_attention_heads", None),
        getattr(config, "num_attention_heads", None),
    )
    if heads is None:
        raise TypeError(f"{type(module).__name__}: cannot read its number of attention heads")
    groups = _first_int(getattr(module, "num_key_value_groups", None))
    kv_heads = _first_int(
        getattr(module, "num_key_value_heads", None), heads // groups if groups else None,
        getattr(config, "num_key_value_heads", None), heads,
    )
    hidden = getattr(config, "hidden_size", None)
    head_dim = _first_int(
        getattr(module, "head_dim", None), getattr(module, "attention_head_size", None),
        getattr(config, "head_dim", None), hidden // heads if isinstance(hidden, int) else None,
    )
    if head_dim is None:
        raise TypeError(f"{type(module).__name__}: cannot read its head dimension")
    return heads, kv_heads, head_dim


@lru_cache(maxsize=None)
def _positional_names(cls: type) -> tuple[str, ...]:
    return tuple(inspect.signature(cls.forward).parameters)[1:]


def _capture_cache(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: hand the cache passed to the attention module to its ``ConvertedAttention``."""
    cache = next((kwargs[n] for n in _CACHE_ARGUMENTS if kwargs.get(n) is not None), None)
    if cache is None and args:
        names = _positional_names(type(module))
        cache = next((value for name, value in zip(names, args) if name in _CACHE_ARGUMENTS), None)
    cache = getattr(cache, "self_attention_cache", cache)  # EncoderDecoderCache
    getattr(module, MODULE_ATTRIBUTE).cache = cache


def _release_cache(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
    getattr(module, MODULE_ATTRIBUTE).cache = None


class _PrepareLinearCache:
    """Stands in for ``model._prepare_cache_for_generation`` on a converted causal LM: ``generate`` gets a
    ``LinearAttentionCache`` unless the caller passed a cache (or ``use_cache=False``). (An object
    rather than a bound method so that the choice survives ``copy.deepcopy`` and pickling.)"""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, generation_config, model_kwargs, *args, **kwargs):
        user_cache = any(model_kwargs.get(name) is not None for name in ("cache", "past_key_values"))
        if not user_cache and generation_config.use_cache is not False:
            implementation = getattr(generation_config, "cache_implementation", None)
            if implementation not in (None, "dynamic"):
                raise ValueError(
                    f"generate: cache_implementation={implementation!r} stores keys and values; a converted "
                    "linear-attention model generates with its recurrent LinearAttentionCache (leave "
                    "cache_implementation unset, or pass use_cache=False to recompute)"
                )
            model_kwargs[cache_argument(self.model)] = LinearAttentionCache(self.model.config)
            return None
        original = type(self.model)._prepare_cache_for_generation
        return original(self.model, generation_config, model_kwargs, *args, **kwargs)


def cache_argument(model: nn.Module) -> str:
    """The keyword under which ``model`` (a transformers model, or a peft wrapper of one) takes its cache:
    ``"cache"`` on transformers >= 5.24, ``"past_key_values"`` before. ``model(**{cache_argument(model): cache})``
    works on both."""
    return _generation_cache_key(type(_unwrap(model)))


def returned_cache(output):
    """The cache a forward or ``generate`` output carries (``output.cache``, or ``output.past_key_values`` on
    transformers < 5.24)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _check_model(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from transformers import PreTrainedModel

    name = type(model).__name__
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        raise TypeError(f"convert: {name} is a peft model; convert the base model first, then call apply_lora")
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"convert: {name} is not a Hugging Face transformers model (PreTrainedModel); supported: {SUPPORTED_MODELS}"
        )
    modules = attention_modules(model)
    if not modules:
        raise TypeError(
            f"convert: {name} has no attention module that dispatches through transformers' AttentionInterface; "
            f"supported: {SUPPORTED_MODELS}"
        )
    for module_name, module in modules:
        if getattr(module, "is_cross_attention", False) or "CrossAttention" in type(module).__name__:
            raise TypeError(
                f"convert: {name} has cross-attention ({module_name}: {type(module).__name__}); only self-attention "
                f"models are supported: {SUPPORTED_MODELS}"
            )
        if not hasattr(module, "config"):
            raise TypeError(f"convert: {name}.{module_name} ({type(module).__name__}) has no config to switch")
    return modules


def convert(model: nn.Module, attention: str = "hedgehog", **options) -> nn.Module:
    """Swap every self-attention of ``model`` for ``attention``, in place; returns ``model``.

    Args:
        model: a transformers ``PreTrainedModel`` whose attention modules use the attention interface
            (BERT, GPT-2, Llama families and most current architectures).
        attention: a registered attention name (``hedgehog.attention.ATTENTION_NAMES``); ``"softmax"`` leaves
            the computation untouched (control arm) and only records the conversion.
        **options: feature-map options, ``build_feature_map(attention, H, D, **options)`` (per layer one query
            map with Hq heads and one key map with Hk heads).

    Raises TypeError for an unsupported model (naming its class and the supported ones), ValueError for an
    unknown attention name or option, or a model that is already converted.
    """
    modules = _check_model(model)
    if not isinstance(attention, str):
        raise ValueError(f"convert: attention must be a registered name; valid: {', '.join(registered_names())}")
    try:
        attention, options = parse_attention({"name": attention, "options": options})
    except ValueError as error:
        raise ValueError(f"convert: {error}") from None
    previous = conversion_info(model)
    if previous is not None or converted_layers(model):
        raise ValueError(
            f"convert: {type(model).__name__} is already converted (to {previous['attention'] if previous else '?'}); "
            "convert the original model, or load it with load_converted"
        )
    try:
        json.dumps(options)
    except TypeError as error:
        raise ValueError(f"convert: options must be JSON values (they are saved in config.json): {error}") from None
    if attention != "softmax":
        register()
        for index, (_, module) in enumerate(modules):
            heads, kv_heads, head_dim = _geometry(module)
            layer_idx = getattr(module, "layer_idx", None)
            parameter = next(module.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            dtype = torch.float64 if parameter is not None and parameter.dtype == torch.float64 else torch.float32
            converted = ConvertedAttention(
                attention, heads, kv_heads, head_dim, index if layer_idx is None else int(layer_idx), **options
            ).to(device=device, dtype=dtype)
            converted.train(module.training)
            module.add_module(MODULE_ATTRIBUTE, converted)
            module.register_forward_pre_hook(_capture_cache, with_kwargs=True)
            module.register_forward_hook(_release_cache, with_kwargs=True, always_call=True)
            module.config._attn_implementation = ATTENTION_IMPLEMENTATION
        model.config._attn_implementation = ATTENTION_IMPLEMENTATION
        if hasattr(model, "generate") and any(getattr(m, "is_causal", False) for _, m in modules):
            model._prepare_cache_for_generation = _PrepareLinearCache(model)
    setattr(model.config, CONFIG_SECTION, {"attention": attention, "options": dict(options)})
    return model
