"""imcascade_jax: fit galaxy images with a cascade of Gaussians, in JAX.

A re-implementation of imcascade 1.1 (Miller & van Dokkum 2021) with the same interface
(``Fitter``, ``initialize_fitter``, ``ImcascadeResults`` ...) on top of a pure-functional,
jit / vmap / grad-able core (``imcascade_jax.model``, ``imcascade_jax.render``).

The classes and functions below are imported on first use (module ``__getattr__``), so that
``import imcascade_jax`` costs little more than importing JAX.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from imcascade_jax import _config  # noqa: F401  (float64 and the compilation cache, first)
from imcascade_jax._config import disable_compilation_cache, enable_compilation_cache

__version__ = "0.1.0"

#: Public name -> module that defines it, imported when the name is first used.
_LAZY = {
    "Fitter": "imcascade_jax.fitter",
    "fitter_from_ASDF": "imcascade_jax.fitter",
    "initialize_fitter": "imcascade_jax.fitter",
    "fit_catalog": "imcascade_jax.batch",
    "MultiGaussModel": "imcascade_jax.mgm",
    "PSFFitter": "imcascade_jax.psf_fitter",
    "ImcascadeResults": "imcascade_jax.results",
    "MultiResults": "imcascade_jax.results",
}

# Library etiquette: no output unless the application configures logging (each Fitter adds its
# own console fallback, see imcascade_jax.logs).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Fitter",
    "ImcascadeResults",
    "MultiGaussModel",
    "MultiResults",
    "PSFFitter",
    "__version__",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "fit_catalog",
    "fitter_from_ASDF",
    "initialize_fitter",
]


def __getattr__(name: str) -> Any:
    """Import the module defining a public name on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imcascade_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Public names, including those not imported yet."""
    return sorted(set(globals()) | set(__all__))
