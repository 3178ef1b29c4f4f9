"""Synthetic multi-band galaxies for tests and benchmarks, made independently of the renderer.

The galaxy is a sum of concentric elliptical Gaussians (shared centre, axis ratio and angle in
the reference frame) whose fluxes differ from band to band (a colour gradient); each band has
its own Gaussian-mixture PSF and its own pixel grid (an affine map from the reference frame).
Images are computed in NumPy: the PSF-convolved galaxy is a sum of Gaussians of covariance
``A C A^T + C_psf`` (analytic convolution), integrated over each pixel on a sub-pixel grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import brentq


class SyntheticBand(NamedTuple):
    """One band of a synthetic galaxy.

    Attributes
    ----------
    shape : (int, int)
    psf_sig, psf_a : numpy.ndarray
        PSF mixture, in the band's pixels.
    psf_q, psf_phi : float
        PSF axis ratio and angle (1, 0: circular).
    A, t : numpy.ndarray
        Map reference frame -> band pixels.
    noise : float
        Gaussian noise sigma per pixel.
    """

    shape: tuple[int, int]
    psf_sig: np.ndarray
    psf_a: np.ndarray
    psf_q: float = 1.0
    psf_phi: float = 0.0
    A: np.ndarray = np.eye(2)
    t: np.ndarray = np.zeros(2)
    noise: float = 0.01


def _rotation(phi: float) -> np.ndarray:
    c, s = np.cos(phi), np.sin(phi)
    return np.array([[c, -s], [s, c]])


def gaussians_image(shape: Sequence[int], centre: np.ndarray, covs: np.ndarray, fluxes: np.ndarray,
                    oversample: int = 9) -> np.ndarray:
    """Pixel integrals (sub-pixel midpoint rule) of Gaussians of covariances ``covs`` (M, 2, 2)."""
    nx, ny = shape
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    xs = (np.arange(nx)[:, None] + sub[None, :]).ravel() - centre[0]
    ys = (np.arange(ny)[:, None] + sub[None, :]).ravel() - centre[1]
    img = np.zeros((nx * oversample, ny * oversample))
    for cov, f in zip(covs, fluxes, strict=True):
        p = np.linalg.inv(cov)
        quad = p[0, 0] * xs[:, None] ** 2 + 2 * p[0, 1] * xs[:, None] * ys[None, :] + \
            p[1, 1] * ys[None, :] ** 2
        img += f * np.exp(-0.5 * quad) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
    return img.reshape(nx, oversample, ny, oversample).mean(axis=(1, 3))


def band_image(band: SyntheticBand, x0: float, y0: float, q: float, phi: float, sig: np.ndarray,
               flux: np.ndarray, sky: float = 0.0, seed: int | None = 0) -> np.ndarray:
    """Noisy image of a Gaussian-sum galaxy (reference-frame geometry) in one band."""
    rot = _rotation(phi)
    prot = _rotation(band.psf_phi)
    covs, fluxes = [], []
    for s, f in zip(sig, flux, strict=True):
        gal = band.A @ rot @ np.diag([s**2, (s * q) ** 2]) @ rot.T @ band.A.T
        for ps, pa in zip(band.psf_sig, band.psf_a, strict=True):
            covs.append(gal + prot @ np.diag([ps**2, (ps * band.psf_q) ** 2]) @ prot.T)
            fluxes.append(f * pa)
    centre = band.A @ np.array([x0, y0]) + band.t
    img = gaussians_image(band.shape, centre, np.array(covs), np.array(fluxes)) + sky
    if seed is not None:
        img = img + np.random.default_rng(seed).normal(0.0, band.noise, band.shape)
    return img


def make_multiband_galaxy(bands: Mapping[str, SyntheticBand], x0: float, y0: float, q: float,
                          phi: float, sig: Any, flux: Mapping[str, Any],
                          sky: Mapping[str, float] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Noisy images of every band (seeds ``seed``, ``seed + 1``, ...), keyed by band."""
    sky = sky or {}
    return {name: band_image(b, x0, y0, q, phi, np.asarray(sig, float), np.asarray(flux[name], float),
                             sky.get(name, 0.0), seed + i)
            for i, (name, b) in enumerate(bands.items())}


def gaussian_sum_radius(frac: float, sig: Any, flux: Any) -> float:
    """Semi-major radius enclosing ``frac`` of a Gaussian sum's light (root by Brent's method)."""
    sig, flux = np.asarray(sig, float), np.asarray(flux, float)
    total = flux.sum()

    def excess(r: float) -> float:
        return float(np.sum(flux * -np.expm1(-0.5 * r * r / sig**2)) - frac * total)

    return float(brentq(excess, 1e-6 * sig.min(), 20 * sig.max(), xtol=1e-12))
