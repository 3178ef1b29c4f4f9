"""Compile once per shape family: least-squares fits on images padded to a few bucket shapes.

A compiled fit depends on the image shape, so a process fitting cutouts of many sizes would
compile (5-8 CPU seconds) for each. Here each axis is padded up to the next size of a fixed
geometric grid (:data:`BUCKET_SIZES`: ``40 * 1.5^k`` rounded up to a multiple of 8) with zero
data and zero weight: padded pixels add nothing to chi2, to the gradient or to ``J^T J``, so
the fit is the same one (equal to rounding), and every image whose sizes fall in the same grid
interval shares one compiled program. Near-square images (sides within
``SQUARE_ASPECT`` of each other) get a square bucket, so that a square cutout and a slightly
rectangular one of similar size share it too.

Images from 60 to 300 px fall in five intervals per axis (64, 96, 136, 208, 304); 20 cutouts of
random sizes in that range need 4-6 programs (times 2 when both of 1.1's default component
counts, 7 and 9, occur in one interval). The price is pixels: a compiled fit step costs about
its pixel count, and the padded area is on average 1.5x the image's (sides 60 to 300 px), at
worst 2.3x for square images (137x137 -> 208x208) and 2.6x for near-square ones (120x137 ->
208x208). On the CPU one avoided compilation (5-8 s) pays for hundreds of padded fit steps.

Pixel coordinates are unchanged (padding is appended after the last row and column), so
centres need no shift; the tilted-plane sky keeps its reference point through
``Model.sky_centre``. Results are cropped back to the image's own shape.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import fit as _fit
from imcascade_jax._config import compilation_cache_dir
from imcascade_jax.fit_inputs import check_problem, check_shapes, is_concrete
from imcascade_jax.model import Model

logger = logging.getLogger("imcascade_jax")

_GRID_START, _GRID_RATIO, _GRID_STEP = 40, 1.5, 8
#: Images whose longer side is at most this factor of the shorter one get a square bucket.
SQUARE_ASPECT = 1.15


def _grid(limit: int = 20000) -> tuple[int, ...]:
    sizes, k = [], 0
    while not sizes or sizes[-1] < limit:
        size = _GRID_STEP * math.ceil(_GRID_START * _GRID_RATIO**k / _GRID_STEP)
        if not sizes or size > sizes[-1]:
            sizes.append(size)
        k += 1
    return tuple(sizes)


#: Bucket sizes along one axis: ``40 * 1.5^k`` rounded up to a multiple of 8.
BUCKET_SIZES = _grid()


def bucket_size(n: int) -> int:
    """The smallest bucket size >= ``n`` (``n`` itself for ``n <= 16``: tiny images are cheap).

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"'n' must be a positive integer, got {n!r}")
    n = int(n)
    if n <= 16:
        return n
    for size in BUCKET_SIZES:
        if size >= n:
            return size
    return _GRID_STEP * math.ceil(n / _GRID_STEP)


