"""Numerical configuration applied when the package is imported.

imcascade_jax computes in float64 by default: galaxy fits mix fluxes spanning five decades and
sky levels near zero, and float32 costs about 1e-6 of the peak in the renderer (see
``docs/accuracy.md``). Set ``IMCASCADE_JAX_X64=0`` before importing to leave JAX's global
precision untouched (models then render in float32).
"""

from __future__ import annotations

import os

import jax

X64_ENABLED = os.environ.get("IMCASCADE_JAX_X64", "1") != "0"
if X64_ENABLED:
    jax.config.update("jax_enable_x64", True)


def default_float_dtype():
    """The floating dtype used when none is requested: float64 when x64 is enabled."""
    import jax.numpy as jnp

    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def enable_compilation_cache(path: str | None = None) -> str:
    """Keep compiled fits on disk so that later processes skip XLA compilation.

    A fit compiles once per image shape and model structure (a few seconds on a CPU); with
    the cache, a new Python process fitting the same shapes loads the compiled code instead.
    JAX's global configuration is changed, which is why this is opt-in (the ``imcascade-jax``
    command turns it on).

    Parameters
    ----------
    path : str, optional
        Cache folder; default ``$IMCASCADE_JAX_CACHE`` or ``~/.cache/imcascade_jax/xla``.

    Returns
    -------
    str
        The folder used.
    """
    path = path or os.environ.get("IMCASCADE_JAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "imcascade_jax", "xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
