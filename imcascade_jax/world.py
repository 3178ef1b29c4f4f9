"""Sky coordinates and units for fit results: RA/Dec, position angle east of north, arcsec.

Pure functions of an ``astropy.wcs.WCS`` (or a pixel scale) and fitted pixel quantities,
vectorised over posterior samples (NumPy arrays of any shape broadcast together).

Pixel convention (imcascade's, see :mod:`imcascade_jax.model`): ``x0`` is the 0-based
coordinate along array axis 0 (= FITS y, rows) and ``y0`` along axis 1 (= FITS x, columns);
pixel ``(i, j)`` is centred at ``(i, j)``. FITS and ds9 positions are 1-based ``(X, Y)`` =
``(y0 + 1, x0 + 1)``. The model's ``phi`` (radians) turns the major axis from axis 0 towards
axis 1.

Sky convention: longitudes and latitudes in degrees in the WCS's own celestial frame (ICRS
for most modern images; ``frame_name`` says which); position angles in degrees east of north,
in [0, 180), the major axis measured from the direction of increasing latitude (north) towards
increasing longitude (east). The local WCS Jacobian (finite differences of the full WCS,
distortions included, projected onto the tangent plane at the point) carries pixel directions
and lengths onto the sky, so flipped, rotated, sheared and non-square pixels are all handled.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = [
    "celestial_wcs",
    "wcs_from_header",
    "wcs_from_fits",
    "frame_name",
    "pixel_to_world",
    "world_to_pixel",
    "local_jacobian",
    "pixel_scale_arcsec",
    "position_angle_east_of_north",
    "sky_ellipse",
    "wrap_position_angle",
    "sky_analysis",
]

ARCSEC_PER_DEG = 3600.0
#: Pixel step of the central differences giving the local Jacobian.
_STEP = 0.5


def celestial_wcs(wcs: Any, name: str = "wcs") -> Any:
    """The celestial part of a WCS; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    from astropy.wcs import WCS

    if not isinstance(wcs, WCS):
        raise TypeError(f"'{name}' must be an astropy.wcs.WCS, got {type(wcs).__name__}")
    if not wcs.has_celestial:
        raise ValueError(f"'{name}' has no celestial axes (RA/Dec): cannot give sky coordinates")
    cel = wcs.celestial
    if cel.naxis != 2:
        raise ValueError(f"'{name}' must have 2 celestial axes, got {cel.naxis}")
    return cel


def wcs_from_header(header: Any) -> Any | None:
    """The celestial WCS of a FITS header, or ``None`` when the header has none."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception:  # noqa: BLE001 (an unparsable WCS is no WCS; the caller says so)
            return None
    return wcs.celestial if wcs.has_celestial else None


def wcs_from_fits(path: str | os.PathLike, name: str = "image") -> Any | None:
    """The celestial WCS of a FITS image (HDU selectors as :mod:`imcascade_jax.inputs`)."""
    from imcascade_jax.inputs import read_fits_image

    _, header = read_fits_image(path, name)
    return wcs_from_header(header)


def frame_name(wcs: Any) -> str:
    """Name of the WCS's celestial frame, e.g. ``'icrs'`` or ``'fk5'``."""
    from astropy.wcs.utils import wcs_to_celestial_frame

    try:
        return wcs_to_celestial_frame(celestial_wcs(wcs)).name
    except ValueError:
        return "unknown"


