"""Name -> feature-map class, the one place where attention types are chosen by name.

``parse_attention(spec)`` is the one reading of an attention choice (``None``, a name, or the ``attention`` config
group ``{name, options}``): every layer, converter, regime and config check calls it. The facts about each type
are class attributes of its feature map, read without building one (``FeatureMap.trainable``).

Adding an attention type: write ``feature_maps/<name>.py`` with a ``FeatureMap`` subclass decorated by
``@register_feature_map("<name>")``, import it in ``feature_maps/__init__.py``, add ``conf/attention/<name>.yaml``.
``"softmax"`` is an attention type without a feature map (exact attention through SDPA).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

SOFTMAX = "softmax"
_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_feature_map(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_feature_map("hedgehog")`` on a ``FeatureMap`` subclass."""
    from hedgehog.attention.feature_maps.base import FeatureMap

    if not isinstance(name, str) or not name or name == SOFTMAX:
        raise ValueError(f"register_feature_map: name must be a non-empty string other than 'softmax', got {name!r}")

    def decorate(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, FeatureMap)):
            raise TypeError(f"register_feature_map({name!r}): {cls!r} is not a FeatureMap subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"register_feature_map: {name!r} is already registered to {existing.__qualname__}")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorate


def registered_names() -> tuple[str, ...]:
    """Every attention name currently registered (softmax first), including ones added after import."""
    return (SOFTMAX, *_REGISTRY)


def feature_map_class(name: str) -> type:
    """The class registered under ``name``; ValueError listing the valid names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        valid = ", ".join(registered_names())
        raise ValueError(f"unknown attention type {name!r}; valid: {valid}")
    return _REGISTRY[name]


def valid_options(name: str) -> dict[str, object]:
    """Option name -> default value accepted by ``build_feature_map(name, ...)`` (empty for softmax)."""
    if name == SOFTMAX:
        return {}
    params = list(inspect.signature(feature_map_class(name).__init__).parameters.values())[3:]
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    accepted = valid_options(name)
    params = [] if name == SOFTMAX else list(inspect.signature(feature_map_class(name).__init__).parameters.values())
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
    unknown = [key for key in options if key not in accepted]
    if unknown and not takes_any:
        valid = ", ".join(accepted) if accepted else "none (it takes no options)"
        raise ValueError(f"attention {name!r}: unknown option {unknown[0]!r}; valid options: {valid}")


def parse_attention(spec: Mapping[str, Any] | str | None) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of an attention choice: None (softmax), a registered name, or a mapping ``{name,
    options}`` (the ``attention`` config group; an OmegaConf node works). ValueError naming the problem and the
    valid names or options otherwise: an unknown name, an unknown option, keys other than name and options."""
    if spec is None:
        return SOFTMAX, {}
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping) and "name" in spec:
        unknown = sorted(str(k) for k in spec if k not in ("name", "options"))
        if unknown:
            raise ValueError(f"attention has unknown keys {unknown}; valid keys: name, options")
        name, options = spec["name"], spec.get("options") or {}
        if not isinstance(options, Mapping):
            raise ValueError(f"attention options must be a mapping of option -> value, got {options!r}")
        options = {str(k): _plain(v) for k, v in options.items()}
    else:
        raise ValueError(
            f"attention must be a mapping {{name: ..., options: {{...}}}} (conf/attention/<name>.yaml), a name, or "
            f"None for softmax; got {spec!r}"
        )
    if not isinstance(name, str) or name not in registered_names():
        raise ValueError(f"unknown attention type {name!r}; valid: {', '.join(registered_names())}")
    _check_options(name, options)
    return name, options


def _plain(value: Any) -> Any:
    """An OmegaConf list/dict as a plain Python one (options are saved in JSON and compared as values)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def is_trainable(name: str) -> bool:
    """Whether attention type ``name`` has parameters to learn in distillation (its map's ``trainable``)."""
    return name != SOFTMAX and bool(feature_map_class(name).trainable)


def build_feature_map(name: str, num_heads: int, head_dim: int, **options):
    """Build the feature map registered as ``name`` for ``num_heads`` heads of width ``head_dim``.

    Returns a ``FeatureMap`` (``[B, H, N, D] -> [B, H, N, F]``) or None for ``"softmax"``. Build separate
    instances for queries and keys (with grouped-query attention, the key map with the key/value head count).
    Raises ValueError naming an unknown name or option and listing the valid ones.
    """
    name, options = parse_attention({"name": name, "options": options})
    if name == SOFTMAX:
        return None
    return feature_map_class(name)(num_heads, head_dim, **options)


# importing the maps registers them; FEATURE_MAP_NAMES keeps their import order
import hedgehog.attention.feature_maps  # noqa: E402,F401

FEATURE_MAP_NAMES: tuple[str, ...] = tuple(_REGISTRY)
ATTENTION_NAMES: tuple[str, ...] = (SOFTMAX, *FEATURE_MAP_NAMES)
