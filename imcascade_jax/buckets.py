"""Compile once per model structure: least-squares fits of images of any shape, on tiles.

A compiled fit depends on the shapes of its arrays, so a process fitting cutouts of many sizes
would compile (3-5 CPU seconds) for each. Here the image is laid out as a stack of tiles
(:mod:`imcascade_jax.tiles`: 32x32-pixel tiles in a stack of 256 slots, 4x more for each larger
class) and the compiled solver loops over the tiles the image has. Every image up to 512x512
pixels thus shares one compiled program per model structure (component and PSF-component
counts, sky, renderer); larger images one per capacity class. Pixels beyond the image carry zero
weight: the fit is the one of the image itself (equal to rounding; the tests check 1e-8).

The 20 cutouts of ``benchmarks/many_shapes.py`` (60-300 px) need 2 programs (1.1's default
component counts, 7 up to 100 rows and 9 above, are two structures), on 1.16x the images'
pixels. On images larger than 512x512 pixels the solver also leaves out, on each tile far from
the centre, the narrower half of the components, exactly 0 there under the hybrid renderer's
cut-off (:func:`imcascade_jax.tiles.narrow_components`): on large frames most tiles are far.

Pixel coordinates are unchanged (a tile knows its offset), and the tilted-plane sky keeps the
image's reference point (``Model.sky_centre``). Results come back on the image's own shape.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import fit as _fit
from imcascade_jax import tiles
from imcascade_jax._config import compilation_cache_dir
from imcascade_jax.fit_inputs import check_problem, check_shapes, is_concrete
from imcascade_jax.model import Model

logger = logging.getLogger("imcascade_jax")

_PROGRAMS: dict[Any, Any] = {}
_STATS = {"compiled": 0, "compile_seconds": 0.0, "fits": 0, "pixels": 0, "padded_pixels": 0}


def compile_stats() -> dict[str, float]:
    """Programs compiled by :func:`least_squares` in this process and the seconds spent.

    Returns
    -------
    dict
        ``{'compiled': int, 'compile_seconds': float, 'fits': int, 'pixels': int,
        'padded_pixels': int}`` (a copy): also the fits run, the images' pixels and the
        pixels of the tiles they were fitted on.
    """
    return dict(_STATS)


def tiled_problem(model: Model, data: Any, weight: Any, x0: Any, lb: Any, ub: Any):
    """The arguments of :data:`imcascade_jax.tiles.solve_tiles_jit` for an image's problem.

    Parameters
    ----------
    model, data, weight, x0, lb, ub
        As :func:`imcascade_jax.fit.least_squares`.

    Returns
    -------
    args : tuple
        ``(tile_model, data_tiles, weight_tiles, offsets, n_tiles, scale, x0, lb, ub)``.
    grid : imcascade_jax.tiles.TileGrid
        The layout (:func:`imcascade_jax.tiles.from_tiles` puts residuals back).
    narrow : tuple of int or None
        The components left out on far tiles (the compiled program's static argument): for
        images larger than ``MIN_TILES`` tiles (512x512 pixels) only.
    """
    dtype = model.dtype
    grid = tiles.tile_grid(model.shape)
    centre = model.sky_centre
    if centre is None:
        centre = np.array([model.shape[0] / 2.0, model.shape[1] / 2.0])
    tile_model = model.replace(shape=grid.tile, sky_centre=jnp.asarray(centre, dtype))
    data, weight = (np.asarray(a, dtype) for a in (data, weight))
    # The solver's unit as the solver computes it (the same values, so the same power of two).
    scale = _fit.data_scale(*_fit.usable_data(data, weight, xp=np), xp=np)
    stacks = (jnp.asarray(tiles.to_tiles(a, grid)) for a in (data, weight))
    vectors = (jnp.asarray(v, dtype) for v in (x0, lb, ub))
    args = (tile_model, *stacks, jnp.asarray(grid.offsets), np.int32(grid.n_tiles),
            jnp.asarray(scale, dtype), *vectors)
    # Skipping the narrow components on far tiles costs a second loop body: ~1.4 s more
    # compilation on the CPU for 17-45% less run time (150x150 to 300x300). Worth it where fits
    # are long (images beyond 512x512); cutouts, fitted once each, compile faster without.
    large = grid.capacity > tiles.MIN_TILES
    return args, grid, tiles.narrow_components(model) if large else None


def _key(args, options, periodic_phi, narrow):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    avals = tuple((tuple(x.shape) if hasattr(x, "shape") else np.shape(x),
                   np.result_type(getattr(x, "dtype", x)).name) for x in leaves)
    return treedef, avals, options, bool(periodic_phi), narrow


def _announce(model: Model, grid: tiles.TileGrid, log: logging.Logger) -> None:
    where = compilation_cache_dir()
    cached = f"kept in {where} for next time" if where else "compilation cache off"
    side = int(np.sqrt(grid.capacity * grid.tile[0] * grid.tile[1]))
    log.info("Compiling the least-squares fit for images up to %dx%d pixels, %d components, "
             "%s (once per model structure; %s)", side, side, model.n_gauss,
             f"{model.n_psf} PSF components" if model.has_psf else "no PSF", cached)


def least_squares(model: Model, data: Any, weight: Any, x0: Any, lb: Any, ub: Any,
                  options: _fit.SolverOptions = _fit.DEFAULT_OPTIONS,
                  periodic_phi: bool = True, log: logging.Logger | None = None):
    """:func:`imcascade_jax.fit.least_squares` on the image laid out as tiles.

    Compiles a program per model structure and tile capacity (announced at INFO level on the
    ``imcascade_jax`` logger) unless one is compiled already. ``options.band_pixels`` plays
    no part (a tile is the unit of work).

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
        As :func:`imcascade_jax.fit.least_squares`, as NumPy arrays, the residuals of
        ``model.shape``.
    """
    check_shapes(model, data, weight, x0, lb, ub)
    if is_concrete(data, weight, x0, lb, ub):
        check_problem(model, data, weight, x0, lb, ub, periodic_phi)
    args, grid, narrow = tiled_problem(model, data, weight, x0, lb, ub)
    key = _key(args, options, periodic_phi, narrow)
    program = _PROGRAMS.get(key)
    if program is None:
        _announce(model, grid, log or logger)
        start = time.perf_counter()
        program = tiles.solve_tiles_jit.lower(*args, options, periodic_phi, narrow).compile()
        _STATS["compiled"] += 1
        _STATS["compile_seconds"] += time.perf_counter() - start
        _PROGRAMS[key] = program
    _STATS["fits"] += 1
    _STATS["pixels"] += model.shape[0] * model.shape[1]
    _STATS["padded_pixels"] += grid.n_tiles * grid.tile[0] * grid.tile[1]
    # Reassembled in NumPy: a JAX operation on the image's shape would compile for each shape.
    result = jax.device_get(program(*args))
    return result._replace(residuals=tiles.from_tiles(result.residuals, grid))