def bucket_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The padded shape an image of ``shape`` (nx, ny) is fitted on.

    Each axis is bucketed (:func:`bucket_size`); a near-square image (longer side at most
    ``SQUARE_ASPECT`` times the shorter) gets the square bucket of its longer side.
    """
    if len(shape) != 2:
        raise ValueError(f"'shape' must have two entries, got {tuple(shape)}")
    nx, ny = bucket_size(shape[0]), bucket_size(shape[1])
    if max(shape) <= SQUARE_ASPECT * min(shape):
        nx = ny = max(nx, ny)
    return nx, ny


def pad_model(model: Model, shape: Sequence[int]) -> Model:
    """``model`` on a larger frame ``shape``, same pixel coordinates and sky reference point."""
    nx, ny = model.shape
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] < nx or shape[1] < ny:
        raise ValueError(f"'shape' {shape} is smaller than the model's {model.shape}")
    centre = model.sky_centre
    if centre is None:
        centre = jnp.asarray([nx / 2.0, ny / 2.0], model.dtype)
    return model.replace(shape=shape, sky_centre=centre)


def pad_problem(model: Model, data: Any, weight: Any):
    """Pad a fitting problem to its bucket shape with zero data and zero weight.

    Parameters
    ----------
    model : Model
    data, weight : array_like, shape ``model.shape``

    Returns
    -------
    padded_model : Model
    padded_data, padded_weight : numpy.ndarray, shape ``bucket_shape(model.shape)``
    crop : tuple of slice
        Index that cuts a padded image back to ``model.shape``.
    """
    data, weight = np.asarray(data), np.asarray(weight)
    if data.shape != tuple(model.shape) or weight.shape != tuple(model.shape):
        raise ValueError(f"'data' {data.shape} and 'weight' {weight.shape} must have the "
                         f"model's shape {tuple(model.shape)}")
    target = bucket_shape(model.shape)
    pad = ((0, target[0] - data.shape[0]), (0, target[1] - data.shape[1]))
    crop = (slice(0, model.shape[0]), slice(0, model.shape[1]))
    return pad_model(model, target), np.pad(data, pad), np.pad(weight, pad), crop


def crop_result(result, padded_shape: Sequence[int], crop: tuple[slice, slice]):
    """Cut every image-shaped field (trailing axes ``padded_shape``) of a NamedTuple result."""
    padded_shape = tuple(padded_shape)
    changes = {}
    for name, value in zip(result._fields, result, strict=True):
        if value is not None and np.ndim(value) >= 2 and tuple(np.shape(value)[-2:]) == padded_shape:
            changes[name] = value[(..., *crop)]
    return result._replace(**changes)


# -- compiled programs -------------------------------------------------------------------------
_PROGRAMS: dict[Any, Any] = {}
_STATS = {"compiled": 0, "compile_seconds": 0.0}


def compile_stats() -> dict[str, float]:
    """Programs compiled by :func:`least_squares` in this process and the seconds spent.

    Returns
    -------
    dict
        ``{'compiled': int, 'compile_seconds': float}`` (a copy).
    """
    return dict(_STATS)


def _key(args, options, periodic_phi):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    avals = tuple((np.shape(x), np.result_type(getattr(x, "dtype", x)).name) for x in leaves)
    return treedef, avals, options, bool(periodic_phi)


def _announce(model: Model, original: Sequence[int], log: logging.Logger) -> None:
    nx, ny = original
    padded = "" if tuple(original) == tuple(model.shape) else \
        f" (padded to {model.shape[0]}x{model.shape[1]})"
    where = compilation_cache_dir()
    cached = f"kept in {where} for next time" if where else "compilation cache off"
    log.info("Compiling the least-squares fit for %dx%d images%s, %d components, %s "
                "(once per shape family; %s)", nx, ny, padded, model.n_gauss,
                f"{model.n_psf} PSF components" if model.has_psf else "no PSF", cached)


def least_squares(model: Model, data: Any, weight: Any, x0: Any, lb: Any, ub: Any,
                  options: _fit.SolverOptions = _fit.DEFAULT_OPTIONS,
                  periodic_phi: bool = True, log: logging.Logger | None = None):
    """:func:`imcascade_jax.fit.least_squares` on the bucket-padded problem, cropped back.

    Compiles one program per bucket shape and model structure (announced at INFO level on the
    ``imcascade_jax`` logger) and reuses it for every image of that family.

    Parameters
    ----------
    model, data, weight, x0, lb, ub, options, periodic_phi
        As :func:`imcascade_jax.fit.least_squares`; ``data`` and ``weight`` of
        ``model.shape``.
    log : logging.Logger, optional
        Where the one-line compilation note goes (default: the ``imcascade_jax`` logger; a
        Fitter passes its own, so that its ``verbose`` shows it).

    Returns
    -------
    FitResult
        As :func:`imcascade_jax.fit.least_squares`, as NumPy arrays, every image-shaped field
        (residuals, Jacobian) cropped to ``model.shape``; other fields pass through.
    """
    check_shapes(model, data, weight, x0, lb, ub)
    if is_concrete(data, weight, x0, lb, ub):
        check_problem(model, data, weight, x0, lb, ub, periodic_phi)
    padded_model, data_p, weight_p, crop = pad_problem(model, data, weight)
    dtype = model.dtype
    args = (padded_model, jnp.asarray(data_p, dtype), jnp.asarray(weight_p, dtype),
            jnp.asarray(x0, dtype), jnp.asarray(lb, dtype), jnp.asarray(ub, dtype))
    key = _key(args, options, periodic_phi)
    program = _PROGRAMS.get(key)
    if program is None:
        _announce(padded_model, model.shape, log or logger)
        start = time.perf_counter()
        program = _fit.solve_jit.lower(*args, options, periodic_phi).compile()
        _STATS["compiled"] += 1
        _STATS["compile_seconds"] += time.perf_counter() - start
        _PROGRAMS[key] = program
    # Cropped in NumPy: slicing a JAX array would compile a program for each image shape.
    result = jax.device_get(program(*args))
    return crop_result(result, padded_model.shape, crop)
