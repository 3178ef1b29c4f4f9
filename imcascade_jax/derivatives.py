"""Closed-form derivatives of rendered components with respect to (x0, y0, q, phi).

The least-squares solver needs the model image's Jacobian at every step. Forward-mode autodiff
through the renderer (``jax.linearize`` pushed along four tangents) gives it exactly, but it
traces four copies of the tangent computation, which makes the compiled fit several seconds
slower to build and the Jacobian slower to run. For the Gaussian-at-pixel-centre renderers
(``'gauss'``, and ``'hybrid'`` whenever no component needs the exact pixel integral) the
derivatives have a closed form that shares every transcendental with the image itself:

For a Gaussian of covariance ``C`` (``C'`` = ``C`` + pixel variance in hybrid mode), precision
``P = C'^-1``, offset ``d`` from the centre, ``w = P d``, ``Q = d.w`` and ``E = exp(-Q/2) /
(2 pi sqrt(det C'))``, the hybrid value is ``V = E c(w, P)`` with ``c`` the polynomial pixel correction of
:func:`~imcascade_jax.render.box_correction`. Then, with ``c``'s partials ``c_wx, c_wy, c_pxx,
c_pyy``,

- ``dV/dx0 = E [wx c - (pxx c_wx + pxy c_wy)]`` (and symmetrically for y0);
- for a change ``dC`` of the covariance, ``u = dC w``, ``dw = -P u``, ``dP = -P dC P``:
  ``dE = E (w.u - tr(P dC)) / 2``, ``dc = c_wx dwx + c_wy dwy + c_pxx dpxx + c_pyy dpyy`` and
  ``dV = dE c + E dc``;
- ``dC/dq`` and ``dC/dphi`` are per-component constants of the galaxy's rotated covariance.

``tests/test_derivatives.py`` checks these against ``jax.jacfwd`` of the renderer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from imcascade_jax.model import Model
from imcascade_jax.render import (
    CUTOFF_Q,
    PIXEL_VAR,
    box_correction,
    covariances,
    needs_exact,
    pixel_offsets,
    psf_weighted,
    render_basis,
    weighted_sum,
)


def supports_closed_form(model: Model) -> bool:
    """Whether :func:`basis_and_tangents` applies (else use autodiff)."""
    if model.render_mode == "gauss":
        return True
    return (model.render_mode == "hybrid" and not needs_exact(model)
            and all(w < 0 for w in model.windows))


def _galaxy_cov_derivatives(model: Model, q, phi):
    """d(cxx, cxy, cyy)/dq and /dphi of each galaxy component: arrays of shape (N,)."""
    var = model.sig**2
    c, s = jnp.cos(phi), jnp.sin(phi)
    dq = (2 * var * q * s * s, -2 * var * q * s * c, 2 * var * q * c * c)
    e = var * (1 - q * q)
    dphi = (-2 * e * s * c, e * (c * c - s * s), 2 * e * s * c)
    return dq, dphi


def values_and_tangents(dx, dy, cov, dcov_q, dcov_phi, hybrid: bool):
    """Values and their derivatives wrt (x0, y0, q, phi): five (C, nx, ny) arrays.

    ``dx``, ``dy``: pixel-centre offsets from the centre, shapes (nx,) and (ny,); ``cov``:
    ``(cxx, cxy, cyy)``, each (C,); ``dcov_q``, ``dcov_phi``: the covariance's derivatives along
    the two shape parameters (any covariance directions), same form; ``hybrid``: the hybrid
    renderer's values (5-sigma cutoff, pixel correction), else Gaussians at pixel centres.
    """
    pix = PIXEL_VAR if hybrid else 0.0
    cxx, cxy, cyy = (c[:, None, None] for c in cov)
    cxx, cyy = cxx + pix, cyy + pix
    det = cxx * cyy - cxy * cxy
    pxx, pxy, pyy = cyy / det, -cxy / det, cxx / det
    x, y = dx[None, :, None], dy[None, None, :]
    wx = pxx * x + pxy * y
    wy = pxy * x + pyy * y
    quad = wx * x + wy * y
    e = jnp.exp(-0.5 * quad) / (2.0 * jnp.pi * jnp.sqrt(det))
    # d/dx0 moves the offsets by -1: dw = -P[:, 0], dE = E wx.
    if hybrid:
        e = jnp.where(quad > CUTOFF_Q, 0.0, e)
        corr, c_wx, c_wy, c_pxx, c_pyy = box_correction(wx, wy, pxx, pyy, partials=True)
        value = e * corr
        d_x0 = e * (wx * corr - (pxx * c_wx + pxy * c_wy))
        d_y0 = e * (wy * corr - (pxy * c_wx + pyy * c_wy))
    else:
        value, d_x0, d_y0 = e, e * wx, e * wy

    def along(dc):
        dxx, dxy, dyy = (t[:, None, None] for t in dc)
        ux = dxx * wx + dxy * wy
        uy = dxy * wx + dyy * wy
        trace = pxx * dxx + 2.0 * pxy * dxy + pyy * dyy
        de = 0.5 * e * (wx * ux + wy * uy - trace)
        if not hybrid:
            return de
        dwx = -(pxx * ux + pxy * uy)
        dwy = -(pxy * ux + pyy * uy)
        dpxx = -(pxx * pxx * dxx + 2.0 * pxx * pxy * dxy + pxy * pxy * dyy)
        dpyy = -(pxy * pxy * dxx + 2.0 * pxy * pyy * dxy + pyy * pyy * dyy)
        d_corr = c_wx * dwx + c_wy * dwy + c_pxx * dpxx + c_pyy * dpyy
        return de * corr + e * d_corr

    return value, d_x0, d_y0, along(dcov_q), along(dcov_phi)


def basis_and_tangents(model: Model, x0, y0, q, phi, flux):
    """Component basis and the image's derivatives wrt (x0, y0, q, phi).

    Parameters
    ----------
    model : Model
        ``supports_closed_form(model)`` must hold.
    x0, y0, q, phi : scalar arrays
    flux : jax.Array, shape (N,)
        Linear fluxes weighting the derivative images.

    Returns
    -------
    basis : jax.Array, shape (N, nx, ny)
        As :func:`~imcascade_jax.render.render_basis`.
    d_image : jax.Array, shape (4, nx, ny)
        ``d (sum_k flux_k basis_k) / d (x0, y0, q, phi)``.
    """
    nx, ny = model.shape
    dtype = model.dtype
    n, p = model.n_gauss, model.n_psf
    x0, y0, q, phi = (jnp.asarray(v, dtype) for v in (x0, y0, q, phi))
    cxx, cxy, cyy = covariances(model, q, phi)
    dq, dphi = _galaxy_cov_derivatives(model, q, phi)
    rep = lambda t: jnp.repeat(t, p)  # noqa: E731  (per galaxy component -> per (k, j))
    outputs = values_and_tangents(
        pixel_offsets(x0, 0, nx, dtype), pixel_offsets(y0, 0, ny, dtype),
        (cxx.ravel(), cxy.ravel(), cyy.ravel()), tuple(rep(t) for t in dq),
        tuple(rep(t) for t in dphi), hybrid=model.render_mode == "hybrid")
    basis = psf_weighted(outputs[0].reshape(n, p, nx, ny), model.psf_a)
    # Each derivative image in one weighted sum over all (k, j) components, weights
    # flux_k psf_a_j, rather than over the PSF axis and then the fluxes: no (N, nx, ny)
    # intermediates (the quickstart's Jacobian 4.8 ms instead of 5.2 ms on the CPU).
    coef = (flux[:, None] * model.psf_a[None, :]).ravel()
    d_image = jnp.stack([weighted_sum(coef, o) for o in outputs[1:]])
    return basis, d_image


def basis_and_tangents_autodiff(model: Model, x0, y0, q, phi, flux):
    """Same as :func:`basis_and_tangents` by forward-mode autodiff (any render mode)."""
    structural = jnp.stack([jnp.asarray(v, model.dtype) for v in (x0, y0, q, phi)])
    basis, push = jax.linearize(lambda s: render_basis(model, s[0], s[1], s[2], s[3]), structural)
    tangents = jax.vmap(push)(jnp.eye(4, dtype=structural.dtype))  # (4, N, nx, ny)
    return basis, weighted_sum(flux, jnp.moveaxis(tangents, 1, 0))
