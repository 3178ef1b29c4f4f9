"""Pure analysis of imcascade models: fluxes, radii, profiles and curves of growth.

Every function here takes the model's widths ``sig`` (shape ``(N,)``) and its LINEAR component
fluxes ``weights`` of shape ``(N,)`` (one parameter set) or ``(..., N)`` (a batch of posterior
samples), and returns one value per parameter set: results have the batch shape of ``weights``
followed by the shape of the other array argument (radii ``r``, fractions, isophotes), and, with
``return_ind=True``, a trailing component axis. There are no Python loops over samples: 10^5
samples cost one compiled call. Every function works inside ``jit``, ``vmap`` and ``grad``.

The intrinsic profile of component ``i`` is an elliptical Gaussian of flux ``w_i``, width ``sig_i``
along the major axis and axis ratio ``q``; all profiles are functions of the semi-major-axis radius
``r``, as in imcascade 1.1:

* surface brightness ``I(r) = sum_i w_i / (2 pi q sig_i^2) exp(-r^2 / 2 sig_i^2)``;
* curve of growth (flux inside the ellipse of semi-major axis r)
  ``F(<r) = sum_i w_i (1 - exp(-r^2 / 2 sig_i^2))``.

PSF-convolved ("observed") profiles use imcascade 1.1's approximation: each galaxy component
convolved with each PSF component ``(psf_sig_p, psf_a_p)`` is an elliptical Gaussian of variance
``sig_i^2 + psf_sig_p^2`` along the major axis, axis ratio
``sqrt(sig_i^2 q^2 + psf_sig_p^2) / sqrt(sig_i^2 + psf_sig_p^2)`` and flux ``w_i psf_a_p``
(components ordered PSF-major: ``k = p * N + i``).

Radii (fraction of light, isophotal, Petrosian) are computed in :mod:`imcascade_jax.radii` and
re-exported here.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.radii import (
    as_float,
    check_weights,
    iso_radius,
    iso_target,
    petrosian_radius,
    radius_fraction,
    radius_fraction_of,
)

__all__ = [
    "flux",
    "cog",
    "sbp",
    "obs_components",
    "obs_cog",
    "obs_sbp",
    "radius_fraction",
    "radius_fraction_of",
    "iso_radius",
    "iso_target",
    "petrosian_radius",
    "basic_analysis",
    "summarize",
    "light_fraction",
    "checked_cutoff",
    "checked_zero_point",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: Fractions of light of the radii computed by :func:`basic_analysis`.
BASIC_FRACTIONS = (0.2, 0.5, 0.8, 0.9)
#: Root finders stop after an accepted step below these (relative): the error left is of order


def _real_scalar(value: Any, name: str) -> float:
    """``value`` as a float, or ``TypeError`` naming it (arrays, strings and bools refused)."""
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def light_fraction(X: Any) -> float:  # noqa: N803  (1.1's argument name)
    """The fraction of light of 1.1's ``calc_rX(X)``: ``X`` in (0, 1] is a fraction, in
    (1, 100] a percentage (20 and 0.2 both mean 20%).

    Raises
    ------
    TypeError, ValueError
        ``X`` not a real number, or outside (0, 100].
    """
    x = _real_scalar(X, "X")
    if not 0.0 < x <= 100.0:
        raise ValueError(f"X must be a fraction in (0, 1] or a percentage in (1, 100], got {x}")
    return x / 100.0 if x > 1.0 else x


def checked_cutoff(cutoff: Any) -> float | None:
    """An aperture's semi-major axis (pixels): ``None`` or a number > 0 (``inf`` allowed).

    Raises
    ------
    TypeError, ValueError
        ``cutoff`` not a real number, NaN, or <= 0.
    """
    if cutoff is None:
        return None
    c = _real_scalar(cutoff, "cutoff")
    if math.isnan(c) or c <= 0.0:
        raise ValueError(f"cutoff must be a radius > 0 (pixels) or None, got {c}")
    return c


def checked_zero_point(zpt: Any) -> float | None:
    """A photometric zero point: ``None`` or a finite number (``TypeError``/``ValueError``)."""
    if zpt is None:
        return None
    z = _real_scalar(zpt, "zpt")
    if not math.isfinite(z):
        raise ValueError(f"zpt must be finite, got {z}")
    return z


def _with_r_axes(x: Array, r: Array) -> Array:
    """Insert ``r.ndim`` axes before the component axis of ``x`` (batch..., N)."""
    return x.reshape(x.shape[:-1] + (1,) * r.ndim + x.shape[-1:])


# --------------------------------------------------------------------------------------------
# Fluxes and profiles


@jax.jit
def flux(weights: ArrayLike, sig: ArrayLike, cutoff: ArrayLike | None = None) -> Array:
    """Total flux, or the flux inside the ellipse of semi-major axis ``cutoff``.

    Parameters
    ----------
    weights : array_like, shape (..., N)
        Linear fluxes of the components.
    sig : array_like, shape (N,)
        Widths of the components (pixels).
    cutoff : float, optional
        Semi-major-axis radius (pixels) out to which the flux is integrated; ``None`` for the total.

    Returns
    -------
    jax.Array, shape (...)
    """
    weights, sig = check_weights(weights, sig)
    if cutoff is None:
        return weights.sum(-1)
    # -expm1 is 1 - exp without the cancellation at small radii.
    return (weights * -jnp.expm1(-(as_float(cutoff) ** 2) / (2 * sig**2))).sum(-1)


def _cog_terms(r: Array, weights: Array, var: Array) -> Array:
    """Per-component curve of growth, shape (batch..., *r.shape, N)."""
    return _with_r_axes(weights, r) * -jnp.expm1(-(r[..., None] ** 2) / (2 * var))


def _sbp_terms(r: Array, norm: Array, var: Array) -> Array:
    """Per-component surface brightness, ``norm`` = peak intensities (batch..., N)."""
    return _with_r_axes(norm, r) * jnp.exp(-(r[..., None] ** 2) / (2 * var))


@partial(jax.jit, static_argnames="return_ind")
def cog(r: ArrayLike, weights: ArrayLike, sig: ArrayLike, return_ind: bool = False) -> Array:
    """Intrinsic curve of growth: flux inside the ellipse of semi-major axis ``r``.

    Parameters
    ----------
    r : array_like
        Radii (pixels), any shape.
    weights : array_like, shape (..., N)
        Linear fluxes of the components.
    sig : array_like, shape (N,)
        Widths of the components.
    return_ind : bool
        If True, return each component's curve (trailing axis of length N) instead of the sum.

    Returns
    -------
    jax.Array, shape (..., *r.shape) or (..., *r.shape, N)
    """
    weights, sig = check_weights(weights, sig)
    terms = _cog_terms(as_float(r), weights, sig**2)
    return terms if return_ind else terms.sum(-1)


@partial(jax.jit, static_argnames="return_ind")
def sbp(r: ArrayLike, weights: ArrayLike, sig: ArrayLike, q: ArrayLike, return_ind: bool = False) -> Array:
    """Intrinsic surface-brightness profile along the major axis.

    Parameters
    ----------
    r : array_like
        Radii (pixels), any shape.
    weights : array_like, shape (..., N)
        Linear fluxes of the components.
    sig : array_like, shape (N,)
        Widths of the components.
    q : array_like, shape broadcastable to (...)
        Axis ratio of each parameter set.
    return_ind : bool
        If True, return each component's profile (trailing axis of length N).

    Returns
    -------
    jax.Array, shape (..., *r.shape) or (..., *r.shape, N)
    """
    weights, sig = check_weights(weights, sig)
    peak = weights / (2 * jnp.pi * as_float(q)[..., None] * sig**2)
    terms = _sbp_terms(as_float(r), peak, sig**2)
    return terms if return_ind else terms.sum(-1)


@jax.jit
def obs_components(
    weights: ArrayLike, sig: ArrayLike, q: ArrayLike, psf_sig: ArrayLike, psf_a: ArrayLike
) -> tuple[Array, Array, Array]:
    """Fluxes, variances and axis ratios of the PSF-convolved components.

    Parameters
    ----------
    weights : array_like, shape (..., N)
    sig : array_like, shape (N,)
    q : array_like, shape broadcastable to (...)
    psf_sig, psf_a : array_like, shape (P,)
        Widths and fluxes of the PSF's Gaussian components.

    Returns
    -------
    final_a : jax.Array, shape (..., P*N)
        Fluxes ``w_i psf_a_p``, PSF-major order (``k = p * N + i``) as imcascade 1.1.
    final_var : jax.Array, shape (P*N,)
        Major-axis variances ``sig_i^2 + psf_sig_p^2``.
    final_q : jax.Array, shape (..., P*N)
        Axis ratios of the convolved components.
    """
    weights, sig = check_weights(weights, sig)
    psf_var = as_float(psf_sig)[:, None] ** 2  # (P, 1)
    psf_a = as_float(psf_a)
    var = sig**2 + psf_var  # (P, N)
    q = as_float(q)[..., None, None]
    final_q = jnp.sqrt(sig**2 * q**2 + psf_var) / jnp.sqrt(var)
    final_a = weights[..., None, :] * psf_a[:, None]
    batch = weights.shape[:-1]
    final_q = jnp.broadcast_to(final_q, jnp.broadcast_shapes(final_q.shape, final_a.shape))
    return (
        final_a.reshape(batch + (-1,)),
        var.reshape(-1),
        final_q.reshape(final_q.shape[:-2] + (-1,)),
    )


@partial(jax.jit, static_argnames="return_ind")
def obs_cog(
    r: ArrayLike,
    weights: ArrayLike,
    sig: ArrayLike,
    psf_sig: ArrayLike,
    psf_a: ArrayLike,
    return_ind: bool = False,
) -> Array:
    """PSF-convolved curve of growth (see the module notes for the approximation).

    Returns
    -------
    jax.Array, shape (..., *r.shape) or (..., *r.shape, P*N)
    """
    final_a, final_var, _ = obs_components(weights, sig, 1.0, psf_sig, psf_a)
    terms = _cog_terms(as_float(r), final_a, final_var)
    return terms if return_ind else terms.sum(-1)


@partial(jax.jit, static_argnames="return_ind")
def obs_sbp(
    r: ArrayLike,
    weights: ArrayLike,
    sig: ArrayLike,
    q: ArrayLike,
    psf_sig: ArrayLike,
    psf_a: ArrayLike,
    return_ind: bool = False,
) -> Array:
    """PSF-convolved surface-brightness profile along the major axis.

    Returns
    -------
    jax.Array, shape (..., *r.shape) or (..., *r.shape, P*N)
    """
    final_a, final_var, final_q = obs_components(weights, sig, q, psf_sig, psf_a)
    peak = final_a / (2 * jnp.pi * final_q * final_var)
    terms = _sbp_terms(as_float(r), peak, final_var)
    return terms if return_ind else terms.sum(-1)


# --------------------------------------------------------------------------------------------
# Summaries


def basic_analysis(
    weights: ArrayLike,
    sig: ArrayLike,
    cutoff: ArrayLike | None = None,
    zpt: ArrayLike | None = None,
) -> dict[str, Array]:
    """Flux, magnitude, r20/50/80/90 and concentrations, per parameter set.

    Parameters
    ----------
    weights : array_like, shape (..., N)
        Linear fluxes.
    sig : array_like, shape (N,)
    cutoff : float, optional
        Radius for the flux and the reference flux of the radii (see :func:`radius_fraction`).
    zpt : float, optional
        Photometric zero point; adds ``'mag' = zpt - 2.5 log10(flux)``.

    Returns
    -------
    dict of jax.Array, each of shape (...)
        Keys ``flux``, [``mag``], ``r20``, ``r50``, ``r80``, ``r90``, ``C80_20``, ``C90_50``.
    """
    fl = flux(weights, sig, cutoff)
    radii = radius_fraction(jnp.asarray(BASIC_FRACTIONS), weights, sig, cutoff)
    r20, r50, r80, r90 = (radii[..., i] for i in range(len(BASIC_FRACTIONS)))
    out = {"flux": fl}
    if zpt is not None:
        out["mag"] = -2.5 * jnp.log10(fl) + zpt
    out.update(r20=r20, r50=r50, r80=r80, r90=r90, C80_20=r80 / r20, C90_50=r90 / r50)
    return out


@jax.jit
def summarize(samples: ArrayLike, lo: ArrayLike = 16.0, hi: ArrayLike = 84.0) -> Array:
    """Median and error bars of a distribution along axis 0.

    Returns ``[median, median - P_lo, P_hi - median]`` (stacked on axis 0) with linearly
    interpolated percentiles, as imcascade 1.1's ``utils.get_med_errors``.
    """
    med, p_lo, p_hi = jnp.percentile(as_float(samples), jnp.stack([50.0, lo, hi]), axis=0)
    return jnp.stack([med, med - p_lo, p_hi - med])
