"""Pure renderers for multi-Gaussian models: pixel-integrated, analytically rotated Gaussians.

Every function here is a pure function of a :class:`~imcascade_jax.model.Model` (static settings
plus width/PSF arrays) and traced parameters: jit-able, vmap-able and differentiable.

Each galaxy component ``k`` (width ``sig_k``) convolved with PSF component ``j`` (width ``s_j``)
is an elliptical Gaussian with covariance ``C_kj = R(phi) diag(sig_k^2, sig_k^2 q^2) R(phi)^T +
C_psf_j``, where ``C_psf_j = s_j^2 I`` for a circular PSF (then the axis ratio is
``sqrt((sig_k^2 q^2 + s_j^2) / (sig_k^2 + s_j^2))`` as in imcascade 1.1) and the PSF's own rotated
covariance for an elliptical one. Rotation is analytic: no image is ever interpolated.

Render modes
------------
``'erf'``
    The exact pixel integral: along the axis where the component's marginal is narrower, the
    Gaussian conditioned on the other coordinate is integrated with ``erf``; along the other
    axis the pixel is integrated by Gauss-Legendre quadrature (``EXACT_NODES`` nodes), accurate
    to ~1e-7 of the peak for widths >= 0.5 px.
``'gauss'``
    The Gaussian evaluated at pixel centres (fast, biased for components of ~1 px).
``'hybrid'`` (default)
    Each galaxy component is rendered in a square window of ``5 sigma`` about the centre and set
    to zero beyond an elliptical radius of ``5 sigma`` (as imcascade 1.1). Inside, the pixel
    integral is the Gaussian with the pixel's variance (1/12) added, corrected to sixth order
    in the pixel's cumulants (one ``exp`` per pixel; worst error 6e-6 of the peak at a 1 px
    minor width, 8e-5 at 0.7 px); components whose minor width can fall below
    ``HYBRID_EXACT_BELOW`` (0.7) px (no PSF, or a very narrow one) switch to the exact integral
    where they are that narrow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.model import HYBRID_EXACT_BELOW, HYBRID_NSIGMA, Model
from imcascade_jax.params import Params, check_length, unpack

#: Gauss-Legendre nodes per pixel along axis 1 in the exact pixel integral.
EXACT_NODES = 6
_GL_T, _GL_W = np.polynomial.legendre.leggauss(EXACT_NODES)
_GL_T, _GL_W = 0.5 * _GL_T, 0.5 * _GL_W  # mapped onto a pixel [-1/2, 1/2], weights sum to 1
#: Variance of the uniform pixel response.
PIXEL_VAR = 1.0 / 12.0
#: ``log sinc(k/2) = -k^2/24 - k^4/2880 - k^6/181440 - ...``: the pixel's cumulants beyond the
#: variance (:func:`box_correction`).
BOX_K4 = 1.0 / 2880.0
BOX_K6 = 1.0 / 181440.0
#: Hybrid mode: squared elliptical radius (in sigma) beyond which a component is zero.
CUTOFF_Q = HYBRID_NSIGMA**2


def covariances(model: Model, q: jax.Array, phi: jax.Array):
    """Covariance entries of every PSF-convolved component.

    Parameters
    ----------
    model : Model
    q, phi : scalar arrays
        Axis ratio and position angle of the galaxy.

    Returns
    -------
    cxx, cxy, cyy : jax.Array
        Shape ``(N, P)``: axis-0 variance, covariance, axis-1 variance of component ``(k, j)``.
    """
    var = model.sig**2
    c, s = jnp.cos(phi), jnp.sin(phi)
    minor = var * q * q
    gxx = var * c * c + minor * s * s
    gyy = var * s * s + minor * c * c
    gxy = (var - minor) * s * c
    pvar = model.psf_sig**2
    if model.elliptical_psf:
        pc, ps = jnp.cos(model.psf_phi), jnp.sin(model.psf_phi)
        pminor = pvar * model.psf_q**2
        pxx, pyy, pxy = pvar * pc * pc + pminor * ps * ps, pvar * ps * ps + pminor * pc * pc, \
            (pvar - pminor) * ps * pc
    else:
        pxx, pyy, pxy = pvar, pvar, jnp.zeros_like(pvar)
    return (gxx[:, None] + pxx[None, :], gxy[:, None] + pxy[None, :], gyy[:, None] + pyy[None, :])


def _inverse(cxx, cxy, cyy):
    det = cxx * cyy - cxy * cxy
    return cyy / det, -cxy / det, cxx / det, det


def _centre_values(dx, dy, cxx, cxy, cyy):
    """Normalised Gaussians at pixel centres. dx: (nx,), dy: (ny,), cov: (C,) -> (C, nx, ny)."""
    pxx, pxy, pyy, det = (t[:, None, None] for t in _inverse(cxx, cxy, cyy))
    x, y = dx[None, :, None], dy[None, None, :]
    quad = pxx * x * x + 2.0 * pxy * x * y + pyy * y * y
    return jnp.exp(-0.5 * quad) / (2.0 * jnp.pi * jnp.sqrt(det))


def box_correction(wx, wy, pxx, pyy):
    """The pixel-response correction factor of a Gaussian, to sixth order in the pixel's cumulants.

    The pixel response (a unit box) has characteristic function ``exp(-k^2/24 - k^4/2880 -
    k^6/181440 - ...)`` per axis, so ``G * box = G' - (1/2880) (dx^4 + dy^4) G' + (1/181440)
    (dx^6 + dy^6) G' + O(d^8)`` with ``G'`` the Gaussian whose covariance has 1/12 added on the
    diagonal. With precision ``P`` and ``w = P d``: ``dx^4 G' = (w^4 - 6 p w^2 + 3 p^2) G'`` and
    ``dx^6 G' = (w^6 - 15 p w^4 + 45 p^2 w^2 - 15 p^3) G'`` (``p = P_xx``, ``w = w_x``).

    Parameters
    ----------
    wx, wy, pxx, pyy : jax.Array
        Components of ``P d`` and diagonal precisions (broadcastable).

    Returns
    -------
    jax.Array
        ``G * box / G'``. (:mod:`imcascade_jax.derivatives` evaluates the same polynomial,
        expanded in ``w^2`` with per-component coefficients, and its partial derivatives.)
    """

    def axis(w, p):
        w2 = w * w
        d4 = w2 * (w2 - 6.0 * p) + 3.0 * p * p
        d6 = w2 * (w2 * (w2 - 15.0 * p) + 45.0 * p * p) - 15.0 * p * p * p
        return BOX_K6 * d6 - BOX_K4 * d4

    return 1.0 + axis(wx, pxx) + axis(wy, pyy)


def _box_corrected_values(dx, dy, cxx, cxy, cyy, cutoff: bool):
    """Pixel integrals to sixth order in the pixel's cumulants (:func:`box_correction`): (C, nx, ny)."""
    pxx, pxy, pyy, det = (t[:, None, None] for t in
                          _inverse(cxx + PIXEL_VAR, cxy, cyy + PIXEL_VAR))
    x, y = dx[None, :, None], dy[None, None, :]
    wx = pxx * x + pxy * y
    wy = pxy * x + pyy * y
    quad = wx * x + wy * y
    vals = jnp.exp(-0.5 * quad) * box_correction(wx, wy, pxx, pyy) / (2.0 * jnp.pi * jnp.sqrt(det))
    if cutoff:
        vals = jnp.where(quad > CUTOFF_Q, 0.0, vals)
    return vals


