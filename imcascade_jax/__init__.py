"""imcascade_jax: fit galaxy images with a cascade of Gaussians, in JAX.

A re-implementation of imcascade 1.1 (Miller & van Dokkum 2021) with the same interface
(``Fitter``, ``initialize_fitter``, ``ImcascadeResults`` ...) on top of a pure-functional,
jit / vmap / grad-able core (``imcascade_jax.model``, ``imcascade_jax.render``).
"""

from imcascade_jax import _config  # noqa: F401  (enables float64 before anything else)

__version__ = "0.1.0"

__all__ = ["__version__"]
