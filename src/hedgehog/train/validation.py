"""Check a composed config before any work: every problem found here costs seconds instead of a failed run.

``validate_config(cfg)`` raises ``ConfigError`` (or ``DataNotFoundError``) with a short message naming the key
and the fix for the first problem it finds:

- an interpolation that does not resolve, or a mandatory value (``???``) left unset;
- an unknown top-level key (a typo such as ``+modle.d_model=64``);
- an unknown attention name (listing the registered ones) or an option that attention type does not take;
- a key that the ``_target_`` callable of its node does not accept (checked against its signature, for every
  node with a ``_target_``, nested ones included), a required argument that is missing;
- a value whose type does not match the annotation of the argument it goes to (``trainer.max_steps=abc``);
- a negative count (``trainer.max_steps=-5``, ``data.batch_size=-1``; -1 stays allowed where Lightning reads it
  as "all" or "no limit");
- a data folder (``data.data_dir`` and other ``*_dir``/``*_path``/``*_file`` keys under ``data``) that does not
  exist.

Nothing is instantiated and nothing heavy is imported: signatures are read from the targets' source code
(``hedgehog.train.static_signature``), so these checks run before torch starts; a target whose source cannot be
read that way is imported and inspected instead.
"""

from __future__ import annotations

import ast
import collections.abc
import difflib
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from hedgehog.utils.errors import ConfigError, DataNotFoundError
from hedgehog.train.static_signature import absolute_module, parse_module, static_constant, static_signature

MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision

# Top-level keys run.py understands. A key outside this set is a typo or a leftover: it would be ignored.
KNOWN_TOP_LEVEL_KEYS = {
    "task_name": "name of the task: the first folder under paths.log_dir",
    "seed": "random seed",
    "paths": "where data and logs are",
    "attention": "attention type and options (conf/attention/)",
    "attention_backend": "auto (Triton kernels on CUDA), torch (PyTorch reference only) or triton",
    "cpu_threads": "CPU threads torch may use (null: torch's default)",
    "matmul_precision": "float32 matmul precision: highest, high (TF32) or medium",
    "model": "the network (conf/model/)",
    "data": "the DataModule (conf/data/)",
    "regime": "the LightningModule (conf/regime/)",
    "trainer": "the Lightning Trainer (conf/trainer/)",
    "callbacks": "Lightning callbacks (conf/callbacks/)",
    "logger": "Lightning loggers (conf/logger/)",
    "hydra": "Hydra's own settings",
}
# Nodes whose _target_ receives more arguments from run.py than the config holds: the model gets DataModule
# attributes (vocab_size, num_labels...), the regime gets the model. Their required arguments are checked
# when they are built instead.
FILLED_AT_BUILD_TIME = {"model", "regime"}
HYDRA_KEYS = {"_target_", "_args_", "_partial_", "_convert_", "_recursive_"}
PATH_KEY_SUFFIXES = ("_dir", "_path", "_file")
# Arguments that count something (steps, samples, tokens, layers...): a negative value is a mistake, except -1
# for the Lightning arguments that read it as "all" or "no limit".
COUNT_ARGUMENT = re.compile(
    r"^(num|n|max|min)_|_(steps|size|len|length|samples|blocks|pairs|dim|epochs|batches|interval|workers|tokens|"
    r"heads|layers|labels|k)$|^(devices|d_model|vocab_size|refresh_rate|accumulate_grad_batches|"
    r"log_every_n_steps|every_n_train_steps|every_n_epochs|patience)$"
)
MINUS_ONE_MEANS_ALL = {"max_steps", "max_epochs", "num_sanity_val_steps", "devices", "save_top_k"}
BACKENDS_CONSTANT = "hedgehog.attention.backend.BACKENDS"
FEATURE_MAPS_PACKAGE = "hedgehog.attention.feature_maps"
REGISTER_DECORATOR = "register_feature_map"
SOFTMAX = "softmax"


def validate_config(cfg: DictConfig, config_dir: str | Path | None = None) -> None:
    """Raise ``ConfigError`` naming the first problem in ``cfg`` (see the module docstring); return None if fine.

    ``config_dir`` (default: ``<repo>/conf`` next to the package) is only used to list attention types when
    ``hedgehog.attention`` cannot be imported.
    """
    _check_resolves(cfg)
    _check_top_level(cfg)
    _check_scalars(cfg)
    _check_attention(cfg, config_dir)
    for key, node in _target_nodes(cfg):
        _check_target_node(key, node, required=key not in FILLED_AT_BUILD_TIME)
        _check_counts(key, node)
    _check_data_paths(cfg)


