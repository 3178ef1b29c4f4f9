"""Compile once per shape family: least-squares fits on images padded to a few shapes.

A compiled fit depends on the image shape, so a process fitting cutouts of many sizes would
compile (4-10 CPU seconds) for each. Here an image is padded with zero data and zero weight:
padded pixels add nothing to chi2, to the gradient or to ``J^T J``, so the fit is the same one
(equal to rounding; the tests check 1e-8), and images of different shapes share a program.

Which shape an image is fitted on:

- its own bucket (:func:`bucket_shape`): each side rounded up to a multiple of 16, at least
  112 (:data:`MIN_BUCKET`; small fits are cheap, compilations are not), square for near-square
  images (sides within ``SQUARE_ASPECT``), so that a square cutout and a slightly
  rectangular one of similar size share it. A single 150x150 fit runs on 160x160 (1.14x the
  pixels; a compiled fit step costs about its pixel count);
- unless a program already compiled in this process, for the same model structure, covers the
  image with at most :data:`REUSE_AREA` times its own bucket's area (:func:`reusable`): then
  the smallest such one is reused (:func:`choose_shape`). The choice thus depends on what the
  process fitted before; the answer does not (to rounding).

The 20 cutouts of ``benchmarks/many_shapes.py`` (60-300 px, in their order) need 5 programs (1.1's
default component counts, 7 up to 100 rows and 9 above, are different programs) with the padded
area 1.25x the images' (a fixed 1.5x grid of sizes, 64/96/136/208/304, needed 6 programs, at
1.38x, and padded a 150x150 image to 208x208, 1.92x). On the CPU one avoided compilation pays
for many padded fit steps; on a fit of one image, padding is all cost.

Pixel coordinates are unchanged (padding is appended after the last row and column), so
centres need no shift; the tilted-plane sky keeps its reference point through
``Model.sky_centre``. Results are cropped back to the image's own shape.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import fit as _fit
from imcascade_jax._config import compilation_cache_dir
from imcascade_jax.fit_inputs import check_problem, check_shapes, is_concrete
from imcascade_jax.model import Model

logger = logging.getLogger("imcascade_jax")

#: Bucket sizes along one axis are multiples of this ...
BUCKET_STEP = 16
#: ... and at least this: every image up to 112 px (1.1's 7-component images, up to 100 rows,
#: included) shares one program per model structure; a fit of 112x112 px is cheap.
MIN_BUCKET = 112
#: Images whose longer side is at most this factor of the shorter one get a square bucket.
SQUARE_ASPECT = 1.15
#: A program compiled for a larger shape is reused when its area is at most this factor of the
#: image's own bucket area.
REUSE_AREA = 2.0


def bucket_size(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`BUCKET_STEP`, at least :data:`MIN_BUCKET`.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"'n' must be a positive integer, got {n!r}")
    return max(MIN_BUCKET, BUCKET_STEP * math.ceil(int(n) / BUCKET_STEP))


def bucket_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The image's own bucket: the padded shape it is fitted on when no larger program is reused.

    Each axis is bucketed (:func:`bucket_size`); a near-square image (longer side at most
    ``SQUARE_ASPECT`` times the shorter) gets the square bucket of its longer side.
    """
    if len(shape) != 2:
        raise ValueError(f"'shape' must have two entries, got {tuple(shape)}")
    nx, ny = bucket_size(shape[0]), bucket_size(shape[1])
    if max(shape) <= SQUARE_ASPECT * min(shape):
        nx = ny = max(nx, ny)
    return nx, ny


def reusable(shape: Sequence[int], compiled: Sequence[int]) -> bool:
    """Whether an image of ``shape`` may be fitted on a program compiled for ``compiled``.

    ``compiled`` must cover the image on both axes, with an area of at most
    :data:`REUSE_AREA` times the image's own bucket's.
    """
    own = bucket_shape(shape)
    return (compiled[0] >= shape[0] and compiled[1] >= shape[1]
            and compiled[0] * compiled[1] <= REUSE_AREA * own[0] * own[1])


