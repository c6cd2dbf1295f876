"""The type stub _core.pyi declares exactly what the compiled module exports: every
module-level name, every class with its base and its own public members, and the
parameter names of every function and method (from pybind11's signatures). A name
added to the bindings without the stub, or left in the stub after removal, fails here."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import layerparallel
from layerparallel import _core

STUB = Path(layerparallel.__file__).with_name("_core.pyi")


def _stub():
    """(module-level names, {class: (base names, {member: params or None})}, {function: params})."""
    tree = ast.parse(STUB.read_text())
    names, classes, functions = set(), {}, {}

    def params(fn: ast.FunctionDef) -> list[str]:
        a = fn.args
        return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"]

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
            functions[node.name] = params(node)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            members = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    prop = any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
                    members[item.name] = None if prop else params(item)
                elif isinstance(item, ast.AnnAssign):
                    members[item.target.id] = None
            classes[node.name] = ([b.id for b in node.bases], members)
    return names, classes, functions


def _signature_params(obj) -> list[str] | None:
    """Parameter names from pybind11's docstring signature (without self)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    m = re.match(r"\w+\((.*?)\) ->", doc.splitlines()[0] if doc else "")
    if not m:
        return None
    return [n for n in re.findall(r"(?:^|, )(\w+): ", m.group(1)) if n != "self"]


def _own_members(cls) -> set[str]:
    out = {n for n in vars(cls) if not n.startswith("_")}
    init = vars(cls).get("__init__")
    if init is not None and "__init__(self" in (init.__doc__ or ""):  # a bound constructor
        out.add("__init__")
    return out


STUB_NAMES, STUB_CLASSES, STUB_FUNCTIONS = _stub()
MODULE_NAMES = {n for n in dir(_core) if not n.startswith("_")} | {"__version__"}


def test_stub_declares_every_module_name_and_nothing_else():
    assert sorted(MODULE_NAMES - STUB_NAMES) == [], "exported by _core but missing from _core.pyi"
    assert sorted(STUB_NAMES - MODULE_NAMES) == [], "declared in _core.pyi but not exported by _core"


@pytest.mark.parametrize("name", sorted(n for n in MODULE_NAMES if isinstance(getattr(_core, n), type)))
def test_stub_class_matches(name):
    cls = getattr(_core, name)
    assert name in STUB_CLASSES, f"{name} is a class in _core but not in _core.pyi"
    bases, members = STUB_CLASSES[name]
    module_bases = [b.__name__ for b in cls.__bases__ if b.__module__ == _core.__name__]
    assert bases == module_bases, name
    own = _own_members(cls)
    assert sorted(own - set(members)) == [], f"members of _core.{name} missing from the stub"
    assert sorted(set(members) - own) == [], f"members of the stub's {name} that _core.{name} lacks"
    for member, stub_params in members.items():
        attr = vars(cls)[member]
        if isinstance(attr, property):
            assert stub_params is None, f"{name}.{member} is a property in _core"
            continue
        assert stub_params is not None, f"{name}.{member} is a method in _core, a property in the stub"
        _check_params(f"{name}.{member}", attr, stub_params)


@pytest.mark.parametrize("name", sorted(n for n in MODULE_NAMES if callable(getattr(_core, n))
                                        and not isinstance(getattr(_core, n), type)))
def test_stub_function_parameters_match(name):
    assert name in STUB_FUNCTIONS, f"{name} is a function in _core but not one in _core.pyi"
    _check_params(name, getattr(_core, name), STUB_FUNCTIONS[name])


def _check_params(where: str, obj, stub_params: list[str]) -> None:
    actual = _signature_params(obj)
    if actual is None:  # no pybind11 signature to compare (a default constructor)
        return
    assert len(actual) == len(stub_params), (where, actual, stub_params)
    for a, s in zip(actual, stub_params):
        # pybind11 names unnamed (positional) arguments argN; the stub may name them.
        assert a == s or re.fullmatch(r"arg\d+", a), (where, actual, stub_params)