def variance_difference(model: Model, q: jax.Array, phi: jax.Array) -> jax.Array:
    """``cxx - cyy`` of every PSF-convolved component, computed directly: shape ``(N, P)``.

    ``var (1 - q^2) cos(2 phi)`` plus the PSF's own term (zero for a circular PSF): exactly 0 at
    ``q = 1``, and its sign does not depend on how ``cxx`` and ``cyy`` were rounded, which
    makes it the quantity that chooses the narrow axis of :func:`exact_values`.
    """
    galaxy = model.sig**2 * (1.0 - q * q) * jnp.cos(2.0 * phi)
    if model.elliptical_psf:
        psf = model.psf_sig**2 * (1.0 - model.psf_q**2) * jnp.cos(2.0 * model.psf_phi)
    else:
        psf = jnp.zeros_like(model.psf_sig)
    return galaxy[:, None] + psf[None, :]


def exact_values(dx, dy, cxx, cxy, cyy, difference=None):
    """Exact pixel integrals (up to quadrature along one axis): (C, nx, ny).

    Each component is integrated exactly (erf) along the axis where its marginal is narrower
    and by quadrature along the wider one: quadrature across a marginal narrower than the node
    spacing is wrong (2e-3 of the peak at a 0.15 px minor width, 40% at 0.05 px), which happens
    without a PSF at small q.

    ``difference`` (shape (C,), default ``cxx - cyy``) chooses the axis: exact along axis 1
    where it is > 0. The choice is computed once, behind an optimisation barrier: XLA would
    otherwise recompute the comparison in each fusion that uses it, with different rounding
    (fused multiply-adds), and could swap the inputs of a component but not its output.
    """
    if difference is None:
        difference = cxx - cyy
    swap = jax.lax.optimization_barrier(difference > 0)  # integrate exactly along axis 1
    if dx.shape == dy.shape:
        # Square grid: swap the roles of the axes per component, one evaluation.
        s = swap[:, None]
        vals = _exact_conditional(jnp.where(s, dy, dx), jnp.where(s, dx, dy),
                                  jnp.where(swap, cyy, cxx), cxy, jnp.where(swap, cxx, cyy))
        return jnp.where(swap[:, None, None], jnp.swapaxes(vals, 1, 2), vals)
    along_0 = _exact_conditional(dx[None], dy[None], cxx, cxy, cyy)
    along_1 = jnp.swapaxes(_exact_conditional(dy[None], dx[None], cyy, cxy, cxx), 1, 2)
    return jnp.where(swap[:, None, None], along_1, along_0)