# --- resolution -----------------------------------------------------------------------------------------


def _check_resolves(cfg: DictConfig) -> None:
    for key in _leaf_keys(cfg):
        try:
            OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise ConfigError(f"{key} must be set (it is '???'); add {key}=<value> to the command") from None
        except InterpolationResolutionError as error:
            raise ConfigError(f"{key}: cannot resolve {_raw(cfg, key)!r}: {_first_line(error)}") from None
        except OmegaConfBaseException as error:
            raise ConfigError(f"{key}: {_first_line(error)}") from None


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        items = [(str(k), k) for k in node.keys()]
    elif isinstance(node, ListConfig):
        items = [(str(i), i) for i in range(len(node))]
    else:
        return [prefix] if prefix else []
    for name, key in items:
        full = f"{prefix}.{name}" if prefix else name
        if prefix == "" and name == "hydra":
            continue  # Hydra resolves its own node
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            keys.append(full)
            continue
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            if child._is_none():
                keys.append(full)
            else:
                keys.extend(_leaf_keys(child, full))
        else:
            keys.append(full)
    return keys


def _raw(cfg: DictConfig, key: str) -> str:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    try:
        node = parent._get_node(int(leaf) if isinstance(parent, ListConfig) else leaf)
        return str(node._value())
    except Exception:  # only used to decorate a message
        return "?"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# --- top level ------------------------------------------------------------------------------------------


def _check_top_level(cfg: DictConfig) -> None:
    for key in cfg.keys():
        if key not in KNOWN_TOP_LEVEL_KEYS:
            hint = _did_you_mean(str(key), KNOWN_TOP_LEVEL_KEYS)
            known = ", ".join(KNOWN_TOP_LEVEL_KEYS)
            raise ConfigError(
                f"unknown top-level key {key!r}{hint}; run.py reads only: {known}. Remove it or fix its spelling."
            )


