"""Every public name of the package has a docstring (the API reference is generated from them)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import imcascade_jax

MODULES = sorted(
    name for _, name, _ in pkgutil.iter_modules(imcascade_jax.__path__, "imcascade_jax.")
    if not name.rsplit(".", 1)[-1].startswith("_")
)


def _public_members(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    documented = inspect.isfunction(member) or isinstance(member, property)
                    if attr.startswith("_") or not documented:
                        continue
                    yield f"{name}.{attr}", member


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_have_docstrings(module_name):
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    missing = [name for name, obj in _public_members(module) if not (obj.__doc__ or "").strip()]
    assert not missing, f"{module_name}: no docstring for {missing}"


def test_modules_found():
    assert {"imcascade_jax.fitter", "imcascade_jax.render", "imcascade_jax.results"} <= set(MODULES)
