"""One compiled least-squares fit for images of any shape: the image as a stack of tiles.

A compiled XLA program is specialised to the shapes of its arrays, so a fit compiled for one
image shape cannot run on another, and compiling one costs seconds on the CPU. Here an image
is cut into tiles of :data:`TILE_SHAPE` pixels, the tiles are stacked into an array of a fixed
number of slots (the *capacity*: :data:`MIN_TILES` times a power of 4) and the solver loops over
the tiles the image actually has, a number passed as data. The program then depends on the tile
shape and the capacity only: every image up to ``MIN_TILES`` tiles (512x512 pixels) shares one
compiled fit per model structure, larger ones one per capacity.

A tile is the model of shape :data:`TILE_SHAPE` whose galaxy sits at ``(x0 - r0, y0 - c0)``
(pixel coordinates are offsets from the centre) for a tile starting at pixel ``(r0, c0)``, with
the tilted-plane sky referred to the whole image's reference point (its ``sky_centre`` moved by
``-(r0, c0)``): every Jacobian column is the same on a tile as on the image, and the normal
equations are sums over tiles. Pixels of the last tiles beyond the image, and the unused slots,
carry zero weight: they add nothing to chi2, to ``J^T J`` or to ``J^T r``.

Small tiles pad little. On the 20 cutouts of ``benchmarks/many_shapes.py`` 32x32 tiles
fitted faster than 32x64 or 64x64 ones, and 2, 4 or 8 tiles per loop iteration
(:data:`TILES_PER_STEP`) equally fast within the machine's noise. Optionally (``narrow``), on
tiles far from the centre the narrower half of the components, exactly 0 there (the hybrid renderer's 5-sigma
cut-off), is left out (:func:`narrow_components`): the same sums, with less work where most of
a large frame is sky, for a second loop body to compile.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import fit as _fit
from imcascade_jax.model import HYBRID_NSIGMA, Model
from imcascade_jax.normal_equations import NormalEquations, piece_equations, zero_equations
from imcascade_jax.render import PIXEL_VAR, render

__all__ = ["TILE_SHAPE", "MIN_TILES", "TileGrid", "tile_grid", "to_tiles", "from_tiles",
           "tile_model", "narrow_components", "tiled_equations", "tiled_residuals",
           "solve_tiles_jit"]

#: Pixels of a tile (rows, columns).
TILE_SHAPE = (32, 32)
#: Tiles evaluated together in one iteration of the solver's loop over tiles.
TILES_PER_STEP = 4
#: The smallest capacity (tiles): one program for every image up to 512x512 pixels; larger
#: capacities grow by 4x.
MIN_TILES = 256


class TileGrid(NamedTuple):
    """How an image is laid out as a stack of tiles.

    Attributes
    ----------
    shape : (int, int)
        The image's shape.
    tile : (int, int)
        A tile's shape.
    grid : (int, int)
        Tiles along each axis (the image padded to ``grid * tile``).
    capacity : int
        Slots in the stack (``>= n_tiles``); the compiled program depends on it.
    offsets : numpy.ndarray, shape (capacity, 2)
        Pixel ``(row, column)`` of each tile's first pixel (0 for unused slots).
    """

    shape: tuple[int, int]
    tile: tuple[int, int]
    grid: tuple[int, int]
    capacity: int
    offsets: np.ndarray

    @property
    def n_tiles(self) -> int:
        """Tiles the image occupies."""
        return self.grid[0] * self.grid[1]


def tile_grid(shape, tile=TILE_SHAPE, min_tiles: int = MIN_TILES) -> TileGrid:
    """The tile layout of an image of ``shape``.

    Parameters
    ----------
    shape : (int, int)
        Image shape, each side >= 1.
    tile : (int, int)
        Tile shape.
    min_tiles : int
        Smallest capacity; the capacity is ``min_tiles * 4**k``, the least that holds the
        image.

    Returns
    -------
    TileGrid
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"'shape' must be two positive integers, got {shape}")
    tile = tuple(int(t) for t in tile)
    if len(tile) != 2 or min(tile) < 1:
        raise ValueError(f"'tile' must be two positive integers, got {tile}")
    if int(min_tiles) < 1:
        raise ValueError(f"'min_tiles' must be >= 1, got {min_tiles}")
    grid = (-(-shape[0] // tile[0]), -(-shape[1] // tile[1]))
    capacity = int(min_tiles)
    while capacity < grid[0] * grid[1]:
        capacity *= 4
    rows, cols = np.meshgrid(np.arange(grid[0]) * tile[0], np.arange(grid[1]) * tile[1],
                             indexing="ij")
    offsets = np.zeros((capacity, 2), np.int32)
    offsets[:grid[0] * grid[1]] = np.stack([rows.ravel(), cols.ravel()], axis=1)
    return TileGrid(shape, tile, grid, capacity, offsets)


def to_tiles(image: Any, layout: TileGrid) -> np.ndarray:
    """The image as a stack of tiles, shape ``(capacity, *tile)``; zeros beyond the image."""
    image = np.asarray(image)
    if image.shape != layout.shape:
        raise ValueError(f"'image' must have shape {layout.shape}, got {image.shape}")
    (gr, gc), (tr, tc) = layout.grid, layout.tile
    padded = np.zeros((gr * tr, gc * tc), image.dtype)
    padded[:image.shape[0], :image.shape[1]] = image
    stack = np.zeros((layout.capacity, tr, tc), image.dtype)
    stack[:gr * gc] = padded.reshape(gr, tr, gc, tc).transpose(0, 2, 1, 3).reshape(-1, tr, tc)
    return stack


def from_tiles(stack: Any, layout: TileGrid) -> np.ndarray:
    """The image back from its stack of tiles (:func:`to_tiles`'s inverse on the image)."""
    stack = np.asarray(stack)
    (gr, gc), (tr, tc) = layout.grid, layout.tile
    image = stack[:gr * gc].reshape(gr, gc, tr, tc).transpose(0, 2, 1, 3).reshape(gr * tr, gc * tc)
    return image[:layout.shape[0], :layout.shape[1]]


def tile_model(model: Model, offset) -> tuple[Model, Any]:
    """The tile model at pixel ``offset = (r0, c0)`` (may be traced) and the parameter shift.

    ``model`` has the tile's shape and the whole image's sky reference point; returns the model
    with that point moved by ``-offset`` and the vector to add to a parameter vector (``x0``
    and ``y0`` move by ``-offset``).
    """
    dtype = model.dtype
    offset = jnp.asarray(offset, dtype)
    centre = model.sky_centre
    if centre is None:
        raise ValueError("a tiled model needs the image's 'sky_centre'")
    shift = jnp.zeros(model.n_params, dtype).at[:2].set(-offset)
    return model.replace(sky_centre=jnp.asarray(centre, dtype) - offset), shift


def narrow_components(model: Model) -> tuple[int, ...] | None:
    """The components :func:`tiled_equations` skips on tiles far from the centre (static).

    The narrower half of the cascade (``n_gauss // 2`` components by width; computed from
    concrete widths, and the default widths, in increasing order, always give the same
    answer, so one compiled program serves every galaxy), or ``None`` where nothing is
    skipped: renderers other than ``'hybrid'`` (no cut-off: no component is ever exactly 0)
    and single components. On the 20 cutouts of ``benchmarks/many_shapes.py`` the narrower
    half was as fast as 0.6 of the components and faster than 0.7.
    """
    n = model.n_gauss // 2
    if model.render_mode != "hybrid" or n < 1:
        return None
    return tuple(sorted(int(k) for k in np.argsort(np.asarray(model.sig), kind="stable")[:n]))


def _far_half_width(model: Model, narrow: tuple[int, ...]):
    """Offset along an axis beyond which every narrow component is exactly 0 (hybrid cut-off).

    A convolved component's cut-off ellipse (5 sigma, pixel variance included) spans
    ``5 sqrt(c + 1/12)`` along an axis of marginal variance ``c``, at most the squared major
    width ``sig_k^2 + max psf_sig^2``; one pixel more guards against rounding.
    """
    major2 = jnp.max(model.sig[np.asarray(narrow)]) ** 2 + jnp.max(model.psf_sig) ** 2
    return HYBRID_NSIGMA * jnp.sqrt(major2 + PIXEL_VAR) + 1.0


def _tile_order(model: Model, narrow, param, offsets, n_tiles):
    """Tiles near the centre (every component) first, then far ones, then unused slots."""
    h = _far_half_width(model, narrow)
    size = jnp.asarray(model.shape, param.dtype)[None, :]
    start = offsets.astype(param.dtype)
    centre = param[None, :2]
    # Distance along each axis from the centre to the tile's nearest pixel centre.
    gap = jnp.maximum(jnp.maximum(start - centre, centre - (start + size - 1.0)), 0.0)
    far = jnp.any(gap > h, axis=1)
    used = jnp.arange(offsets.shape[0], dtype=jnp.int32) < n_tiles
    key = jnp.where(used, far.astype(jnp.int32), 2)
    order = jnp.argsort(key, stable=True)
    return order, jnp.sum(key == 0).astype(jnp.int32)


def _wide_part(model: Model, narrow: tuple[int, ...]):
    """The model without the narrow components, and the parameters it keeps (indices)."""
    n = model.n_gauss
    wide = [k for k in range(n) if k not in narrow]
    keep = np.r_[0:4, 4 + np.asarray(wide, int), 4 + n + np.arange(model.n_sky)]
    pick = lambda t: None if t is None else tuple(t[k] for k in wide)  # noqa: E731
    sub = model.replace(sig=model.sig[np.asarray(wide)], windows=pick(model.windows),
                        exact=pick(model.exact))
    return sub, keep


def _accumulate(model, jacobian_fn, param, data, sqrt_w, offsets, order, start, stop, zero):
    """Sum the equations of the tiles at positions ``[start, stop)`` of ``order``.

    :data:`TILES_PER_STEP` tiles per loop iteration (``vmap``). Positions beyond ``stop`` in
    the last group are evaluated with zero weight (they add nothing).
    """
    group = TILES_PER_STEP
    last = order.shape[0] - 1

    def one(offset, data_tile, sqrt_w_tile):
        sub, shift = tile_model(model, offset)
        return piece_equations(sub, jacobian_fn, param + shift, data_tile, sqrt_w_tile)

    def body(k, acc):
        pos = start + k * group + jnp.arange(group, dtype=jnp.int32)
        idx = order[jnp.minimum(pos, last)]
        valid = (pos < stop).astype(sqrt_w.dtype)[:, None, None]
        t = jax.vmap(one)(offsets[idx], data[idx], sqrt_w[idx] * valid)
        return NormalEquations(acc.cost + jnp.sum(t.cost), acc.jtj + jnp.sum(t.jtj, axis=0),
                               acc.grad + jnp.sum(t.grad, axis=0), acc.finite & jnp.all(t.finite))

    n_groups = (stop - start + group - 1) // group
    return jax.lax.fori_loop(jnp.int32(0), n_groups.astype(jnp.int32), body, zero)


def tiled_equations(model: Model, jacobian_fn, param: jax.Array, data: jax.Array,
                    sqrt_w: jax.Array, offsets: jax.Array, n_tiles,
                    narrow: tuple[int, ...] | None = None) -> NormalEquations:
    """Cost, ``J^T J`` and ``J^T r`` of ``r = sqrt_w (data - model)``, summed over tiles.

    Parameters
    ----------
    model : Model
        Of the tile's shape, with the image's ``sky_centre``.
    jacobian_fn : callable
        ``jacobian_fn(model, param) -> (image, d_image)``.
    param : jax.Array, shape (Ndof,)
        In image coordinates.
    data, sqrt_w : jax.Array, shape (capacity, *tile)
        Stacks of tiles (:func:`to_tiles`); zero weight beyond the image.
    offsets : jax.Array, shape (capacity, 2)
    n_tiles : int or scalar array
        Tiles evaluated (the first ``n_tiles`` of the stack); may be traced.
    narrow : tuple of int, optional
        Components that are exactly 0 on tiles far from the centre (hybrid renderer's
        cut-off; :func:`narrow_components`): there the Jacobian is evaluated without them
        (their columns are 0), which is the same sum with less work. ``None``: every
        component on every tile.
    """
    n, dtype = param.shape[0], param.dtype
    zero = zero_equations(n, dtype)
    if narrow is None:
        order = jnp.arange(offsets.shape[0], dtype=jnp.int32)
        return _accumulate(model, jacobian_fn, param, data, sqrt_w, offsets, order,
                           jnp.int32(0), jnp.asarray(n_tiles, jnp.int32), zero)
    order, n_near = _tile_order(model, narrow, param, offsets, n_tiles)
    near = _accumulate(model, jacobian_fn, param, data, sqrt_w, offsets, order, jnp.int32(0),
                       n_near, zero)
    sub, keep = _wide_part(model, narrow)
    far = _accumulate(sub, jacobian_fn, param[keep], data, sqrt_w, offsets, order, n_near,
                      jnp.asarray(n_tiles, jnp.int32), zero_equations(len(keep), dtype))
    return NormalEquations(near.cost + far.cost,
                           near.jtj.at[np.ix_(keep, keep)].add(far.jtj),
                           near.grad.at[keep].add(far.grad), near.finite & far.finite)


def tiled_residuals(model: Model, param: jax.Array, data: jax.Array, sqrt_w: jax.Array,
                    offsets: jax.Array, n_tiles) -> jax.Array:
    """Residuals ``sqrt_w (data - model)`` tile by tile, shape of ``data`` (0 in unused slots)."""
    def body(i, out):
        sub, shift = tile_model(model, offsets[i])
        r = sqrt_w[i] * (data[i] - render(sub, param + shift))
        return jax.lax.dynamic_update_index_in_dim(out, r, i, axis=0)

    return jax.lax.fori_loop(0, n_tiles, body, jnp.zeros_like(data))


class _Tiles(NamedTuple):
    offsets: jax.Array
    n_tiles: jax.Array
    unit: jax.Array
    narrow: tuple[int, ...] | None

    def scale(self, data, weight):
        return self.unit

    def pad(self, stack):
        return stack

    def equations(self, model, x, data, sqrt_w):
        return tiled_equations(model, _fit.piece_model_and_jacobian, x, data, sqrt_w, self.offsets,
                               self.n_tiles, self.narrow)

    def residuals(self, model, x, data, sqrt_w):
        return tiled_residuals(model, x, data, sqrt_w, self.offsets, self.n_tiles)


def _solve_tiles(model: Model, data, weight, offsets, n_tiles, scale, x0, lb, ub,
                 options: _fit.SolverOptions, periodic_phi: bool,
                 narrow: tuple[int, ...] | None = None) -> _fit.FitResult:
    layout = _Tiles(jnp.asarray(offsets, jnp.int32), jnp.asarray(n_tiles, jnp.int32),
                    jnp.asarray(scale, model.dtype), narrow)
    return _fit.solve_with(model, data, weight, x0, lb, ub, options, periodic_phi, layout)


#: :func:`imcascade_jax.fit.least_squares` on stacks of tiles, compiled once per tile shape,
#: capacity, model structure and options: ``solve_tiles_jit(model, data, weight, offsets,
#: n_tiles, scale, x0, lb, ub, options, periodic_phi, narrow)`` with ``model`` of the tile's
#: shape and the image's ``sky_centre``, ``data``/``weight`` from :func:`to_tiles`, ``scale``
#: the image's :func:`imcascade_jax.fit.data_scale` (computed with NumPy on the image: a median
#: over the whole stack would sort every slot) and ``narrow`` from :func:`narrow_components`;
#: ``residuals`` come back as a stack (:func:`from_tiles`). No input checks:
#: :mod:`imcascade_jax.buckets` checks the image's problem first.
solve_tiles_jit = jax.jit(_solve_tiles, static_argnames=("options", "periodic_phi", "narrow"))
