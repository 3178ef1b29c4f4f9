"""imcascade_jax: fit galaxy images with a cascade of Gaussians, in JAX.

A re-implementation of imcascade 1.1 (Miller & van Dokkum 2021) with the same interface
(``Fitter``, ``initialize_fitter``, ``ImcascadeResults`` ...) on top of a pure-functional,
jit / vmap / grad-able core (``imcascade_jax.model``, ``imcascade_jax.render``).
"""

import logging

from imcascade_jax import _config  # noqa: F401  (enables float64 before anything else)
from imcascade_jax._config import enable_compilation_cache
from imcascade_jax.batch import fit_catalog
from imcascade_jax.fitter import Fitter, fitter_from_ASDF, initialize_fitter
from imcascade_jax.mgm import MultiGaussModel
from imcascade_jax.psf_fitter import PSFFitter
from imcascade_jax.results import ImcascadeResults, MultiResults

__version__ = "0.1.0"

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
    "enable_compilation_cache",
    "fit_catalog",
    "fitter_from_ASDF",
    "initialize_fitter",
]
