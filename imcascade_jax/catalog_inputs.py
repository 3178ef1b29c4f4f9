"""Checking and normalising the arguments of :func:`imcascade_jax.batch.fit_catalog`.

Cutouts may be a ``(B, H, W)`` cube or a list of 2-D arrays of different shapes (numpy masked
arrays and FITS paths accepted, :mod:`imcascade_jax.inputs`); masks, errors and positions follow
the cutouts one per galaxy. Problems of the whole call raise ``ValueError``/``TypeError`` naming
the argument before any galaxy is set up.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import fit as _fit
from imcascade_jax.catalog_batches import STRATEGIES
from imcascade_jax.inputs import as_array, is_path
from imcascade_jax.model import RENDER_MODES, SKY_TYPES

__all__ = ["as_cutouts", "check_settings", "noise_of", "positions", "psf_list", "solver_options"]


def _items(name: str, value: Any) -> list[Any]:
    """The per-galaxy entries of a cube (first axis) or a sequence."""
    array_like = hasattr(value, "__array__") and not isinstance(value, (list, tuple))
    if isinstance(value, np.ndarray) or array_like:
        arr = value if isinstance(value, np.ma.MaskedArray) else np.asarray(value)
        if arr.ndim != 3:
            raise ValueError(f"'{name}' must be a (B, H, W) array or a sequence of 2-D arrays, "
                             f"got shape {arr.shape}")
        return list(arr)
    if is_path(value) or not isinstance(value, Sequence):
        raise TypeError(f"'{name}' must be a (B, H, W) array or a sequence of 2-D arrays, "
                        f"got {type(value).__name__}")
    return list(value)


def as_cutouts(name: str, value: Any, shapes: list[tuple[int, ...]] | None) -> list[Any] | None:
    """Per-galaxy 2-D inputs (None stays None); ``shapes``: the cutouts' shapes to match.

    Masked arrays are kept as they are (their masks matter); everything else becomes a float64
    array (FITS paths are read).
    """
    if value is None:
        return None
    items = _items(name, value)
    if shapes is not None and len(items) != len(shapes):
        raise ValueError(f"'{name}' has {len(items)} cutouts, 'images' has {len(shapes)}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, np.ma.MaskedArray):
            arr = item
            if arr.ndim != 2:
                raise ValueError(f"'{name}[{i}]' must be 2-D, got shape {arr.shape}")
        else:
            arr = as_array(item, f"{name}[{i}]")
        if shapes is not None and arr.shape != shapes[i]:
            raise ValueError(f"'{name}[{i}]' has shape {arr.shape}, 'images[{i}]' {shapes[i]}")
        out.append(arr)
    return out


def psf_list(psf: Any, n: int) -> tuple[list[Any], bool]:
    """Per-galaxy PSFs and whether one PSF serves every galaxy."""
    if psf is None:
        return [None] * n, True
    if is_path(psf) or (isinstance(psf, np.ndarray) and psf.ndim == 2):
        return [as_array(psf, "psf")] * n, True
    if isinstance(psf, np.ndarray) or not isinstance(psf, (list, tuple)):
        arr = np.asarray(psf, dtype=float)
        if arr.ndim == 2:
            return [arr] * n, True
        if arr.ndim != 3:
            raise ValueError(f"'psf' must be 2-D (one for all) or (B, h, w), got shape {arr.shape}")
        items = list(arr)
    else:
        items = [as_array(p, f"psf[{i}]") for i, p in enumerate(psf)]
    if len(items) != n:
        raise ValueError(f"'psf' has {len(items)} PSFs for {n} images")
    return items, False


def noise_of(i: int, err: list | None, var: list | None, weight: list | None) -> dict[str, Any]:
    """The keyword arguments of galaxy ``i``'s noise (at most one of err, var, weight)."""
    return {k: v[i] for k, v in (("err", err), ("var", var), ("weight", weight)) if v is not None}


def positions(x0: Any, y0: Any, n: int) -> list[tuple[Any, Any]]:
    """Per-galaxy requested positions (None entries: the cutout's centre)."""
    out = []
    for name, value in (("x0", x0), ("y0", y0)):
        if value is None:
            out.append([None] * n)
            continue
        values = list(np.atleast_1d(np.asarray(value, dtype=object)))
        if len(values) != n:
            raise ValueError(f"'{name}' has {len(values)} entries for {n} images")
        out.append(values)
    return list(zip(*out, strict=True))


def _whole(name: str, value: Any, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"'{name}' must be a whole number >= 1{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return int(value)


def check_settings(*, batch_size: Any, num_components: Any, psf_components: Any, psf_oversamp: Any,
                   zpt: Any, sky_type: Any, render_mode: Any, strategy: Any, dtype: Any) -> np.dtype:
    """Validate the scalar settings up front; returns the numpy dtype of the fits."""
    _whole("batch_size", batch_size)
    _whole("num_components", num_components)
    _whole("psf_components", psf_components)
    for name, value in (("psf_oversamp", psf_oversamp), ("zpt", zpt)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"'{name}' must be a finite number, got {value!r}")
    if psf_oversamp <= 0:
        raise ValueError(f"'psf_oversamp' must be > 0, got {psf_oversamp!r}")
    if sky_type is not None and sky_type not in SKY_TYPES:
        raise ValueError(f"'sky_type' must be 'tilted-plane', 'flat' or None, got {sky_type!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"'render_mode' must be one of {RENDER_MODES}, got {render_mode!r}")
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"'strategy' must be one of {STRATEGIES}, got {strategy!r}")
    try:
        dt = np.dtype(jnp.dtype(dtype if dtype is not None else jnp.float64))
    except TypeError:
        raise ValueError(f"'dtype' must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"'dtype' must be float32 or float64, got {dtype!r}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 needs JAX's x64 mode (IMCASCADE_JAX_X64=1, the default)")
    return dt


def solver_options(options: Any, dt: np.dtype) -> _fit.SolverOptions:
    """Solver options; in float32 the default tolerances are 1e-6 instead of 1e-8."""
    if options is None:
        return _fit.SolverOptions() if dt == np.float64 else \
            _fit.SolverOptions(ftol=1e-6, xtol=1e-6, gtol=1e-6)
    if isinstance(options, _fit.SolverOptions):
        return options
    if not isinstance(options, dict):
        raise TypeError(f"'options' must be a SolverOptions or a dict, got {type(options).__name__}")
    return _fit.solver_options(dict(options), "options")
