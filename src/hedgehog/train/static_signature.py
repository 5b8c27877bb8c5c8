"""Signatures of ``_target_`` callables read from their source code, without importing them.

Checking a config against the classes it names (``lightning.pytorch.Trainer``, ``hedgehog.models.gpt.GPT``...)
would otherwise import torch and Lightning first, which takes seconds. ``static_signature("a.b.C")`` finds the
module file through the import system's finders (no module is executed), parses it with ``ast``, follows
re-exports (``from x import C``) and base classes to the ``__init__`` that runs, and returns an
``inspect.Signature``: parameter names, kinds, literal defaults and annotations.

Annotations are evaluated in a sandbox: typing constructs and the standard library are real, module-level type
aliases (``_PRECISION_INPUT = Literal[...]``) are followed, and every other name (a tensor, a module class)
becomes an opaque class that the type checks treat as "cannot tell". Only type-like expressions are evaluated
(names, attributes, subscripts, ``|``, constants): nothing from the project or a library runs.

``None`` means "not found statically" (a C extension, a lazily exported name, a dataclass...): the caller then
imports the target and asks ``inspect.signature``.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

MAX_DEPTH = 16
SAFE_BUILTINS = ("int", "float", "complex", "str", "bytes", "bool", "list", "dict", "tuple", "set", "frozenset",
                 "type", "object", "slice", "range", "callable", "Ellipsis")
NON_LITERAL_DEFAULT = object()  # a default value that is not a literal: present, but not None


class _OpaqueMeta(type):
    """Metaclass of the stand-ins for names that are not evaluated (attribute access and subscripts give stand-ins)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return opaque(f"{cls.__qualname__}.{name}")

    def __getitem__(cls, item: Any) -> Any:
        return cls


def opaque(name: str) -> type:
    """A class standing for ``name``: type checks treat it as an unknown class."""
    return _OpaqueMeta(name.rsplit(".", 1)[-1], (), {"__qualname__": name, "__module__": "static"})


@dataclass(frozen=True)
class Binding:
    """What a name is bound to at module level: ``kind`` is class, function, value, module or import."""

    kind: str
    module: str
    node: ast.AST | None = None
    target: str = ""  # for "module": the module name; for "import": the dotted name it was imported from


