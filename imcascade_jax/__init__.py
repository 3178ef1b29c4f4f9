"""imcascade_jax: fit galaxy images with a cascade of Gaussians, in JAX.

A re-implementation of imcascade 1.1 (Miller & van Dokkum 2021) with the same interface
(``Fitter``, ``initialize_fitter``, ``ImcascadeResults`` ...) on top of a pure-functional,
jit / vmap / grad-able core (``imcascade_jax.model``, ``imcascade_jax.render``).

The public names are imported on first use (module ``__getattr__``), so that ``import
imcascade_jax`` (and the command line's ``--help``) does not import JAX. Float64 is still
enabled for JAX before any JAX computation (see :mod:`imcascade_jax._config`): through
``JAX_ENABLE_X64`` when JAX is not yet imported, through ``jax.config`` when it is.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if os.environ.get("IMCASCADE_JAX_X64", "1") != "0":
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_enable_x64", True)
    else:
        os.environ["JAX_ENABLE_X64"] = "1"  # read by JAX when it is imported

# Library etiquette: no output unless the application configures logging (each Fitter adds its
# own console fallback, see imcascade_jax.logs).
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:  # what the lazy names are, for type checkers and the API reference
    from imcascade_jax._config import disable_compilation_cache, enable_compilation_cache
    from imcascade_jax.batch import fit_catalog
    from imcascade_jax.fitter import Fitter, fitter_from_ASDF, initialize_fitter
    from imcascade_jax.mgm import MultiGaussModel
    from imcascade_jax.psf_fitter import PSFFitter
    from imcascade_jax.results import ImcascadeResults, MultiResults

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
    "enable_compilation_cache": "imcascade_jax._config",
    "disable_compilation_cache": "imcascade_jax._config",
}

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
        importlib.import_module("imcascade_jax._config")
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imcascade_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Public names, including those not imported yet."""
    return sorted(set(globals()) | set(__all__))