def _exact_conditional(u, v, cuu, cuv, cvv):
    """Pixel integrals, exact along u and by quadrature along v: (C, nu, nv).

    Conditioned on the v coordinate, the u profile is Gaussian with mean ``(cuv/cvv) v`` and
    variance ``det/cvv``: its pixel integral is a difference of erfs at the pixel edges (shared
    by neighbouring pixels). The v marginal ``N(v; cvv)`` times that is integrated over the
    pixel with Gauss-Legendre nodes. ``u``: (C or 1, nu) and ``v``: (C or 1, nv) offsets.
    """
    dtype = u.dtype
    t = jnp.asarray(_GL_T, dtype)
    w = jnp.asarray(_GL_W, dtype)
    cuu, cuv, cvv = (a[:, None, None, None] for a in (cuu, cuv, cvv))
    det = cuu * cvv - cuv * cuv
    slope = cuv / cvv
    inv_s = 1.0 / jnp.sqrt(2.0 * det / cvv)
    y = v[:, None, :, None] + t  # (C|1, 1, nv, K)
    edges = jnp.concatenate([u - 0.5, u[:, -1:] + 0.5], axis=1)[:, :, None, None]  # (C|1, nu+1, 1, 1)
    cdf = 0.5 * jax.scipy.special.erf((edges - slope * y) * inv_s)  # (C, nu+1, nv, K)
    row = cdf[:, 1:] - cdf[:, :-1]  # (C, nu, nv, K)
    marginal = jnp.exp(-0.5 * y * y / cvv) / jnp.sqrt(2.0 * jnp.pi * cvv) * w  # (C, 1, nv, K)
    return jnp.sum(row * marginal, axis=-1)


def _minor_variance(cxx, cxy, cyy):
    half_tr = 0.5 * (cxx + cyy)
    return half_tr - jnp.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy * cxy)


def pixel_offsets(centre, start, size: int, dtype):
    """Pixel-centre coordinates relative to ``centre`` for ``size`` pixels from ``start``."""
    return (jnp.asarray(start, dtype) + jnp.arange(size, dtype=dtype)) - centre


def _component_values(model: Model, mode: str, dx, dy, cov, exact: bool, difference=None):
    """Unit-flux values of components with covariances ``cov`` (each (C,)) on a dx-dy grid.

    ``difference``: ``cxx - cyy`` computed without cancellation (see :func:`exact_values`).
    """
    if mode == "gauss":
        return _centre_values(dx, dy, *cov)
    if mode == "erf":
        return exact_values(dx, dy, *cov, difference)
    vals = _box_corrected_values(dx, dy, *cov, cutoff=True)
    if exact:
        narrow = _minor_variance(*cov) < HYBRID_EXACT_BELOW**2
        exact_vals = exact_values(dx, dy, *cov, difference)
        # Beyond 5 sigma the hybrid image is zero in either branch.
        vals = jnp.where(narrow[:, None, None], jnp.where(vals == 0.0, 0.0, exact_vals), vals)
    return vals


def psf_weighted(vals, psf_a):
    """Sum over the PSF axis (axis 1) of (n, P, ...) values weighted by ``psf_a``.

    Unrolled on purpose: XLA fuses the weighted sum with the exponentials, which is ~3x faster
    on the CPU than an einsum/dot over that axis.
    """
    out = psf_a[0] * vals[:, 0]
    for j in range(1, vals.shape[1]):
        out = out + psf_a[j] * vals[:, j]
    return out


