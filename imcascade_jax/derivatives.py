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
- for a change ``dC`` of the covariance, ``N = P dC P`` and ``u = N d``: ``dw = -u``,
  ``dP = -N``, ``dE = E (d.u - tr(P dC)) / 2``, ``dc = -(c_wx ux + c_wy uy + c_pxx Nxx +
  c_pyy Nyy)`` and ``dV = dE c + E dc``;
- ``dC/dq`` and ``dC/dphi`` are per-component constants of the galaxy's rotated covariance.

Everything that depends on the component alone (``P``, the normalisation, ``N``, ``tr(P dC)``,
the correction's polynomial coefficients) is computed once per component
(:func:`component_constants`), so that a pixel costs one ``exp`` and a few dozen multiply-adds
for the value and all four derivatives.

``tests/test_derivatives.py`` checks these against ``jax.jacfwd`` of the renderer.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.model import Model
from imcascade_jax.params import unpack
from imcascade_jax.render import (
    BOX_K4,
    BOX_K6,
    CUTOFF_Q,
    PIXEL_VAR,
    covariances,
    needs_exact,
    pixel_offsets,
    psf_weighted,
    render_basis,
    render_sky,
    weighted_sum,
)

_LN10 = 2.302585092994046
#: Most groups of windowed components in :func:`tangent_windows` (each group is one more copy
#: of the tangent computation in the compiled program).
MAX_WINDOW_GROUPS = 2


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


#: Rows of :func:`component_constants`: precision, normalisation, the pixel correction's
#: coefficients per axis (hybrid), then per covariance direction (q, phi) ``N = P dC P`` and
#: ``tr(P dC)``.
_P, _NORM, _AX, _AY, _DQ, _DPHI = 0, 3, 4, 11, 18, 22


def _axis_coefficients(p):
    """Coefficients of one axis's pixel-correction term and its partials, per component.

    :func:`~imcascade_jax.render.box_correction`'s term ``K6 d6 - K4 d4`` expanded in
    ``w2 = w^2``: ``t = ((K6 w2 + a4) w2 + a2) w2 + a0``, ``dt/dw = w ((6 K6 w2 + 4 a4) w2 +
    2 a2)`` and ``dt/dp = (-15 K6 w2 + b2) w2 + b0``: seven rows ``(a4, a2, a0, 4 a4, 2 a2, b2,
    b0)``, so that each pixel costs a few multiply-adds.
    """
    a4 = -(15.0 * BOX_K6 * p + BOX_K4)
    a2 = p * (45.0 * BOX_K6 * p + 6.0 * BOX_K4)
    a0 = -p * p * (15.0 * BOX_K6 * p + 3.0 * BOX_K4)
    b2 = 90.0 * BOX_K6 * p + 6.0 * BOX_K4
    b0 = -p * (45.0 * BOX_K6 * p + 6.0 * BOX_K4)
    return [a4, a2, a0, 4.0 * a4, 2.0 * a2, b2, b0]


def component_constants(cov, dcov_q, dcov_phi, hybrid: bool) -> jax.Array:
    """Everything per component that :func:`values_and_tangents` needs, stacked: (K, C).

    Computed once per component rather than at every pixel (where XLA would otherwise
    recompute them): the precision ``P`` of the covariance (plus the pixel variance in hybrid
    mode), the normalisation ``1 / (2 pi sqrt(det))``, the pixel correction's coefficients
    (:func:`~imcascade_jax.render.box_correction`'s polynomial expanded in ``w^2``, hybrid
    only: zeros otherwise) and, for each of the two covariance directions ``dC``,
    ``N = P dC P`` (``dP = -N``) and ``tr(P dC)``.

    Rows: 0-2 ``(Pxx, Pxy, Pyy)``, 3 the normalisation, 4-17 the correction's coefficients
    (axis 0, then axis 1), 18-21 ``(Nxx, Nxy, Nyy, tr(P dC))`` along ``dcov_q``, 22-25 the same
    along ``dcov_phi``.
    """
    pix = PIXEL_VAR if hybrid else 0.0
    cxx, cxy, cyy = cov
    cxx, cyy = cxx + pix, cyy + pix
    det = cxx * cyy - cxy * cxy
    pxx, pxy, pyy = cyy / det, -cxy / det, cxx / det
    rows = [pxx, pxy, pyy, 1.0 / (2.0 * jnp.pi * jnp.sqrt(det))]
    if hybrid:
        rows += _axis_coefficients(pxx) + _axis_coefficients(pyy)
    else:
        rows += [jnp.zeros_like(pxx)] * 14
    for dxx, dxy, dyy in (dcov_q, dcov_phi):
        # N = P dC P, and tr(P dC).
        nxx = pxx * (pxx * dxx + 2.0 * pxy * dxy) + pxy * pxy * dyy
        nxy = pxx * (pxy * dxx + pyy * dxy) + pxy * (pxy * dxy + pyy * dyy)
        nyy = pxy * pxy * dxx + pyy * (2.0 * pxy * dxy + pyy * dyy)
        rows += [nxx, nxy, nyy, pxx * dxx + 2.0 * pxy * dxy + pyy * dyy]
    return jnp.stack(rows)


def _axis_terms(w, k):
    """Pixel-correction term of one axis and its partials wrt ``w`` and ``p`` (rows ``k``)."""
    a4, a2, a0, a4x4, a2x2, b2, b0 = k
    w2 = w * w
    term = ((BOX_K6 * w2 + a4) * w2 + a2) * w2 + a0
    d_w = w * ((6.0 * BOX_K6 * w2 + a4x4) * w2 + a2x2)
    d_p = (-15.0 * BOX_K6 * w2 + b2) * w2 + b0
    return term, d_w, d_p


def tangents_from_constants(k: jax.Array, dx, dy, hybrid: bool):
    """:func:`values_and_tangents` from :func:`component_constants` ``k``: five (C, nx, ny)."""
    k = k[:, :, None, None]
    pxx, pxy, pyy = k[_P], k[_P + 1], k[_P + 2]
    x, y = dx[None, :, None], dy[None, None, :]
    wx = pxx * x + pxy * y
    wy = pxy * x + pyy * y
    quad = wx * x + wy * y
    e = k[_NORM] * jnp.exp(-0.5 * quad)
    # d/dx0 moves the offsets by -1: dw = -P[:, 0], dE = E wx.
    if hybrid:
        e = jnp.where(quad > CUTOFF_Q, 0.0, e)
        tx, c_wx, c_pxx = _axis_terms(wx, k[_AX:_AX + 7])
        ty, c_wy, c_pyy = _axis_terms(wy, k[_AY:_AY + 7])
        corr = 1.0 + tx + ty
        value = e * corr
        d_x0 = e * (wx * corr - (pxx * c_wx + pxy * c_wy))
        d_y0 = e * (wy * corr - (pxy * c_wx + pyy * c_wy))
    else:
        value, d_x0, d_y0 = e, e * wx, e * wy

    def along(row):
        # u = N d = -dw; d.u = w.dC.w; dE = E (d.u - tr(P dC)) / 2; dP = -N.
        nxx, nxy, nyy, trace = k[row], k[row + 1], k[row + 2], k[row + 3]
        ux = nxx * x + nxy * y
        uy = nxy * x + nyy * y
        half = 0.5 * (x * ux + y * uy - trace)
        if not hybrid:
            return e * half
        return e * (half * corr - (c_wx * ux + c_wy * uy + c_pxx * nxx + c_pyy * nyy))

    return value, d_x0, d_y0, along(_DQ), along(_DPHI)


def values_and_tangents(dx, dy, cov, dcov_q, dcov_phi, hybrid: bool):
    """Values and their derivatives wrt (x0, y0, q, phi): five (C, nx, ny) arrays.

    ``dx``, ``dy``: pixel-centre offsets from the centre, shapes (nx,) and (ny,); ``cov``:
    ``(cxx, cxy, cyy)``, each (C,); ``dcov_q``, ``dcov_phi``: the covariance's derivatives along
    the two shape parameters (any covariance directions), same form; ``hybrid``: the hybrid
    renderer's values (5-sigma cutoff, pixel correction), else Gaussians at pixel centres.
    """
    return tangents_from_constants(component_constants(cov, dcov_q, dcov_phi, hybrid), dx, dy,
                                   hybrid)


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


def tangent_windows(model: Model) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
    """Static plan of square windows for :func:`structural_vjp` (hybrid mode only).

    In hybrid mode a convolved component ``(k, j)`` is exactly zero beyond ``sqrt(CUTOFF_Q)``
    sigma, so its derivatives need only the pixels of a window of half-size ``h`` about the
    rounded centre, with ``h - 1/2`` at least that radius along its major axis (at most
    ``sqrt(sig_k^2 + psf_sig_j^2 max(1, psf_q^2) + 1/12)`` for any ``q <= 1``). Components are
    grouped (at most :data:`MAX_WINDOW_GROUPS` window sizes plus the full frame) so that the
    fewest pixels are evaluated. The plan reads the widths' values: a model with traced widths,
    or one outside hybrid mode, gets ``None`` (full frame for every component).

    Returns
    -------
    tuple of (int, tuple of int), or None
        ``(half, components)`` per group, components as flat indices ``k * P + j``;
        ``half = -1`` for the full frame.
    """
    if not supports_closed_form(model) or model.render_mode != "hybrid":
        return None
    try:
        sig, psf_sig = np.asarray(model.sig, float), np.asarray(model.psf_sig, float)
        psf_q = np.asarray(model.psf_q, float) if model.elliptical_psf else np.ones(1)
    except jax.errors.TracerArrayConversionError:
        return None
    stretch = max(1.0, float(np.max(psf_q)) ** 2)
    major = np.sqrt(sig[:, None] ** 2 + stretch * psf_sig[None, :] ** 2 + PIXEL_VAR).ravel()
    half = np.ceil(np.sqrt(CUTOFF_Q) * major + 0.5).astype(int) + 1
    nx, ny = model.shape
    order = np.argsort(half, kind="stable")

    def plan(cuts):
        bounds = (0, *cuts, len(half))
        groups, cost = [], 0
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            h = int(half[order[b - 1]])
            size = 2 * h + 1
            if size >= min(nx, ny):
                h, cost = -1, cost + (b - a) * nx * ny
            else:
                cost += (b - a) * size * size
            groups.append((h, tuple(sorted(int(i) for i in order[a:b]))))
        return cost, groups

    options = [plan(cuts) for n in range(MAX_WINDOW_GROUPS + 1)
               for cuts in itertools.combinations(range(1, len(half)), n)]
    _, groups = min(options, key=lambda option: option[0])
    merged: dict[int, tuple[int, ...]] = {}
    for h, idx in groups:
        merged[h] = tuple(sorted(merged.get(h, ()) + idx))
    if set(merged) == {-1}:
        return None
    return tuple(sorted(merged.items()))


def structural_vjp(model: Model, x0, y0, q, phi, flux, cotangent: jax.Array,
                   windows: tuple | None = None) -> jax.Array:
    """``sum over pixels of cotangent * d image / d (x0, y0, q, phi)``, shape (4,).

    The same numbers as contracting :func:`basis_and_tangents`' derivative images with
    ``cotangent``, without forming them; with a :func:`tangent_windows` plan, components are
    evaluated only in their windows (the derivatives of a reverse-mode gradient at a fraction
    of the pixels). ``supports_closed_form(model)`` must hold.
    """
    nx, ny = model.shape
    dtype = model.dtype
    x0, y0, q, phi = (jnp.asarray(v, dtype) for v in (x0, y0, q, phi))
    cov = tuple(c.ravel() for c in covariances(model, q, phi))
    dq, dphi = (tuple(jnp.repeat(t, model.n_psf) for t in d)
                for d in _galaxy_cov_derivatives(model, q, phi))
    coef = (flux[:, None] * model.psf_a[None, :]).ravel()
    hybrid = model.render_mode == "hybrid"
    groups = windows if windows is not None else ((-1, tuple(range(coef.shape[0]))),)
    total = jnp.zeros(4, dtype)
    for half, idx in groups:
        idx = np.asarray(idx)
        if half < 0:
            dx, dy, ct = pixel_offsets(x0, 0, nx, dtype), pixel_offsets(y0, 0, ny, dtype), cotangent
        else:
            # As the renderer's windows: about the rounded, clipped centre (pixels outside the
            # image have a zero cotangent in the padding).
            size = 2 * half + 1
            xs = jnp.clip(jnp.round(jax.lax.stop_gradient(x0)), 0, nx - 1).astype(jnp.int32)
            ys = jnp.clip(jnp.round(jax.lax.stop_gradient(y0)), 0, ny - 1).astype(jnp.int32)
            dx = pixel_offsets(x0, xs - half, size, dtype)
            dy = pixel_offsets(y0, ys - half, size, dtype)
            ct = jax.lax.dynamic_slice(jnp.pad(cotangent, half), (xs, ys), (size, size))
        outputs = values_and_tangents(dx, dy, tuple(c[idx] for c in cov),
                                      tuple(t[idx] for t in dq), tuple(t[idx] for t in dphi),
                                      hybrid)
        total = total + jnp.stack([jnp.sum(weighted_sum(coef[idx], o) * ct)
                                   for o in outputs[1:]])
    return total


def param_vjp(model: Model, param: jax.Array, basis: jax.Array, cotangent: jax.Array,
              windows: tuple | None = None) -> jax.Array:
    """``J^T v``: the cotangent image ``v`` pulled back to the flat parameters (``J`` the model
    image's Jacobian, :func:`imcascade_jax.fit.model_and_jacobian`'s, never formed).

    Parameters
    ----------
    model : Model
        ``supports_closed_form(model)`` must hold.
    param : jax.Array, shape (Ndof,)
    basis : jax.Array, shape (N, nx, ny)
        ``render_basis`` at ``param`` (the flux columns, up to ``d flux / d param``).
    cotangent : jax.Array, shape (nx, ny)
    windows : tuple, optional
        A :func:`tangent_windows` plan for the structural columns.

    Returns
    -------
    jax.Array, shape (Ndof,)
    """
    p = unpack(model, param)
    g_struct = structural_vjp(model, p.x0, p.y0, p.q, p.phi, p.flux, cotangent, windows)
    dflux_da = p.flux * _LN10 if model.log_weight_scale else jnp.ones_like(p.flux)
    parts = [g_struct, jnp.tensordot(basis, cotangent, axes=2) * dflux_da]
    if model.n_sky:
        # The sky is linear in its parameters: its columns are the sky images of unit vectors.
        eye = jnp.eye(model.n_sky, dtype=param.dtype)
        sky = jax.vmap(lambda e: render_sky(model, e))(eye)
        parts.append(jnp.tensordot(sky, cotangent, axes=2))
    return jnp.concatenate(parts)


def basis_and_tangents_autodiff(model: Model, x0, y0, q, phi, flux):
    """Same as :func:`basis_and_tangents` by forward-mode autodiff (any render mode)."""
    structural = jnp.stack([jnp.asarray(v, model.dtype) for v in (x0, y0, q, phi)])
    basis, push = jax.linearize(lambda s: render_basis(model, s[0], s[1], s[2], s[3]), structural)
    tangents = jax.vmap(push)(jnp.eye(4, dtype=structural.dtype))  # (4, N, nx, ny)
    return basis, weighted_sum(flux, jnp.moveaxis(tangents, 1, 0))
