"""An exact reference renderer in NumPy: oversampled, analytically rotated Gaussian mixtures.

Independent of :mod:`imcascade_jax.render` (it shares no code with it): each pixel's integral of
the PSF-convolved mixture is approximated by the average over an ``oversample x oversample``
grid of sub-pixel midpoints. The midpoint rule's error is ``~ (1/24) (1/oversample^2)`` of the
second derivative, i.e. about ``2e-4`` of the peak at ``oversample = 15`` for a ~1 px wide
component, and ``25x`` smaller at ``oversample = 75``.

Conventions are imcascade 1.1's: pixel ``(i, j)`` is centred at ``(i, j)``, axis 0 first; the
galaxy covariance is ``R diag(sig^2, sig^2 q^2) R^T`` with ``R = [[cos phi, -sin phi],
[sin phi, cos phi]]``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf


def rotated_covariance(var, q, phi):
    """Covariance entries ``(cxx, cxy, cyy)`` of ``R diag(var, var q^2) R^T``.

    Parameters
    ----------
    var : array_like
        Variances along the major axis.
    q, phi : float
        Axis ratio and position angle (radians from axis 0 towards axis 1).

    Returns
    -------
    tuple of numpy.ndarray
        Axis-0 variance, covariance and axis-1 variance, each shaped like ``var``.
    """
    var = np.asarray(var, dtype=float)
    rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    cov = np.einsum("ab,...b,cb->...ac", rot, np.stack([var, var * q * q], axis=-1), rot)
    return cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]


def convolved_covariances(sig, q, phi, psf_sig=None, psf_q=1.0, psf_phi=0.0):
    """Covariances of every (galaxy, PSF) component pair, flattened galaxy-major.

    Returns
    -------
    tuple of numpy.ndarray
        ``(cxx, cxy, cyy)``, each of length ``N * P`` (``N`` without a PSF).
    """
    g = rotated_covariance(np.asarray(sig, dtype=float) ** 2, q, phi)
    if psf_sig is None:
        return tuple(np.asarray(c) for c in g)
    p = rotated_covariance(np.asarray(psf_sig, dtype=float) ** 2, psf_q, psf_phi)
    return tuple((gc[:, None] + pc[None, :]).ravel() for gc, pc in zip(g, p, strict=True))


def gaussians_image(shape, x0, y0, cxx, cxy, cyy, weights, oversample=15, chunk=8):
    """Pixel-averaged image of a weighted sum of normalised 2-D Gaussians.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    x0, y0 : float
        Common centre (pixel coordinates).
    cxx, cxy, cyy, weights : array_like
        Covariance entries and integrated flux of each Gaussian.
    oversample : int
        Sub-pixels per pixel along each axis.
    chunk : int
        Gaussians evaluated at once (memory bound).

    Returns
    -------
    numpy.ndarray
        Shape ``shape``: each pixel holds the average of the mixture over its area.
    """
    nx, ny = shape
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    xs = (np.arange(nx)[:, None] + sub[None, :]).ravel() - x0
    ys = (np.arange(ny)[:, None] + sub[None, :]).ravel() - y0
    cxx, cxy, cyy, weights = (np.atleast_1d(np.asarray(v, dtype=float))
                              for v in (cxx, cxy, cyy, weights))
    fine = np.zeros((xs.size, ys.size))
    for start in range(0, cxx.size, chunk):
        sl = slice(start, start + chunk)
        det = cxx[sl] * cyy[sl] - cxy[sl] ** 2
        pxx, pxy, pyy = cyy[sl] / det, -cxy[sl] / det, cxx[sl] / det
        x, y = xs[None, :, None], ys[None, None, :]
        quad = pxx[:, None, None] * x * x + 2 * pxy[:, None, None] * x * y + pyy[:, None, None] * y * y
        norm = weights[sl] / (2 * np.pi * np.sqrt(det))
        fine += np.einsum("c,cxy->xy", norm, np.exp(-0.5 * quad))
    return fine.reshape(nx, oversample, ny, oversample).mean(axis=(1, 3))


def reference_image(shape, x0, y0, q, phi, sig, flux, psf_sig=None, psf_a=None, psf_q=1.0,
                    psf_phi=0.0, oversample=15):
    """Exact (oversampled) image of an imcascade model without sky.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    x0, y0, q, phi : float
        Centre, axis ratio, position angle.
    sig, flux : array_like
        Widths and linear fluxes of the ``N`` galaxy components.
    psf_sig, psf_a : array_like or None
        PSF mixture (widths and weights); ``None`` for no PSF.
    psf_q, psf_phi : float
        Shape of an elliptical PSF (1, 0: circular).
    oversample : int
        Sub-pixels per pixel along each axis.

    Returns
    -------
    numpy.ndarray
    """
    cov = convolved_covariances(sig, q, phi, psf_sig, psf_q, psf_phi)
    flux = np.asarray(flux, dtype=float)
    weights = flux if psf_sig is None else (flux[:, None] * np.asarray(psf_a, float)[None, :]).ravel()
    return gaussians_image(shape, x0, y0, *cov, weights, oversample=oversample)


def axis_aligned_image(shape, x0, y0, sx, sy, weights):
    """Exact pixel integrals of axis-aligned Gaussians (products of erf differences).

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    x0, y0 : float
        Common centre.
    sx, sy, weights : array_like
        Standard deviations along axis 0 and axis 1, and fluxes.

    Returns
    -------
    numpy.ndarray
    """
    def pixel_fractions(n, centre, s):
        edges = (np.arange(n + 1) - 0.5 - centre)[None, :] / (np.sqrt(2.0) * s[:, None])
        return 0.5 * np.diff(erf(edges), axis=1)

    sx, sy, weights = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (sx, sy, weights))
    fx = pixel_fractions(shape[0], x0, sx)
    fy = pixel_fractions(shape[1], y0, sy)
    return np.einsum("c,cx,cy->xy", weights, fx, fy)


def second_moments(img):
    """Centroid and central second moments of an image, axis 0 first.

    Returns
    -------
    (float, float), (float, float, float)
        ``(mx, my)`` and ``(mxx, mxy, myy)``.
    """
    img = np.asarray(img, dtype=float)
    x = np.arange(img.shape[0])[:, None]
    y = np.arange(img.shape[1])[None, :]
    tot = img.sum()
    mx, my = (img * x).sum() / tot, (img * y).sum() / tot
    dx, dy = x - mx, y - my
    return (mx, my), ((img * dx * dx).sum() / tot, (img * dx * dy).sum() / tot,
                      (img * dy * dy).sum() / tot)