def _window_basis(model: Model, half: int, x0, y0, cov, difference):
    """Basis images of components sharing a (2 half + 1)^2 window, placed on the full frame.

    ``cov`` entries and ``difference`` have shape (n, P); returns (n, nx, ny).
    """
    nx, ny = model.shape
    size = 2 * half + 1
    dtype = model.dtype
    n, p = cov[0].shape
    # The window follows the (rounded, clipped) centre; coordinates stay exact, so clipping only
    # decides which pixels are computed, never what they hold.
    xs = jnp.clip(jnp.round(jax.lax.stop_gradient(x0)), 0, nx - 1).astype(jnp.int32)
    ys = jnp.clip(jnp.round(jax.lax.stop_gradient(y0)), 0, ny - 1).astype(jnp.int32)
    dx = pixel_offsets(x0, xs - half, size, dtype)
    dy = pixel_offsets(y0, ys - half, size, dtype)
    vals = _component_values(model, "hybrid", dx, dy, tuple(c.ravel() for c in cov),
                             needs_exact(model), difference.ravel())
    win = psf_weighted(vals.reshape(n, p, size, size), model.psf_a)
    canvas = jnp.zeros((n, nx + 2 * half, ny + 2 * half), dtype)
    canvas = jax.lax.dynamic_update_slice(canvas, win, (jnp.int32(0), xs, ys))
    return canvas[:, half:half + nx, half:half + ny]


def needs_exact(model: Model) -> bool:
    """Whether the model's static plan includes the exact pixel integral (hybrid mode)."""
    return bool(model.exact and any(model.exact))


def render_components(model: Model, x0, y0, q, phi) -> jax.Array:
    """Unit-flux images of every PSF-convolved component, before PSF weighting.

    Returns
    -------
    jax.Array
        Shape ``(N, P, nx, ny)``: component ``(k, j)`` integrates to ~1 (less what falls outside
        the image, and in hybrid mode beyond 5 sigma).
    """
    nx, ny = model.shape
    dtype = model.dtype
    x0, y0, q, phi = (jnp.asarray(v, dtype) for v in (x0, y0, q, phi))
    cxx, cxy, cyy = covariances(model, q, phi)
    n, p = cxx.shape
    dx = pixel_offsets(x0, 0, nx, dtype)
    dy = pixel_offsets(y0, 0, ny, dtype)
    vals = _component_values(model, model.render_mode, dx, dy,
                             (cxx.ravel(), cxy.ravel(), cyy.ravel()), needs_exact(model),
                             variance_difference(model, q, phi).ravel())
    return vals.reshape(n, p, nx, ny)


def render_basis(model: Model, x0, y0, q, phi) -> jax.Array:
    """Unit-flux image of each galaxy component, convolved with the PSF.

    The model image is ``tensordot(flux, basis, 1) + sky``; the basis is also the Jacobian of the
    image with respect to the linear fluxes.

    Parameters
    ----------
    model : Model
    x0, y0, q, phi : scalar arrays
        Centre, axis ratio and position angle.

    Returns
    -------
    jax.Array
        Shape ``(N, nx, ny)``.
    """
    dtype = model.dtype
    x0, y0, q, phi = (jnp.asarray(v, dtype) for v in (x0, y0, q, phi))
    if model.render_mode != "hybrid":
        return psf_weighted(render_components(model, x0, y0, q, phi), model.psf_a)
    nx, ny = model.shape
    cxx, cxy, cyy = covariances(model, q, phi)
    diff = variance_difference(model, q, phi)
    dx = pixel_offsets(x0, 0, nx, dtype)
    dy = pixel_offsets(y0, 0, ny, dtype)
    windows = np.asarray(model.windows)
    order = np.argsort(windows, kind="stable")  # full-frame (-1) components first
    full = [int(k) for k in order if windows[k] < 0]
    windowed = [int(k) for k in order if windows[k] >= 0]
    parts = []
    if full:
        idx = np.asarray(full)
        n, p = len(full), model.n_psf
        vals = _component_values(model, "hybrid", dx, dy,
                                 (cxx[idx].ravel(), cxy[idx].ravel(), cyy[idx].ravel()),
                                 needs_exact(model), diff[idx].ravel())
        parts.append(psf_weighted(vals.reshape(n, p, nx, ny), model.psf_a))
    if windowed:
        idx = np.asarray(windowed)
        parts.append(_window_basis(model, int(windows[idx[0]]), x0, y0,
                                   (cxx[idx], cxy[idx], cyy[idx]), diff[idx]))
    if not windowed:
        return parts[0]  # the components in their own order: no reordering (a gather in XLA)
    basis = jnp.concatenate(parts, axis=0)
    return basis[np.argsort(np.asarray(full + windowed))]


