"""Per-band results of multi-band fits: fluxes, magnitudes, radii and colour profiles.

Every band shares the reference-frame widths ``sig`` and axis ratio ``q``, so radii (semi-major
axis, reference-frame pixels) and profiles of different bands are directly comparable. Fluxes are
``(..., B, N)``: one set per band (``(B, N)``) or a batch of posterior samples (``(S, B, N)``);
the single-band functions of :mod:`imcascade_jax.analysis` do the work band by band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.analysis import basic_analysis, sbp


def _zero_points(zpt: Any, names: Sequence[str]) -> list[float | None]:
    if zpt is None:
        return [None] * len(names)
    if isinstance(zpt, Mapping):
        missing = [n for n in names if n not in zpt]
        if missing:
            raise ValueError(f"'zpt' has no zero point for band(s) {missing}")
        return [float(zpt[n]) for n in names]
    return [float(zpt)] * len(names)


def band_analysis(flux: Any, sig: Any, names: Sequence[str], zpt: Any = None,
                  cutoff: float | None = None) -> dict[str, dict[str, jax.Array]]:
    """Total flux, magnitude, r20/r50/r80/r90 and concentrations of each band.

    Parameters
    ----------
    flux : array_like, shape (..., B, N)
        Linear component fluxes of every band.
    sig : array_like, shape (N,)
        Reference-frame widths (radii come out in reference-frame pixels, semi-major axis).
    names : sequence of str
        Band names, ``B`` of them.
    zpt : float or mapping band name -> float, optional
        Photometric zero point(s); adds ``'mag'``.
    cutoff : float, optional
        Semi-major-axis radius bounding the flux (see :func:`imcascade_jax.analysis.flux`).

    Returns
    -------
    dict band name -> dict of jax.Array
        :func:`imcascade_jax.analysis.basic_analysis` of each band (each value of shape ``...``).
    """
    flux = jnp.asarray(flux)
    if flux.ndim < 2 or flux.shape[-2] != len(names):
        raise ValueError(f"'flux' must have shape (..., {len(names)}, N), got {flux.shape}")
    zpts = _zero_points(zpt, names)
    return {name: basic_analysis(flux[..., b, :], sig, cutoff=cutoff, zpt=zpts[b])
            for b, name in enumerate(names)}


def colour_profile(r: Any, flux: Any, sig: Any, q: Any, band_1: int, band_2: int,
                   zpt_1: float = 0.0, zpt_2: float = 0.0) -> jax.Array:
    """Intrinsic colour along the major axis, ``mag_1(r) - mag_2(r)``.

    ``-2.5 log10(SB_1(r) / SB_2(r)) + zpt_1 - zpt_2`` with ``SB_b`` the intrinsic surface
    brightness of band ``b`` (:func:`imcascade_jax.analysis.sbp`, per reference-frame pixel
    area). With equal zero points (the default) it is the colour in the images' flux units.

    Parameters
    ----------
    r : array_like
        Semi-major-axis radii, reference-frame pixels.
    flux : array_like, shape (..., B, N)
    sig : array_like, shape (N,)
    q : array_like, broadcastable to ``...``
        Axis ratio (per sample when ``flux`` is a batch of samples).
    band_1, band_2 : int
        Positions of the two bands.
    zpt_1, zpt_2 : float

    Returns
    -------
    jax.Array, shape (..., *r.shape)
    """
    flux = jnp.asarray(flux)
    sb_1 = sbp(r, flux[..., band_1, :], sig, q)
    sb_2 = sbp(r, flux[..., band_2, :], sig, q)
    return -2.5 * jnp.log10(sb_1 / sb_2) + (zpt_1 - zpt_2)


def colour_bands(r: Any, flux_samples: Any, sig: Any, q: Any, band_1: int, band_2: int,
                 zpt_1: float = 0.0, zpt_2: float = 0.0,
                 percentiles: Sequence[float] = (2.275, 15.865, 50.0, 84.135, 97.725)) -> np.ndarray:
    """Posterior percentiles of a colour profile.

    Parameters
    ----------
    r, sig, q, band_1, band_2, zpt_1, zpt_2
        As :func:`colour_profile`; ``q`` a scalar or one value per sample.
    flux_samples : array_like, shape (S, B, N)
    percentiles : sequence of float
        Default: the 2-sigma, 1-sigma and median levels of a normal distribution.

    Returns
    -------
    numpy.ndarray, shape (len(percentiles), *r.shape)
    """
    colours = colour_profile(r, flux_samples, sig, q, band_1, band_2, zpt_1, zpt_2)
    return np.percentile(np.asarray(colours), np.asarray(percentiles), axis=0)
