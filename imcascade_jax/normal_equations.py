"""Cost, normal equations and residuals of a weighted fit, accumulated over bands of rows.

A least-squares step needs ``cost = |r|^2 / 2``, ``J^T J`` and ``J^T r`` of the residuals
``r = sqrt(w) (data - model)``: ``Ndof^2 + Ndof + 1`` numbers. Building them from the whole
Jacobian, shape ``(Ndof, nx, ny)``, and from the per-(component, PSF) images it is made of,
needs memory of tens of images per parameter; on large frames that is gigabytes. Here the
image is cut into bands of ``rows`` full rows (the last band padded with zero-weight rows) and
the sums are accumulated band by band in a ``lax.fori_loop``: the peak memory is a few images
plus one band's Jacobian and intermediates, and an image that fits in one band is evaluated
in one piece (no loop).

A band of rows ``[r0, r0 + rows)`` of a model is the model of shape ``(rows, ny)`` whose galaxy
sits at ``x0 - r0`` (pixel coordinates are offsets from the centre) and whose tilted-plane sky
is referred to the same point as the whole image's (its ``sky_centre`` moved by ``-r0``), so the
sky parameters and every Jacobian column are the same in a band as in the whole image.
:func:`banded_jacobian` uses the same bands to return a whole image's Jacobian with bounded
intermediates.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from imcascade_jax.model import Model
from imcascade_jax.render import render

#: Pixels per band: images up to this size are evaluated in one piece. Measured on the CPU,
#: a 256x256 band keeps the per-band intermediates near 100 MB for 9 x 4 components while
#: the loop's overhead is negligible beside the band's work.
BAND_PIXELS = 65536
#: Largest intermediates of one band of :func:`banded_jacobian` as the model's Jacobian uses it
#: (:func:`jacobian_band_pixels`), bytes. Below glibc's largest dynamic mmap threshold (32 MB),
#: so the temporaries of repeated calls come from reused heap memory, not freshly mapped
#: (page-faulted) pages: the 150x150 quickstart's float64 Jacobian in 3 bands took 5.5 ms a
#: call on the CPU, 14-26 ms in one piece.
JACOBIAN_BAND_BYTES = 16_000_000


class BandPlan(NamedTuple):
    """How an image is cut into bands of full rows.

    Attributes
    ----------
    rows : int
        Rows per band.
    n_bands : int
        Number of bands; ``rows * n_bands >= nx`` (the last band is padded).
    """

    rows: int
    n_bands: int


def band_plan(shape: tuple[int, int], band_pixels: int = BAND_PIXELS) -> BandPlan:
    """Bands of at most ``band_pixels`` pixels (at least one row each), sized evenly.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(nx, ny)``; bands are ranges of axis 0.
    band_pixels : int
        Largest band, pixels.

    Returns
    -------
    BandPlan
    """
    nx, ny = int(shape[0]), int(shape[1])
    rows = max(1, int(band_pixels) // ny)
    if rows >= nx:
        return BandPlan(nx, 1)
    n_bands = -(-nx // rows)
    return BandPlan(-(-nx // n_bands), n_bands)  # even bands: the least padding


def band_model(model: Model, plan: BandPlan, r0=0) -> Model:
    """The model of the band starting at row ``r0`` (shape ``(plan.rows, ny)``; the static
    window plan kept, the sky's reference point moved with the band; ``r0`` may be traced)."""
    nx, ny = model.shape
    dtype = model.dtype
    centre = model.sky_centre
    if centre is None:
        centre = jnp.asarray([nx / 2.0, ny / 2.0], dtype)
    centre = jnp.asarray(centre, dtype) - jnp.stack([jnp.asarray(r0, dtype), jnp.zeros((), dtype)])
    return model.replace(shape=(plan.rows, ny), sky_centre=centre)


def band_param(param: jax.Array, r0) -> jax.Array:
    """Parameters of the band starting at row ``r0``: only ``x0`` moves (by ``-r0``)."""
    return param.at[0].add(-jnp.asarray(r0, param.dtype))


def pad_rows(image: jax.Array, plan: BandPlan) -> jax.Array:
    """``image`` with zero rows appended up to ``plan.rows * plan.n_bands`` rows."""
    extra = plan.rows * plan.n_bands - image.shape[0]
    return jnp.pad(image, ((0, extra), (0, 0))) if extra else image


class NormalEquations(NamedTuple):
    """Cost and normal equations of the residuals at one point.

    Attributes
    ----------
    cost : jax.Array
        ``sum(r^2) / 2``.
    jtj : jax.Array
        ``J^T J``, shape ``(Ndof, Ndof)``.
    grad : jax.Array
        ``J^T r``, shape ``(Ndof,)`` (the gradient of the cost).
    finite : jax.Array
        Whether every residual and Jacobian entry was finite.
    """

    cost: jax.Array
    jtj: jax.Array
    grad: jax.Array
    finite: jax.Array


def zero_equations(n: int, dtype) -> NormalEquations:
    """The empty sum: zero cost and normal equations for ``n`` parameters, finite."""
    return NormalEquations(jnp.zeros((), dtype), jnp.zeros((n, n), dtype), jnp.zeros(n, dtype),
                           jnp.asarray(True))


def piece_equations(model: Model, jacobian_fn, param: jax.Array, data: jax.Array,
                    sqrt_w: jax.Array) -> NormalEquations:
    """:class:`NormalEquations` of one piece of an image (a band of rows, a tile).

    ``model`` is the piece's model and ``param`` its parameters (centre relative to the
    piece); ``data`` and ``sqrt_w`` have the piece's shape.
    """
    image, dimage = jacobian_fn(model, param)
    r = sqrt_w * (data - image)
    jac = (-sqrt_w[None] * dimage).reshape(param.shape[0], -1)
    finite = jnp.all(jnp.isfinite(r)) & jnp.all(jnp.isfinite(jac))
    return NormalEquations(0.5 * jnp.sum(r * r), jac @ jac.T, jac @ r.reshape(-1), finite)


def _band_equations(model: Model, jacobian_fn, param, data_band, sqrt_w_band, rows, r0):
    sub = band_model(model, BandPlan(rows, 1), r0)
    return piece_equations(sub, jacobian_fn, band_param(param, r0), data_band, sqrt_w_band)


def normal_equations(model: Model, jacobian_fn, param: jax.Array, data: jax.Array,
                     sqrt_w: jax.Array, plan: BandPlan) -> NormalEquations:
    """Cost, ``J^T J`` and ``J^T r`` of ``r = sqrt_w (data - model)`` at ``param``.

    Parameters
    ----------
    model : Model
    jacobian_fn : callable
        ``jacobian_fn(model, param) -> (image, d_image)``, ``d_image`` of shape
        ``(Ndof, nx, ny)`` (e.g. :func:`imcascade_jax.fit.piece_model_and_jacobian`).
    param : jax.Array, shape (Ndof,)
    data, sqrt_w : jax.Array
        Image and square-root weights, padded to ``plan.rows * plan.n_bands`` rows
        (:func:`pad_rows`; padded rows must have zero weight).
    plan : BandPlan

    Returns
    -------
    NormalEquations
    """
    rows = plan.rows
    if plan.n_bands == 1:
        return _band_equations(model, jacobian_fn, param, data, sqrt_w, rows, 0)

    def body(i, acc):
        r0 = i * rows
        band = _band_equations(model, jacobian_fn, param,
                               jax.lax.dynamic_slice_in_dim(data, r0, rows),
                               jax.lax.dynamic_slice_in_dim(sqrt_w, r0, rows), rows, r0)
        return NormalEquations(acc.cost + band.cost, acc.jtj + band.jtj, acc.grad + band.grad,
                               acc.finite & band.finite)

    zero = zero_equations(param.shape[0], param.dtype)
    return jax.lax.fori_loop(0, plan.n_bands, body, zero)


def jacobian_band_pixels(model: Model) -> int:
    """Pixels per band of a whole image's Jacobian: about :data:`JACOBIAN_BAND_BYTES` of the
    component images, their four derivatives and the Jacobian's columns."""
    itemsize = jnp.dtype(model.dtype).itemsize
    per_pixel = itemsize * (5 * model.n_gauss * model.n_psf + model.n_params)
    return max(1, JACOBIAN_BAND_BYTES // per_pixel)


def banded_jacobian(model: Model, jacobian_fn, param: jax.Array, band_pixels: int):
    """``jacobian_fn(model, param)`` of a whole image, evaluated in bands of rows.

    Parameters
    ----------
    model : Model
    jacobian_fn : callable
        ``jacobian_fn(model, param) -> (image, d_image)`` for one piece, evaluated at once.
    param : jax.Array, shape (Ndof,)
    band_pixels : int
        Largest band, pixels (:func:`band_plan`); an image that fits is evaluated in one piece.

    Returns
    -------
    image : jax.Array, shape model.shape
    d_image : jax.Array, shape (Ndof, nx, ny)
        The same numbers as ``jacobian_fn`` on the whole image.
    """
    nx, ny = model.shape
    plan = band_plan(model.shape, band_pixels)
    if plan.n_bands == 1:
        return jacobian_fn(model, param)
    one_band = BandPlan(plan.rows, 1)

    def band(r0):
        return jacobian_fn(band_model(model, one_band, r0), band_param(param, r0))

    starts = jnp.arange(plan.n_bands, dtype=param.dtype) * plan.rows
    image, d_image = jax.lax.map(band, starts)  # (bands, rows, ny), (bands, Ndof, rows, ny)
    d_image = jnp.moveaxis(d_image, 1, 0).reshape(d_image.shape[1], -1, ny)
    return image.reshape(-1, ny)[:nx], d_image[:, :nx]


def residual_image(model: Model, param: jax.Array, data: jax.Array, sqrt_w: jax.Array,
                   plan: BandPlan) -> jax.Array:
    """Residuals ``sqrt_w (data - model)`` rendered band by band, shape ``model.shape``.

    ``data`` and ``sqrt_w`` are padded as for :func:`normal_equations`.
    """
    rows = plan.rows
    if plan.n_bands == 1:
        return sqrt_w * (data - render(band_model(model, plan), param))

    def body(i, out):
        r0 = i * rows
        d = jax.lax.dynamic_slice_in_dim(data, r0, rows)
        s = jax.lax.dynamic_slice_in_dim(sqrt_w, r0, rows)
        r = s * (d - render(band_model(model, plan, r0), band_param(param, r0)))
        return jax.lax.dynamic_update_slice_in_dim(out, r, r0, axis=0)

    out = jax.lax.fori_loop(0, plan.n_bands, body, jnp.zeros_like(data))
    return out[:model.shape[0]]