def pixel_to_world(wcs: Any, x0: Any, y0: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sky coordinates of pixel positions.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        With celestial axes.
    x0, y0 : array_like
        0-based pixel coordinates along array axis 0 (FITS y) and axis 1 (FITS x).

    Returns
    -------
    lon, lat : numpy.ndarray
        Degrees in the WCS's frame (RA, Dec for equatorial frames); RA in [0, 360).
    """
    cel = celestial_wcs(wcs)
    # astropy's pixel order is (x, y) = (axis 1, axis 0), origin 0 as ours; its world axes
    # follow the header's order (latitude may come first).
    world = cel.all_pix2world(np.asarray(y0, float), np.asarray(x0, float), 0)
    return np.mod(world[cel.wcs.lng], 360.0), np.asarray(world[cel.wcs.lat])


def world_to_pixel(wcs: Any, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(x0, y0)`` (0-based, axis 0 = FITS y first) of sky positions.

    ``lon``, ``lat`` in degrees in the WCS's frame; the inverse of :func:`pixel_to_world`.
    """
    cel = celestial_wcs(wcs)
    world = [None, None]
    world[cel.wcs.lng], world[cel.wcs.lat] = np.asarray(lon, float), np.asarray(lat, float)
    px, py = cel.all_world2pix(*np.broadcast_arrays(*world), 0)
    return np.asarray(py), np.asarray(px)


def _tangent_offsets(lon, lat, lon0, lat0):
    """Gnomonic (east, north) offsets in degrees of (lon, lat) about (lon0, lat0)."""
    a, d, a0, d0 = (np.radians(v) for v in (lon, lat, lon0, lat0))
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    east = np.cos(d) * np.sin(a - a0) / cos_c
    north = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(east), np.degrees(north)


def local_jacobian(wcs: Any, x0: Any, y0: Any) -> np.ndarray:
    """Local linear map from pixel offsets to sky offsets, in arcsec per pixel.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    x0, y0 : array_like
        0-based pixel coordinates (axis 0 = FITS y, axis 1 = FITS x).

    Returns
    -------
    numpy.ndarray, shape (..., 2, 2)
        ``J[..., k, m]``: derivative of sky offset ``k`` (0 = east, 1 = north, arcsec on the
        tangent plane at the point) with respect to pixel coordinate ``m`` (0 = axis 0, 1 = axis 1).
        Central differences of the full WCS (distortions included) over +-0.5 pixel.
    """
    x0, y0 = np.broadcast_arrays(np.asarray(x0, float), np.asarray(y0, float))
    lon0, lat0 = pixel_to_world(wcs, x0, y0)
    cols = []
    for dx, dy in ((_STEP, 0.0), (0.0, _STEP)):
        lon_p, lat_p = pixel_to_world(wcs, x0 + dx, y0 + dy)
        lon_m, lat_m = pixel_to_world(wcs, x0 - dx, y0 - dy)
        e_p, n_p = _tangent_offsets(lon_p, lat_p, lon0, lat0)
        e_m, n_m = _tangent_offsets(lon_m, lat_m, lon0, lat0)
        cols.append(np.stack([e_p - e_m, n_p - n_m], axis=-1) * ARCSEC_PER_DEG / (2 * _STEP))
    return np.stack(cols, axis=-1)


def pixel_scale_arcsec(wcs: Any, x0: Any, y0: Any) -> np.ndarray:
    """Pixel scale at pixel positions: ``sqrt(|det J|)`` arcsec per pixel (the square root of
    the pixel's area on the sky; see :func:`local_jacobian` for the pixel convention)."""
    return np.sqrt(np.abs(np.linalg.det(local_jacobian(wcs, x0, y0))))


def sky_ellipse(jacobian: Any, q: Any, phi: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ellipse of the image carried onto the sky by a local Jacobian.

    Parameters
    ----------
    jacobian : array_like, shape (..., 2, 2)
        From :func:`local_jacobian` (arcsec per pixel; rows east, north; columns axis 0, axis 1).
    q, phi : array_like
        Axis ratio and angle of the major axis (radians, from array axis 0 towards axis 1).

    Returns
    -------
    pa_deg : numpy.ndarray
        Position angle of the sky ellipse's major axis, degrees east of north in [0, 180).
    q_sky : numpy.ndarray
        Its axis ratio (equal to ``q`` for square, unskewed pixels).
    arcsec_per_px : numpy.ndarray
        Semi-major axis on the sky (arcsec) per pixel of semi-major axis in the image: multiply
        the model's radii (pixels, semi-major axis) by this to get arcsec.
    """
    jac = np.asarray(jacobian, float)
    q, phi = np.asarray(q, float), np.asarray(phi, float)
    c, s = np.cos(phi), np.sin(phi)
    # Unit-major-axis ellipse in (axis 0, axis 1): R diag(1, q^2) R^T.
    shape_pix = np.empty(np.broadcast_shapes(q.shape, phi.shape) + (2, 2))
    shape_pix[..., 0, 0] = c * c + q * q * s * s
    shape_pix[..., 1, 1] = s * s + q * q * c * c
    shape_pix[..., 0, 1] = shape_pix[..., 1, 0] = (1 - q * q) * s * c
    sky = jac @ shape_pix @ np.swapaxes(jac, -1, -2)
    vals, vecs = np.linalg.eigh(sky)  # ascending: the last is the major axis
    east, north = vecs[..., 0, 1], vecs[..., 1, 1]
    pa = np.mod(np.degrees(np.arctan2(east, north)), 180.0)
    major = np.sqrt(vals[..., 1])
    return pa, np.sqrt(np.maximum(vals[..., 0], 0.0)) / major, major


def position_angle_east_of_north(wcs: Any, x0: Any, y0: Any, phi: Any, q: Any = None) -> np.ndarray:
    """Position angle on the sky of the model's major axis.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    x0, y0 : array_like
        Centre, 0-based pixels (axis 0 = FITS y, axis 1 = FITS x), where the WCS is linearised.
    phi : array_like
        Model angle, radians from array axis 0 towards axis 1.
    q : array_like, optional
        Axis ratio. With it, the angle is that of the major axis of the ellipse carried onto the
        sky (it differs from the image of the pixel major axis only for sheared or non-square
        pixels); without it, the angle of the image of the major-axis direction.

    Returns
    -------
    numpy.ndarray
        Degrees east of north, in [0, 180).
    """
    jac = local_jacobian(wcs, x0, y0)
    if q is not None:
        return sky_ellipse(jac, q, phi)[0]
    phi = np.asarray(phi, float)
    direction = np.stack([np.cos(phi), np.sin(phi)], axis=-1)[..., None]
    east, north = (jac @ direction)[..., 0, 0], (jac @ direction)[..., 1, 0]
    return np.mod(np.degrees(np.arctan2(east, north)), 180.0)


def wrap_position_angle(pa_deg: Any) -> np.ndarray:
    """Position angles (degrees, period 180) unwrapped around their circular mean, so that the
    median and percentiles of a posterior straddling 0/180 are meaningful.

    Returns values in ``[m - 90, m + 90)`` with ``m`` the circular mean in [0, 180).
    """
    pa = np.asarray(pa_deg, float)
    doubled = np.radians(2 * pa)
    mean = np.mod(np.degrees(np.arctan2(np.sin(doubled).mean(), np.cos(doubled).mean())) / 2, 180.0)
    return mean + np.mod(pa - mean + 90.0, 180.0) - 90.0


def sky_analysis(
    x0: Any,
    y0: Any,
    q: Any,
    phi: Any,
    radii: dict[str, Any],
    wcs: Any = None,
    pixel_scale: float | None = None,
) -> dict[str, np.ndarray]:
    """Sky coordinates and angular sizes of fitted quantities, per parameter set.

    Parameters
    ----------
    x0, y0, q, phi : array_like
        Centre (0-based pixels, axis 0 = FITS y first), axis ratio and angle (radians, from axis
        0 towards axis 1), one value per parameter set.
    radii : dict of array_like
        Semi-major-axis radii in pixels (e.g. ``{'r50': ...}``); each gets an ``'<key>_arcsec'``.
    wcs : astropy.wcs.WCS, optional
        The image's WCS: gives ``ra``, ``dec`` (degrees, the WCS's frame), ``pa_deg`` (degrees
        east of north, [0, 180)), ``q_sky`` (axis ratio on the sky) and ``pixel_scale``
        (arcsec per pixel, ``sqrt(|det J|)`` at the centre), and the radii in arcsec along the
        sky ellipse's major axis.
    pixel_scale : float, optional
        Arcsec per pixel, for the radii in arcsec when there is no WCS (no sky position or
        orientation then). With a WCS it must agree with the WCS's scale to 1%.

    Returns
    -------
    dict of numpy.ndarray
        Empty when neither ``wcs`` nor ``pixel_scale`` is given.
    """
    out: dict[str, np.ndarray] = {}
    if wcs is not None:
        jac = local_jacobian(wcs, x0, y0)
        out["ra"], out["dec"] = pixel_to_world(wcs, x0, y0)
        out["pa_deg"], out["q_sky"], major_scale = sky_ellipse(jac, q, phi)
        out["pixel_scale"] = np.sqrt(np.abs(np.linalg.det(jac)))
        if pixel_scale is not None and not np.allclose(out["pixel_scale"], pixel_scale, rtol=0.01):
            raise ValueError(f"'pixel_scale' {pixel_scale} arcsec/px disagrees with the WCS's "
                             f"{float(np.median(out['pixel_scale'])):.6g}: give only one of them")
    elif pixel_scale is not None:
        if not np.isfinite(pixel_scale) or pixel_scale <= 0:
            raise ValueError(f"'pixel_scale' must be a positive number (arcsec/px), got {pixel_scale}")
        major_scale = float(pixel_scale)
    else:
        return out
    for key, r in radii.items():
        out[f"{key}_arcsec"] = np.asarray(r, float) * major_scale
    return out
