"""Numerical and compilation settings applied when the package is imported.

imcascade_jax computes in float64 by default: galaxy fits mix fluxes spanning five decades and
sky levels near zero, and float32 costs about 1e-6 of the peak in the renderer (see
``docs/accuracy.md``). Set ``IMCASCADE_JAX_X64=0`` before importing to leave JAX's global
precision untouched (models then render in float32).

Compiled fits are kept on disk (JAX's persistent compilation cache) in
``$XDG_CACHE_HOME/imcascade_jax/xla`` (default ``~/.cache/imcascade_jax/xla``), so that a new
process fitting images of shapes seen before loads the compiled code instead of spending
seconds compiling it. ``IMCASCADE_JAX_CACHE`` chooses: unset for that default, ``0`` (or
``off``, ``false``, ``no``) to leave JAX's cache settings alone, or a folder. A cache folder set
through JAX itself (``JAX_COMPILATION_CACHE_DIR``) is respected.
:func:`enable_compilation_cache` and :func:`disable_compilation_cache` switch it at run time.
"""

from __future__ import annotations

import os

import jax

X64_ENABLED = os.environ.get("IMCASCADE_JAX_X64", "1") != "0"
if X64_ENABLED:
    jax.config.update("jax_enable_x64", True)

_OFF = ("0", "off", "false", "no")


def default_float_dtype():
    """The floating dtype used when none is requested: float64 when x64 is enabled."""
    import jax.numpy as jnp

    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/imcascade_jax/xla``, or ``~/.cache/imcascade_jax/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "imcascade_jax", "xla")


def reset_jax_cache() -> None:
    """Make JAX reopen its compilation cache (it opens it once, at the first compilation)."""
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()


def enable_compilation_cache(path: str | None = None) -> str:
    """Keep compiled fits on disk so that later processes skip XLA compilation.

    On by default (see the module's documentation); this changes JAX's global configuration
    (its compilation cache folder).

    Parameters
    ----------
    path : str, optional
        Cache folder; default ``$IMCASCADE_JAX_CACHE`` when it names a folder, else
        :func:`default_cache_dir`.

    Returns
    -------
    str
        The folder used.
    """
    env = os.environ.get("IMCASCADE_JAX_CACHE", "")
    path = path or (env if env and env.lower() not in _OFF else default_cache_dir())
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_enable_compilation_cache", True)
    reset_jax_cache()
    return path


def disable_compilation_cache() -> None:
    """Stop reading and writing compiled fits on disk (JAX's persistent cache off)."""
    jax.config.update("jax_enable_compilation_cache", False)
    reset_jax_cache()


def compilation_cache_dir() -> str | None:
    """The folder compiled programs are kept in, or ``None`` when the persistent cache is off."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir or None


def enable_at_import() -> None:
    """Point JAX's compilation cache at the folder ``IMCASCADE_JAX_CACHE`` chooses (import time).

    Does nothing when it is ``0``/``off``/``false``/``no``, or when it is unset and a folder
    was already chosen through JAX. Warns when the folder cannot be created.
    """
    env = os.environ.get("IMCASCADE_JAX_CACHE")
    if env is not None and env.strip().lower() in _OFF:
        return
    if jax.config.jax_compilation_cache_dir and not env:
        return  # chosen through JAX itself
    path = os.path.abspath(os.path.expanduser(env or default_cache_dir()))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        import warnings

        warnings.warn(f"imcascade_jax: no compilation cache ({err}); every process compiles "
                      f"its fits. Set IMCASCADE_JAX_CACHE to a writable folder, or 0.",
                      stacklevel=2)
        return
    # No reset here: nothing has been compiled yet, JAX opens the folder at the first compile.
    jax.config.update("jax_compilation_cache_dir", path)


enable_at_import()