def choose_shape(shape: Sequence[int], compiled: Iterable[Sequence[int]]) -> tuple[int, int]:
    """The shape an image of ``shape`` is fitted on, given the shapes already compiled.

    The smallest (in area) of ``compiled`` that :func:`reusable` allows, else the image's own
    :func:`bucket_shape`. Which program an image gets thus depends on what was compiled before
    in the process; the fit is the same to rounding (about 1e-12 relative) on any of them.
    """
    options = [(int(s[0]), int(s[1])) for s in compiled if reusable(shape, s)]
    return min(options, key=lambda s: (s[0] * s[1], s)) if options else bucket_shape(shape)


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


def pad_problem(model: Model, data: Any, weight: Any, shape: Sequence[int] | None = None):
    """Pad a fitting problem with zero data and zero weight.

    Parameters
    ----------
    model : Model
    data, weight : array_like, shape ``model.shape``
    shape : (int, int), optional
        The padded shape, at least ``model.shape``; default :func:`bucket_shape`.

    Returns
    -------
    padded_model : Model
    padded_data, padded_weight : numpy.ndarray, shape ``shape``
    crop : tuple of slice
        Index that cuts a padded image back to ``model.shape``.
    """
    data, weight = np.asarray(data), np.asarray(weight)
    if data.shape != tuple(model.shape) or weight.shape != tuple(model.shape):
        raise ValueError(f"'data' {data.shape} and 'weight' {weight.shape} must have the "
                         f"model's shape {tuple(model.shape)}")
    target = bucket_shape(model.shape) if shape is None else (int(shape[0]), int(shape[1]))
    if target[0] < data.shape[0] or target[1] < data.shape[1]:
        raise ValueError(f"'shape' {target} is smaller than the model's {tuple(model.shape)}")
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
# Shapes with a compiled program (for any model structure).
_SHAPES: set[tuple[int, int]] = set()
_STATS = {"compiled": 0, "compile_seconds": 0.0, "fits": 0, "pixels": 0, "padded_pixels": 0}


def compile_stats() -> dict[str, float]:
    """Programs compiled by :func:`least_squares` in this process and the seconds spent.

    Returns
    -------
    dict
        ``{'compiled': int, 'compile_seconds': float, 'fits': int, 'pixels': int,
        'padded_pixels': int}`` (a copy): also the fits run and their pixels before and after
        padding.
    """
    return dict(_STATS)


def _key(args, options, periodic_phi):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    avals = tuple((tuple(x.shape) if hasattr(x, "shape") else np.shape(x),
                   np.result_type(getattr(x, "dtype", x)).name) for x in leaves)
    return treedef, avals, options, bool(periodic_phi)


def _fit_shape(model: Model, vectors, options, periodic_phi) -> tuple[int, int]:
    """:func:`choose_shape` among the shapes compiled for this model's structure."""
    def compiled(shape):
        image = jax.ShapeDtypeStruct(shape, model.dtype)
        return _key((pad_model(model, shape), image, image, *vectors), options,
                    periodic_phi) in _PROGRAMS

    return choose_shape(model.shape, [s for s in _SHAPES if reusable(model.shape, s) and compiled(s)])


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

    Pads to :func:`choose_shape`'s shape: compiles a program per bucket shape and model
    structure (announced at INFO level on the ``imcascade_jax`` logger) unless a compiled one
    may be reused.

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
    dtype = model.dtype
    vectors = tuple(jnp.asarray(v, dtype) for v in (x0, lb, ub))
    target = _fit_shape(model, vectors, options, periodic_phi)
    padded_model, data_p, weight_p, crop = pad_problem(model, data, weight, target)
    args = (padded_model, jnp.asarray(data_p, dtype), jnp.asarray(weight_p, dtype), *vectors)
    key = _key(args, options, periodic_phi)
    program = _PROGRAMS.get(key)
    if program is None:
        _announce(padded_model, model.shape, log or logger)
        start = time.perf_counter()
        program = _fit.solve_jit.lower(*args, options, periodic_phi).compile()
        _STATS["compiled"] += 1
        _STATS["compile_seconds"] += time.perf_counter() - start
        _PROGRAMS[key] = program
        _SHAPES.add(tuple(padded_model.shape))
    _STATS["fits"] += 1
    _STATS["pixels"] += model.shape[0] * model.shape[1]
    _STATS["padded_pixels"] += target[0] * target[1]
    # Cropped in NumPy: slicing a JAX array would compile a program for each image shape.
    result = jax.device_get(program(*args))
    return crop_result(result, padded_model.shape, crop)