# --- finding and parsing modules ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def module_file(module: str) -> Path | None:
    """The ``.py`` file of ``module``, found without importing it or its parent packages; None if not found."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        origin = spec.origin or ""
        return Path(origin) if origin.endswith(".py") else None
    folders = [Path(p) for p in (spec.submodule_search_locations or [])]
    for part in parts[1:-1]:
        folders = [folder / part for folder in folders if (folder / part).is_dir()]
    for folder in folders:
        for candidate in (folder / parts[-1] / "__init__.py", folder / f"{parts[-1]}.py"):
            if candidate.is_file():
                return candidate
    return None


@lru_cache(maxsize=None)
def parse_module(module: str) -> ast.Module | None:
    path = module_file(module)
    if path is None:
        return None
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def _package_of(module: str) -> str:
    path = module_file(module)
    return module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]


def absolute_module(module: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` statement of ``module`` imports from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _bindings_of(statement: ast.stmt, module: str) -> dict[str, Binding]:
    found: dict[str, Binding] = {}
    if isinstance(statement, ast.ClassDef):
        found[statement.name] = Binding("class", module, statement)
    elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
        found[statement.name] = Binding("function", module, statement)
    elif isinstance(statement, ast.Assign):
        for target in statement.targets:
            if isinstance(target, ast.Name):
                found[target.id] = Binding("value", module, statement.value)
    elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
        found[statement.target.id] = Binding("value", module, statement.value)
    elif isinstance(statement, ast.Import):
        for alias in statement.names:
            if alias.asname:
                found[alias.asname] = Binding("module", module, target=alias.name)
            else:
                top = alias.name.split(".")[0]
                found[top] = Binding("module", module, target=top)
    elif isinstance(statement, ast.ImportFrom):
        source = absolute_module(module, statement)
        for alias in statement.names:
            if alias.name != "*":
                found[alias.asname or alias.name] = Binding("import", module, target=f"{source}.{alias.name}")
    return found


def _nested_blocks(statement: ast.stmt) -> list[list[ast.stmt]]:
    if isinstance(statement, ast.If):
        return [statement.body, statement.orelse]
    if isinstance(statement, ast.Try):
        return [statement.body, *[h.body for h in statement.handlers], statement.orelse, statement.finalbody]
    return []


@lru_cache(maxsize=None)
def module_bindings(module: str) -> dict[str, Binding] | None:
    """Names bound at the top of ``module``: the first binding of each name; bindings inside ``if``/``try``
    blocks only for names the top level does not bind."""
    tree = parse_module(module)
    if tree is None:
        return None
    top: dict[str, Binding] = {}
    nested: dict[str, Binding] = {}
    for statement in tree.body:
        for name, binding in _bindings_of(statement, module).items():
            top.setdefault(name, binding)
        pending = _nested_blocks(statement)
        while pending:
            block = pending.pop(0)
            for inner in block:
                for name, binding in _bindings_of(inner, module).items():
                    nested.setdefault(name, binding)
                pending.extend(_nested_blocks(inner))
    return {**nested, **top}


def find_binding(dotted: str, depth: int = 0) -> Binding | None:
    """The definition ``dotted`` (``package.module.Name`` or ``package.module.Class.attribute``) refers to,
    following re-exports; None if it cannot be found statically."""
    if depth > MAX_DEPTH:
        return None
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module, names = ".".join(parts[:split]), parts[split:]
        if module_file(module) is None:
            continue
        return _lookup(module, names, depth)
    return Binding("module", dotted, target=dotted) if module_file(dotted) is not None else None


def _lookup(module: str, names: list[str], depth: int) -> Binding | None:
    bindings = module_bindings(module) or {}
    binding = bindings.get(names[0])
    if binding is None:
        if module_file(f"{module}.{names[0]}") is not None:  # a submodule not imported by the package
            binding = Binding("module", module, target=f"{module}.{names[0]}")
        else:
            return None
    binding = _follow(binding, depth)
    for attribute in names[1:]:
        if binding is None:
            return None
        if binding.kind == "module":
            binding = _lookup(binding.target, [attribute], depth + 1)
        elif binding.kind == "class":
            binding = _class_attribute(binding, attribute)
        else:
            return None
    return binding


def _follow(binding: Binding, depth: int) -> Binding | None:
    """Through ``from x import y`` chains to the definition."""
    while binding is not None and binding.kind == "import":
        depth += 1
        if depth > MAX_DEPTH:
            return None
        binding = find_binding(binding.target, depth)
    return binding


def _class_attribute(binding: Binding, name: str) -> Binding | None:
    assert isinstance(binding.node, ast.ClassDef)
    for statement in binding.node.body:
        found = _bindings_of(statement, binding.module).get(name)
        if found is not None:
            return found if found.kind != "import" else _follow(found, 0)
    return None


# --- signatures -------------------------------------------------------------------------------------------


def static_signature(dotted: str) -> inspect.Signature | None:
    """The call signature of the class or function ``dotted`` names, read from source; None if unknown."""
    try:
        return _cached_signature(dotted)
    except RecursionError:
        return None


@lru_cache(maxsize=None)
def _cached_signature(dotted: str) -> inspect.Signature | None:
    binding = find_binding(dotted)
    if binding is None:
        return None
    if binding.kind == "function":
        return _function_signature(binding.node, binding.module, bound=False)  # type: ignore[arg-type]
    if binding.kind == "class":
        return _class_signature(binding, 0)
    return None


def _decorator_names(node: ast.ClassDef | ast.FunctionDef) -> set[str]:
    names = set()
    for decorator in node.decorator_list:
        while isinstance(decorator, ast.Call):
            decorator = decorator.func
        if isinstance(decorator, ast.Attribute):
            names.add(decorator.attr)
        elif isinstance(decorator, ast.Name):
            names.add(decorator.id)
    return names


def _class_signature(binding: Binding, depth: int) -> inspect.Signature | None:
    node = binding.node
    assert isinstance(node, ast.ClassDef)
    if depth > MAX_DEPTH or _decorator_names(node) & {"dataclass", "attrs", "define", "frozen"}:
        return None
    methods = {s.name: s for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if "__signature__" in {t.id for s in node.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)}:
        return None
    if "__init__" in methods:
        return _function_signature(methods["__init__"], binding.module, bound=True)
    if "__new__" in methods or any(k.arg == "metaclass" for k in node.keywords):
        return None
    for base in node.bases:
        dotted = _dotted_name(base.value if isinstance(base, ast.Subscript) else base)
        if dotted is None:
            return None
        if dotted in ("object", "Generic", "typing.Generic", "ABC", "abc.ABC", "Protocol", "typing.Protocol"):
            continue
        base_binding = _resolve_in_module(binding.module, dotted)
        if base_binding is None or base_binding.kind != "class":
            return None
        return _class_signature(base_binding, depth + 1)
    return inspect.Signature([])  # object.__init__: no arguments


def _dotted_name(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _resolve_in_module(module: str, dotted: str) -> Binding | None:
    head, *rest = dotted.split(".")
    binding = (module_bindings(module) or {}).get(head)
    if binding is None:
        return None
    binding = _follow(binding, 0)
    for attribute in rest:
        if binding is None:
            return None
        if binding.kind == "module":
            binding = find_binding(f"{binding.target}.{attribute}")
        elif binding.kind == "class":
            binding = _class_attribute(binding, attribute)
        else:
            return None
    return binding


def _function_signature(node: ast.FunctionDef | ast.AsyncFunctionDef, module: str, bound: bool) -> inspect.Signature:
    arguments = node.args
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    is_static = "staticmethod" in _decorator_names(node)
    parameters = []
    for index, (arg, default) in enumerate(zip(positional, defaults)):
        if bound and not is_static and index == 0:
            continue  # self / cls
        kind = inspect.Parameter.POSITIONAL_ONLY if index < len(arguments.posonlyargs) else inspect.Parameter.POSITIONAL_OR_KEYWORD
        parameters.append(_parameter(arg, kind, default, module))
    if arguments.vararg is not None:
        parameters.append(_parameter(arguments.vararg, inspect.Parameter.VAR_POSITIONAL, None, module))
    for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults):
        parameters.append(_parameter(arg, inspect.Parameter.KEYWORD_ONLY, default, module))
    if arguments.kwarg is not None:
        parameters.append(_parameter(arguments.kwarg, inspect.Parameter.VAR_KEYWORD, None, module))
    return inspect.Signature(parameters)


def _parameter(arg: ast.arg, kind: Any, default: ast.expr | None, module: str) -> inspect.Parameter:
    if default is None:
        value = inspect.Parameter.empty
    else:
        try:
            value = ast.literal_eval(default)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = NON_LITERAL_DEFAULT
    annotation = inspect.Parameter.empty if arg.annotation is None else evaluate_annotation(arg.annotation, module)
    return inspect.Parameter(arg.arg, kind, default=value, annotation=annotation)


# --- annotations ----------------------------------------------------------------------------------------


_TYPE_NODES = (ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Constant, ast.BinOp, ast.BitOr,
               ast.UnaryOp, ast.USub, ast.Load)


def _is_type_expression(node: ast.AST) -> bool:
    """Only names, attributes, subscripts, tuples, lists, constants and ``|``: nothing is called."""
    for child in ast.walk(node):
        if not isinstance(child, _TYPE_NODES):
            return False
        if isinstance(child, ast.BinOp) and not isinstance(child.op, ast.BitOr):
            return False
    return True


def evaluate_annotation(node: ast.expr, module: str, depth: int = 0) -> Any:
    """The annotation ``node`` of ``module`` as a typing object (unknown names as opaque classes); ``empty`` if
    it cannot be evaluated."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation (forward reference)
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return inspect.Parameter.empty
    if depth > MAX_DEPTH or not _is_type_expression(node):
        return inspect.Parameter.empty
    try:
        code = compile(ast.Expression(body=node), "<annotation>", "eval")
        return eval(code, {"__builtins__": {}}, _Namespace(module, depth))  # noqa: S307 (type expressions only)
    except Exception:  # an alias that does not evaluate: cannot tell
        return inspect.Parameter.empty


