"""Tests of imcascade_jax.world: pixel <-> sky, position angles east of north, arcsec.

Every expected number comes from astropy's high-level API (``WCS.pixel_to_world``,
``SkyCoord.position_angle``), which shares no code with the Jacobian used here.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from imcascade_jax import world


def rotated_wcs(theta_deg=30.0, scale=0.2, flip=True, lat_first=False):
    """A TAN WCS with pixel scale ``scale`` arcsec, rotated by theta, east left when flipped."""
    w = WCS(naxis=2)
    th = np.radians(theta_deg)
    sign = -1.0 if flip else 1.0
    # Rotation times a flip of FITS X: an orthogonal (square-pixel) CD matrix.
    cd = scale / 3600 * np.array([[sign * np.cos(th), -np.sin(th)], [sign * np.sin(th), np.cos(th)]])
    if lat_first:
        w.wcs.ctype = ["DEC--TAN", "RA---TAN"]
        w.wcs.crval = [2.2, 150.1]
        cd = cd[::-1]
    else:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [20.0, 45.0]
    w.wcs.cd = cd
    return w


def _true_pa(w, x0, y0, phi):
    """PA (deg east of north) of the sky direction one pixel along the model's major axis."""
    c0 = w.pixel_to_world(y0, x0)
    c1 = w.pixel_to_world(y0 + np.sin(phi), x0 + np.cos(phi))
    return c0.position_angle(c1).deg % 180


@pytest.mark.parametrize("kwargs", [{}, {"flip": False, "theta_deg": -70.0},
                                    {"lat_first": True, "theta_deg": 110.0}])
def test_pixel_to_world_and_back(kwargs):
    w = rotated_wcs(**kwargs)
    x0, y0 = np.array([30.3, 0.0, 63.0]), np.array([33.6, 10.0, 5.5])
    ra, dec = world.pixel_to_world(w, x0, y0)
    truth = w.pixel_to_world(y0, x0)  # astropy: (x, y) = (axis 1, axis 0)
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(truth).arcsec
    assert np.all(sep < 1e-6)
    bx, by = world.world_to_pixel(w, ra, dec)
    np.testing.assert_allclose(bx, x0, atol=1e-8)
    np.testing.assert_allclose(by, y0, atol=1e-8)


@pytest.mark.parametrize("kwargs", [{}, {"flip": False, "theta_deg": -70.0},
                                    {"lat_first": True, "theta_deg": 110.0}])
@pytest.mark.parametrize("phi", [0.0, 0.6, 2.0, -1.2])
def test_position_angle_east_of_north(kwargs, phi):
    w = rotated_wcs(**kwargs)
    expected = _true_pa(w, 30.3, 33.6, phi)
    for q in (None, 0.5):
        got = world.position_angle_east_of_north(w, 30.3, 33.6, phi, q=q)
        assert abs((got - expected + 90) % 180 - 90) < 1e-4


def test_north_up_east_left_convention():
    # Standard orientation (CD = diag(-s, s)): FITS +Y (our axis 0) is north and FITS +X (axis
    # 1) is west, so a major axis along axis 0 (phi = 0) has PA 0 and one along axis 1 PA 90
    # (to 2e-5 deg: the TAN projection 10" from its tangent point).
    w = rotated_wcs(theta_deg=0.0)

    def off(a, b):
        return abs((a - b + 90) % 180 - 90)

    assert off(world.position_angle_east_of_north(w, 30, 30, 0.0), 0.0) < 1e-4
    assert off(world.position_angle_east_of_north(w, 30, 30, np.pi / 2), 90.0) < 1e-4


def test_pixel_scale_and_sky_ellipse_with_non_square_pixels():
    w = rotated_wcs()
    np.testing.assert_allclose(world.pixel_scale_arcsec(w, [3.0, 40.0], [7.0, 60.0]), 0.2, rtol=1e-6)
    # Pixels twice as tall as wide (0.1" along FITS X, 0.2" along FITS Y): a circle in pixels
    # is an ellipse on the sky with q = 0.5, major axis north-south.
    w2 = WCS(naxis=2)
    w2.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w2.wcs.crval = [10.0, -30.0]
    w2.wcs.crpix = [1.0, 1.0]
    w2.wcs.cd = np.diag([-0.1, 0.2]) / 3600
    pa, q_sky, major = world.sky_ellipse(world.local_jacobian(w2, 0.0, 0.0), 1.0, 0.3)
    assert q_sky == pytest.approx(0.5, rel=1e-6)
    assert major == pytest.approx(0.2, rel=1e-6)
    assert abs((pa + 90) % 180 - 90) < 1e-4


def test_wrap_position_angle_around_zero():
    pa = np.array([178.0, 179.0, 1.0, 2.0, 0.5])
    wrapped = world.wrap_position_angle(pa)
    np.testing.assert_allclose(np.sort(wrapped), [-2.0, -1.0, 0.5, 1.0, 2.0])


def test_sky_analysis_units_and_errors():
    out = world.sky_analysis(10.0, 12.0, 0.5, 0.3, {"r50": np.array(5.0)}, pixel_scale=0.396)
    assert set(out) == {"r50_arcsec"} and out["r50_arcsec"] == pytest.approx(1.98)
    assert world.sky_analysis(10.0, 12.0, 0.5, 0.3, {"r50": 5.0}) == {}
    w = rotated_wcs()
    out = world.sky_analysis(10.0, 12.0, 0.5, 0.3, {"r50": 5.0}, wcs=w)
    assert out["r50_arcsec"] == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="'pixel_scale'"):
        world.sky_analysis(10.0, 12.0, 0.5, 0.3, {"r50": 5.0}, wcs=w, pixel_scale=0.3)
    with pytest.raises(TypeError, match="'wcs'"):
        world.pixel_to_world("not a wcs", 1.0, 2.0)
