"""Synthetic galaxies for the demo, the tests and the benchmarks.

``quickstart_data`` reproduces imcascade's quickstart: a Sersic galaxy (n = 1.5, r_e = 6 px,
flux 250) on 150x150 pixels, convolved with a Moffat PSF (core width 3, power 3, 41x41), with
Gaussian noise of sigma 0.005. Images are made by oversampling the analytic profile and
convolving with the PSF by FFT, entirely independently of the multi-Gaussian model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gamma, gammaincinv


class SyntheticGalaxy(NamedTuple):
    """A synthetic observation and its truth.

    Attributes
    ----------
    img, err : numpy.ndarray
        Image and per-pixel noise sigma.
    psf : numpy.ndarray
        Normalised pixelised PSF.
    truth : dict
        ``x0, y0, q, phi, n, re, flux``.
    """

    img: np.ndarray
    err: np.ndarray
    psf: np.ndarray
    truth: dict


def sersic_b(n: float) -> float:
    """Exact ``b_n`` such that r_e encloses half of the light of a Sersic profile."""
    return float(gammaincinv(2.0 * n, 0.5))


def moffat_psf(size: int = 41, core: float = 3.0, power: float = 3.0,
               oversample: int = 5) -> np.ndarray:
    """Pixel-integrated, normalised Moffat PSF ``(1 + r^2/core^2)^-power`` centred on the grid."""
    c = (size - 1) / 2.0
    sub = (np.arange(size * oversample) + 0.5) / oversample - 0.5 - c
    r2 = sub[:, None] ** 2 + sub[None, :] ** 2
    psf = (1.0 + r2 / core**2) ** (-power)
    psf = psf.reshape(size, oversample, size, oversample).mean(axis=(1, 3))
    return psf / psf.sum()


def sersic_image(shape: tuple[int, int], x0: float, y0: float, n: float, re: float, flux: float,
                 q: float = 1.0, phi: float = 0.0, oversample: int = 7) -> np.ndarray:
    """Pixel-integrated Sersic image in imcascade's convention.

    ``re`` is the semi-major half-light radius; at ``phi = 0`` the major axis lies along axis 0.
    The total flux over the infinite plane is ``flux``.
    """
    nx, ny = shape
    sub_x = (np.arange(nx * oversample) + 0.5) / oversample - 0.5 - x0
    sub_y = (np.arange(ny * oversample) + 0.5) / oversample - 0.5 - y0
    dx, dy = sub_x[:, None], sub_y[None, :]
    c, s = np.cos(phi), np.sin(phi)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    r = np.sqrt(u**2 + (v / q) ** 2)
    b = sersic_b(n)
    ie = flux / (2.0 * np.pi * q * re**2 * n * np.exp(b) * b ** (-2.0 * n) * gamma(2.0 * n))
    img = ie * np.exp(-b * ((r / re) ** (1.0 / n) - 1.0))
    return img.reshape(nx, oversample, ny, oversample).mean(axis=(1, 3))


def make_galaxy(shape: tuple[int, int] = (150, 150), n: float = 1.5, re: float = 6.0,
                flux: float = 250.0, q: float = 1.0, phi: float = 0.0,
                centre: tuple[float, float] | None = None, noise: float = 0.005,
                psf: np.ndarray | None = None, seed: int = 0) -> SyntheticGalaxy:
    """A Sersic galaxy convolved with a PSF, plus Gaussian noise."""
    psf = moffat_psf() if psf is None else psf
    x0, y0 = centre if centre is not None else (shape[0] / 2.0, shape[1] / 2.0)
    clean = fftconvolve(sersic_image(shape, x0, y0, n, re, flux, q, phi), psf, mode="same")
    rng = np.random.default_rng(seed)
    img = clean + rng.normal(0.0, noise, size=shape)
    truth = dict(x0=x0, y0=y0, q=q, phi=phi, n=n, re=re, flux=flux)
    return SyntheticGalaxy(img, np.full(shape, noise), psf, truth)


def quickstart_data(seed: int = 0) -> SyntheticGalaxy:
    """imcascade's quickstart galaxy: Sersic n=1.5, r_e=6, flux 250, 150x150, Moffat PSF."""
    return make_galaxy(seed=seed)
