"""Affine maps between bands from world coordinate systems (application layer).

A multi-band model maps the reference frame to each band's pixels by ``p_band = A p_ref + t``
(:mod:`imcascade_jax.multiband.model`). For images on different pixel grids the map comes from
their :class:`astropy.wcs.WCS` objects, linearised at the galaxy: over a galaxy's extent the
map between two tangent-plane projections is affine to high accuracy (the quadratic terms are of
order (size / distance to the projection centre)^2).

Pixel conventions: positions here are imcascade's ``(i, j)`` (axis 0, axis 1 of the numpy
array, 0-based, pixel centres at integers); astropy's pixel coordinates are ``(x, y) = (j, i)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import pixel_to_pixel

#: Half-step (reference pixels) of the central differences that linearise the map.
LINEARISE_STEP = 1.0


def _check_wcs(value: Any, name: str) -> WCS:
    if not isinstance(value, WCS):
        raise ValueError(f"{name} must be an astropy.wcs.WCS, got {type(value).__name__}")
    if value.pixel_n_dim != 2:
        raise ValueError(f"{name} must have 2 pixel axes, got {value.pixel_n_dim}")
    with np.errstate(invalid="ignore"):
        matrix = np.asarray(value.pixel_scale_matrix, float)
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(value.wcs.crpix)):
        raise ValueError(f"{name} has non-finite matrices (CD/PC/CDELT or CRPIX): {matrix.tolist()}")
    return value


def _to_band(ref_wcs: WCS, band_wcs: WCS, ij: np.ndarray) -> np.ndarray:
    """Reference ``(i, j)`` points (..., 2) -> band ``(i, j)``."""
    x, y = pixel_to_pixel(ref_wcs, band_wcs, ij[..., 1], ij[..., 0])
    return np.stack([np.asarray(y, float), np.asarray(x, float)], axis=-1)


def affine_from_wcs(ref_wcs: WCS, band_wcs: WCS, position: Sequence[float],
                    band_shape: Sequence[int], name: str = "band") -> tuple[np.ndarray, np.ndarray]:
    """The affine map reference pixels -> band pixels, linearised at ``position``.

    Parameters
    ----------
    ref_wcs, band_wcs : astropy.wcs.WCS
        Celestial WCS of the reference frame and of the band.
    position : (float, float)
        Galaxy centre ``(i, j)`` in reference pixels (axis 0, axis 1).
    band_shape : (int, int)
        The band image's shape: the mapped centre must fall on it.
    name : str
        Band name used in error messages.

    Returns
    -------
    A : numpy.ndarray, shape (2, 2)
    t : numpy.ndarray, shape (2,)
        ``p_band = A p_ref + t`` in ``(i, j)`` coordinates.

    Raises
    ------
    ValueError
        Naming the band: not a 2-D WCS, a map that is not finite or is singular at the galaxy,
        or a galaxy centre that falls outside the band's image.
    """
    ref_wcs = _check_wcs(ref_wcs, "'ref_wcs'")
    band_wcs = _check_wcs(band_wcs, f"band {name!r}: 'wcs'")
    p = np.asarray(position, dtype=float)
    if p.shape != (2,) or not np.all(np.isfinite(p)):
        raise ValueError(f"'position' must be two finite numbers, got {position!r}")
    h = LINEARISE_STEP
    pts = np.array([p, p + [h, 0], p - [h, 0], p + [0, h], p - [0, h]])
    with np.errstate(invalid="ignore"):
        mapped = _to_band(ref_wcs, band_wcs, pts)
    if not np.all(np.isfinite(mapped)):
        raise ValueError(f"band {name!r}: its 'wcs' maps the galaxy at reference pixel {tuple(p)} "
                         f"to non-finite coordinates (no overlap or a broken WCS)")
    A = np.stack([(mapped[1] - mapped[2]) / (2 * h), (mapped[3] - mapped[4]) / (2 * h)], axis=1)
    if not np.all(np.isfinite(A)) or abs(np.linalg.det(A)) < 1e-12:
        raise ValueError(f"band {name!r}: the map from the reference 'wcs' is not finite or is "
                         f"singular at the galaxy: A = {A}")
    centre = mapped[0]
    nx, ny = (int(s) for s in band_shape)
    if not (-0.5 <= centre[0] <= nx - 0.5 and -0.5 <= centre[1] <= ny - 0.5):
        raise ValueError(f"band {name!r}: its 'wcs' does not overlap the reference: the galaxy at "
                         f"reference pixel {tuple(p)} falls at {tuple(np.round(centre, 2))}, "
                         f"outside the band's {nx}x{ny} image")
    return A, centre - A @ p


def wcs_from_pixel_scale(pixel_scale: float, position: Sequence[float],
                         sky: Sequence[float] = (180.0, 0.0)) -> WCS:
    """A tangent-plane WCS for an image that has none: its pixel scale and the galaxy's pixel.

    For cutouts distributed without a header WCS but centred on a known object: every band gets
    a WCS that puts the same sky position ``sky`` at the galaxy's centre in that band, so
    :func:`affine_from_wcs` maps the bands onto each other through the galaxy. The grids are
    assumed aligned with north up and east to the left (no rotation between bands).

    Parameters
    ----------
    pixel_scale : float
        Arcsec per pixel (> 0).
    position : (float, float)
        The galaxy's centre ``(i, j)`` in this image (axis 0, axis 1; 0-based, pixel centres at
        integers).
    sky : (float, float)
        Right ascension and declination (deg) given to that centre; any value shared by the
        bands will do.

    Returns
    -------
    astropy.wcs.WCS
        ``RA---TAN`` / ``DEC--TAN`` with ``CRPIX = (j + 1, i + 1)`` (FITS: x = axis 1, 1-based)
        and ``CDELT = (-s, s) / 3600``.

    Raises
    ------
    ValueError
        For a pixel scale that is not a finite positive number, or a position or sky position
        that is not two finite numbers.
    """
    scale = float(pixel_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"'pixel_scale' must be a finite number > 0 (arcsec/px), got {pixel_scale!r}")
    for arg, value in (("position", position), ("sky", sky)):
        arr = np.asarray(value, dtype=float)
        if arr.shape != (2,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"'{arg}' must be two finite numbers, got {value!r}")
    out = WCS(naxis=2)
    out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    out.wcs.crval = [float(sky[0]), float(sky[1])]
    out.wcs.crpix = [float(position[1]) + 1.0, float(position[0]) + 1.0]
    out.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
    return out


def affines_from_wcs(ref_wcs: WCS, wcs: Mapping[str, WCS], position: Sequence[float],
                     shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`affine_from_wcs` for every band of ``shapes``.

    Raises
    ------
    ValueError
        When ``wcs`` lacks a band of ``shapes`` or has extra ones, or as :func:`affine_from_wcs`.
    """
    missing = [n for n in shapes if n not in wcs]
    extra = [n for n in wcs if n not in shapes]
    if missing or extra:
        raise ValueError(f"'wcs' must have one entry per band: missing {missing}, extra {extra}")
    return {n: affine_from_wcs(ref_wcs, wcs[n], position, shapes[n], n) for n in shapes}