class _Namespace(dict):
    """Names visible to an annotation of ``module``, resolved lazily (``eval`` looks names up here)."""

    def __init__(self, module: str, depth: int) -> None:
        super().__init__()
        self.module = module
        self.depth = depth

    def __missing__(self, name: str) -> Any:
        value = _value_of(self.module, name, self.depth)
        self[name] = value
        return value


def _value_of(module: str, name: str, depth: int) -> Any:
    binding = (module_bindings(module) or {}).get(name)
    if binding is None:
        if name in SAFE_BUILTINS:
            return getattr(builtins, name)
        return opaque(f"{module}.{name}")
    return _binding_value(binding, f"{module}.{name}", depth)


def _binding_value(binding: Binding, label: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return opaque(label)
    if binding.kind in ("import", "module"):
        target = binding.target
        root = target.split(".")[0]
        if root in sys.stdlib_module_names or root == "typing_extensions":
            return _real(target, binding.kind)
        if binding.kind == "module":
            return _StaticModule(target, depth + 1)
        followed = _follow(binding, depth)
        if followed is None:
            return opaque(target)
        return _binding_value(followed, target, depth + 1)
    if binding.kind == "value":
        value = evaluate_annotation(binding.node, binding.module, depth + 1)  # type: ignore[arg-type]
        return opaque(label) if value is inspect.Parameter.empty else value
    return opaque(label)  # a class or function: not evaluated


def _real(target: str, kind: str) -> Any:
    """A standard-library module (``import typing``) or name (``from typing import Optional``)."""
    try:
        if kind == "module":
            return importlib.import_module(target)
        module, _, name = target.rpartition(".")
        return getattr(importlib.import_module(module), name)
    except Exception:
        return opaque(target)


class _StaticModule:
    """A non-standard module named in an annotation (``torch.dtype``): attributes resolve statically."""

    def __init__(self, module: str, depth: int) -> None:
        self._module = module
        self._depth = depth

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        binding = find_binding(f"{self._module}.{name}")
        if binding is None:
            return opaque(f"{self._module}.{name}")
        return _binding_value(binding, f"{self._module}.{name}", self._depth + 1)


def static_constant(dotted: str) -> Any:
    """The literal value of a module-level constant (``hedgehog.attention.backend.BACKENDS``); None if the name is
    not bound to a literal."""
    binding = find_binding(dotted)
    if binding is None or binding.kind != "value":
        return None
    try:
        return ast.literal_eval(binding.node)  # type: ignore[arg-type]
    except (ValueError, TypeError, SyntaxError):
        return None