def render_sky(model: Model, sky: jax.Array) -> jax.Array:
    """Sky image: flat ``sky0`` or tilted plane ``sky0 + (X - X_c) sky1 + (Y - Y_c) sky2``.

    ``(X_c, Y_c)`` is ``model.sky_centre``: ``(nx/2, ny/2)`` of the image the model was made
    for (also after padding to a larger shape), as imcascade 1.1. Returns zeros when the model
    has no sky.
    """
    nx, ny = model.shape
    dtype = model.dtype
    sky = jnp.asarray(sky, dtype)
    if model.sky_type is None:
        return jnp.zeros((nx, ny), dtype)
    if model.sky_type == "flat":
        return jnp.broadcast_to(sky[0], (nx, ny))
    if model.sky_centre is None:
        xc, yc = nx / 2.0, ny / 2.0
    else:
        centre = jnp.asarray(model.sky_centre, dtype)
        xc, yc = centre[..., 0], centre[..., 1]
    xs = jnp.arange(nx, dtype=dtype) - xc
    ys = jnp.arange(ny, dtype=dtype) - yc
    return sky[0] + xs[:, None] * sky[1] + ys[None, :] * sky[2]


def weighted_sum(weights: jax.Array, stack: jax.Array) -> jax.Array:
    """``tensordot(weights, stack, 1)`` for a short leading axis, unrolled.

    On the CPU a dot (or a reduction) over the component axis makes XLA fuse the exponentials
    into a reduction loop that does not vectorise them: measured on the 150x150 quickstart,
    ``tensordot(flux, basis, 1)`` made a render ~3x slower than this sum of scaled images.
    """
    out = weights[0] * stack[0]
    for k in range(1, stack.shape[0]):
        out = out + weights[k] * stack[k]
    return out


def render_params(model: Model, p: Params) -> jax.Array:
    """Model image (galaxy plus sky) from :class:`~imcascade_jax.params.Params`."""
    basis = render_basis(model, p.x0, p.y0, p.q, p.phi)
    return weighted_sum(p.flux, basis) + render_sky(model, p.sky)


def render(model: Model, param: jax.Array) -> jax.Array:
    """Model image from imcascade's flat parameter vector ``[x0, y0, q, phi, a..., sky...]``.

    Parameters
    ----------
    model : Model
    param : array_like, shape (..., Ndof)
        Fluxes in log10 when ``model.log_weight_scale``. Leading axes are a batch: each vector
        is rendered (``jax.vmap``).

    Returns
    -------
    jax.Array
        Shape ``(..., *model.shape)``.

    Raises
    ------
    ValueError
        If the last axis of ``param`` is not ``model.n_params`` long.
    """
    check_length(model, param)
    param = jnp.asarray(param, model.dtype)
    if param.ndim == 1:
        return render_params(model, unpack(model, param))
    flat = param.reshape(-1, param.shape[-1])
    images = jax.vmap(lambda p: render_params(model, unpack(model, p)))(flat)
    return images.reshape(param.shape[:-1] + tuple(model.shape))


def render_gaussians(model: Model, x0, y0, cxx, cxy, cyy, mode: str | None = None) -> jax.Array:
    """Unit-flux images of arbitrary Gaussians on the model's full image grid.

    Parameters
    ----------
    model : Model
        Supplies the image shape, dtype and (by default) the render mode.
    x0, y0 : scalar arrays
        Common centre.
    cxx, cxy, cyy : array_like, shape (C,)
        Covariance entries of each Gaussian.
    mode : {'hybrid', 'erf', 'gauss'}, optional
        Overrides ``model.render_mode``. Hybrid applies the 5-sigma cutoff and switches to the
        exact integral for Gaussians narrower than ``HYBRID_EXACT_BELOW``.

    Returns
    -------
    jax.Array
        Shape ``(C, nx, ny)``.
    """
    nx, ny = model.shape
    dtype = model.dtype
    x0, y0 = jnp.asarray(x0, dtype), jnp.asarray(y0, dtype)
    cov = tuple(jnp.atleast_1d(jnp.asarray(c, dtype)) for c in (cxx, cxy, cyy))
    dx = pixel_offsets(x0, 0, nx, dtype)
    dy = pixel_offsets(y0, 0, ny, dtype)
    return _component_values(model, mode or model.render_mode, dx, dy, cov, exact=True)