def _check_scalars(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        raise ConfigError(f"seed: expected an int, got {seed!r} ({type(seed).__name__}); e.g. seed=0")
    threads = cfg.get("cpu_threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"cpu_threads: expected a positive int or null, got {threads!r}; e.g. cpu_threads=1")
    precision = cfg.get("matmul_precision", "highest")
    if precision not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"matmul_precision: expected one of {', '.join(MATMUL_PRECISIONS)}, got {precision!r}; e.g. "
            "matmul_precision=high (TF32 for float32 matrix products)"
        )
    if not isinstance(cfg.get("task_name"), str) or not cfg.task_name:
        raise ConfigError(f"task_name: expected a non-empty string, got {cfg.get('task_name')!r}")
    if "attention_backend" in cfg:
        backends = attention_backends()
        if str(cfg.attention_backend).strip().lower() not in backends:
            raise ConfigError(
                f"attention_backend: unknown attention backend {cfg.attention_backend!r}; valid: {', '.join(backends)} "
                f"(auto = Triton kernels for CUDA inputs, PyTorch otherwise; torch = the reference path only)"
            )
    for key in ("model", "data", "regime", "trainer"):
        node = cfg.get(key)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(
                f"{key}: expected a config with a _target_ (choose one with {key}=<name> from conf/{key}/), got "
                f"{OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node!r}"
            )
    for key in ("callbacks", "logger"):
        node = cfg.get(key)
        if node is not None and not isinstance(node, DictConfig):
            raise ConfigError(f"{key}: expected a mapping of name -> config with _target_, got {node!r}")


# --- attention ------------------------------------------------------------------------------------------


def attention_backends() -> tuple[str, ...]:
    """The valid ``attention_backend`` values (``hedgehog.attention.backend.BACKENDS``, read without importing)."""
    backends = static_constant(BACKENDS_CONSTANT)
    if isinstance(backends, tuple) and backends:
        return backends
    from hedgehog.attention.backend import BACKENDS

    return tuple(BACKENDS)


def attention_registry() -> dict[str, str]:
    """Attention name -> dotted path of its feature-map class (``""`` for softmax), in registration order.

    Read from the source of ``hedgehog.attention.feature_maps``: the modules its ``__init__`` imports, in order,
    and their classes decorated with ``@register_feature_map("<name>")``. Falls back to importing the registry.
    """
    registry = {SOFTMAX: ""}
    package = parse_module(FEATURE_MAPS_PACKAGE)
    for statement in package.body if package is not None else []:
        if not isinstance(statement, ast.ImportFrom):
            continue
        source = absolute_module(FEATURE_MAPS_PACKAGE, statement)
        module = parse_module(source)
        for node in module.body if module is not None else []:
            name = _registered_name(node) if isinstance(node, ast.ClassDef) else None
            if name is not None:
                registry.setdefault(name, f"{source}.{node.name}")
    if len(registry) > 1:
        return registry
    from hedgehog.attention.registry import ATTENTION_NAMES, feature_map_class

    return {name: "" if name == SOFTMAX else f"{feature_map_class(name).__module__}.{feature_map_class(name).__qualname__}"
            for name in ATTENTION_NAMES}


def _registered_name(node: ast.ClassDef) -> str | None:
    for decorator in node.decorator_list:
        if (isinstance(decorator, ast.Call) and getattr(decorator.func, "id", getattr(decorator.func, "attr", None))
                == REGISTER_DECORATOR and decorator.args and isinstance(decorator.args[0], ast.Constant)):
            return str(decorator.args[0].value)
    return None


def attention_choices(config_dir: str | Path | None = None) -> tuple[str, ...]:
    """Registered attention names (the same as ``hedgehog.attention.ATTENTION_NAMES``), without importing torch.

    ``config_dir`` is kept for callers that pass one; the names come from the registry's source.
    """
    return tuple(attention_registry())


def _check_attention(cfg: DictConfig, config_dir: str | Path | None) -> None:
    attention = cfg.get("attention")
    if attention is None:
        return
    if not isinstance(attention, DictConfig) or not isinstance(attention.get("name"), str):
        raise ConfigError(
            f"attention: expected {{name: <type>, options: {{...}}}} (choose with attention=<name>), got {attention!r}"
        )
    name = attention.name
    registry = attention_registry()
    if name not in registry:
        hint = _did_you_mean(name, registry)
        raise ConfigError(
            f"attention.name: unknown attention type {name!r}{hint}. Choices: {', '.join(registry)} "
            f"(pick one with attention=<name>)"
        )
    options = attention.get("options") or {}
    if not isinstance(options, (dict, DictConfig)):
        raise ConfigError(f"attention.options: expected a mapping of option -> value, got {options!r}")
    accepted = _attention_options(name, registry[name])
    if accepted is None:
        return
    for key in options:
        key = str(key)
        if key not in accepted:
            valid = ", ".join(accepted) if accepted else "none (it takes no options)"
            raise ConfigError(
                f"attention.options: attention {name!r}: unknown option {key!r}{_did_you_mean(key, accepted)}; valid "
                f"options: {valid} (set them with attention.options.<key>=...)"
            )
        parameter = accepted[key]
        value = options.get(key)
        if value is None and parameter.default is None:
            continue
        if _matches(value, parameter.annotation) is False:
            raise ConfigError(
                f"attention.options.{key}: expected {_describe(parameter.annotation)}; got {_show(value)} "
                f"({type(value).__name__}). Fix: attention.options.{key}={_example(parameter.annotation, value)}"
            )


def _attention_options(name: str, class_path: str) -> dict[str, inspect.Parameter] | None:
    """Option name -> parameter of the feature map ``name`` (its arguments after num_heads and head_dim); None if
    its signature cannot be read."""
    if name == SOFTMAX:
        return {}
    signature = static_signature(class_path)
    if signature is None:
        signature = target_signature(locate_target("attention", class_path))
    if signature is None:
        return None
    params = list(signature.parameters.values())[2:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


# --- _target_ nodes -------------------------------------------------------------------------------------


def _target_nodes(node: Any, prefix: str = "") -> list[tuple[str, DictConfig]]:
    """Every (key, node) with a ``_target_``, outermost first; the ``hydra`` node is skipped."""
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node and prefix:
            found.append((prefix, node))
        for key in node.keys():
            if not prefix and key == "hydra":
                continue
            child = node.get(key)
            found.extend(_target_nodes(child, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            found.extend(_target_nodes(child, f"{prefix}.{i}"))
    return found


def locate_target(key: str, path: Any) -> Any:
    """Import the object a ``_target_`` names; ``ConfigError`` naming the key if it cannot be imported."""
    from hydra._internal.utils import _locate  # hydra.utils.get_object is the same, but also logs an error

    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}._target_: expected a dotted import path, got {path!r}")
    try:
        return _locate(path)
    except Exception as error:  # ImportError, AttributeError, or an error raised while importing
        cause = error.__cause__ or error
        raise ConfigError(
            f"{key}._target_: cannot import {path!r} ({type(cause).__name__}: {_first_line(cause)}). "
            f"Check the spelling, or that the module it lives in imports."
        ) from None


def target_signature(target: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature
        return None


def signature_of_target(key: str, path: Any) -> tuple[inspect.Signature | None, str, dict[str, Any]]:
    """``(signature, label, type hints)`` of the ``_target_`` at ``key``: read from source when possible (nothing
    imported; the hints are then in the signature), else imported and inspected."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}._target_: expected a dotted import path, got {path!r}")
    signature = static_signature(path)
    if signature is not None:
        return signature, path.rsplit(".", 1)[-1], {}
    target = locate_target(key, path)
    return target_signature(target), getattr(target, "__qualname__", str(target)), _type_hints(target)


def _check_target_node(key: str, node: DictConfig, required: bool) -> None:
    signature, label, hints = signature_of_target(key, node.get("_target_"))
    if signature is None:
        return
    params = signature.parameters
    takes_any_keyword = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {
        name: p for name, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    for arg in node.keys():
        arg = str(arg)
        if arg in HYDRA_KEYS:
            continue
        if arg not in named:
            if takes_any_keyword:
                continue
            hint = _did_you_mean(arg, named)
            raise ConfigError(
                f"{key}.{arg}: {label} takes no argument {arg!r}{hint}. It takes: {', '.join(named) or 'nothing'}. "
                f"Remove the key or fix its spelling."
            )
        annotation = hints.get(arg, named[arg].annotation)
        value = node.get(arg)
        if isinstance(value, DictConfig) and "_target_" in value:
            continue  # an object built from its own node, checked there
        if value is None and named[arg].default is None:
            continue
        if _matches(value, annotation) is False:
            raise ConfigError(
                f"{key}.{arg}: expected {_describe(annotation)}; got {_show(value)} ({type(value).__name__}). "
                f"Fix: {key}.{arg}={_example(annotation, value)}"
            )
    if required and not node.get("_partial_", False) and "_args_" not in node:
        missing = [
            name for name, p in named.items()
            if p.default is p.empty and name not in node and p.kind is not p.VAR_POSITIONAL
        ]
        if missing:
            raise ConfigError(
                f"{key}: {label} needs {', '.join(missing)}; add {key}.{missing[0]}=<value> (or set it in the "
                f"yaml file)"
            )


def _check_counts(key: str, node: DictConfig) -> None:
    """A negative value for an argument that counts something (see ``COUNT_ARGUMENT``) is an error."""
    for arg in node.keys():
        arg = str(arg)
        value = node.get(arg)
        if arg in HYDRA_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)) or value >= 0:
            continue
        if not COUNT_ARGUMENT.search(arg) or (value == -1 and arg in MINUS_ONE_MEANS_ALL):
            continue
        allowed = "a value >= 0" + (" (or -1 for all / no limit)" if arg in MINUS_ONE_MEANS_ALL else "")
        example = "<int, e.g. 1>" if isinstance(value, int) else "<number >= 0>"
        raise ConfigError(f"{key}.{arg}: expected {allowed}; got {value!r}. Fix: {key}.{arg}={example}")


def _type_hints(target: Any) -> dict[str, Any]:
    function = target.__init__ if isinstance(target, type) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        return {}


# --- type matching (None = cannot tell, accept) -------------------------------------------------------------

_SCALARS = (int, float, bool, str, type(None))


def _matches(value: Any, annotation: Any) -> bool | None:
    """True/False when the annotation is made of plain types we can check, None when we cannot tell."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, (str, typing.TypeVar)):
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(annotation, types.UnionType)):
        results = [_matches(value, arg) for arg in args]
        if any(r is True for r in results):
            return True
        if any(r is None for r in results):
            return None
        return False
    if origin is Literal:
        return any(
            value == arg and isinstance(value, bool) == isinstance(arg, bool) and isinstance(value, str) == isinstance(arg, str)
            for arg in args
        )
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    sequence_types = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, set, frozenset)
    if annotation in sequence_types or origin in sequence_types:
        if isinstance(value, str) and (annotation is str or origin is None and annotation is collections.abc.Iterable):
            return None
        if not isinstance(value, (ListConfig, list, tuple)):
            return False if not isinstance(value, (DictConfig, dict)) else None
        if args and len(args) == 1 or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            element = args[0]
            verdicts = [_matches(item, element) for item in value]
            if any(v is False for v in verdicts):
                return False
        return True
    mapping_types = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
    if annotation in mapping_types or origin in mapping_types:
        return isinstance(value, (DictConfig, dict))
    return None  # a class or construct we do not check (a tensor, a module, a callable...)


def _flatten(annotation: Any) -> list[Any]:
    """Union members, with nested unions and Literals spread out (Literal values as ``Literal[v]``)."""
    origin = typing.get_origin(annotation)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(annotation, types.UnionType)):
        return [member for arg in typing.get_args(annotation) for member in _flatten(arg)]
    if origin is Literal:
        return [Literal[value] for value in typing.get_args(annotation)]
    return [annotation]


def _describe(annotation: Any) -> str:
    members = _flatten(annotation)
    literals = [typing.get_args(m)[0] for m in members if typing.get_origin(m) is Literal]
    others = [m for m in members if typing.get_origin(m) is not Literal]
    if len(members) > 1 or literals:
        parts = [_describe(m) for m in others if m is not type(None)]
        if literals:
            parts.insert(0, "one of " + ", ".join(dict.fromkeys(str(v) for v in literals)))
        if type(None) in others:
            parts.append("null")
        return " or ".join(parts)
    origin = typing.get_origin(annotation)
    if annotation is type(None) or annotation is None:
        return "null"
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"a list of {_describe(args[0])}" if len(args) == 1 else "a list"
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return "a mapping"
    if isinstance(annotation, type):
        return {"list": "a list", "tuple": "a list", "dict": "a mapping"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _example(annotation: Any, value: Any) -> str:
    """A value that would pass (for choices: the one closest to the bad ``value``), for the ``Fix:`` part."""
    literals = [str(typing.get_args(m)[0]) for m in _flatten(annotation) if typing.get_origin(m) is Literal]
    if literals:
        return (difflib.get_close_matches(str(value), literals, n=1, cutoff=0.0) or literals)[0]
    for member in _flatten(annotation):
        if member in _EXAMPLES:
            return _EXAMPLES[member]
        if typing.get_origin(member) in (list, tuple, collections.abc.Sequence) or member in (list, tuple):
            return "[a,b,...]"
    return "<value>"


_EXAMPLES = {int: "<int, e.g. 1>", float: "<number, e.g. 0.1>", bool: "<true|false>", str: "<text>"}


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        return repr(OmegaConf.to_container(value))
    return repr(value)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- data paths -----------------------------------------------------------------------------------------


def _check_data_paths(cfg: DictConfig) -> None:
    data = cfg.get("data")
    if not isinstance(data, DictConfig):
        return
    for key in data.keys():
        key = str(key)
        value = data.get(key)
        if not (key == "data_dir" or key.endswith(PATH_KEY_SUFFIXES)) or not isinstance(value, str):
            continue
        if "/" not in value and "\\" not in value:
            continue  # a hub name, not a path
        if not Path(value).expanduser().exists():
            raise DataNotFoundError(missing_data_message(f"data.{key}", value))


def missing_data_message(key: str | None, path: str | Path) -> str:
    """One paragraph: which path is missing and the ways to provide it."""
    where = f"{key} = {path}" if key else str(path)
    return (
        f"data not found: {where} does not exist. Put the data there, or point the run at the folder that holds "
        f"it: paths.data_dir=/path/to/data on the command line or the environment variable HEDGEHOG_DATA_DIR "
        f"(the default is <repo>/../shared/data; its README.md lists the expected files)."
    )
