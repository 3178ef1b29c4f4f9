"""Tests of imcascade_jax.footprint: model flux inside the image, and the extrapolation warning.

References: scipy's bivariate normal CDF (Genz's algorithm, asked for 1e-12) for the rectangle
integrals; closed forms (products of erf) for unrotated Gaussians; the defining equation of the
radii.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import ndtr
from scipy.stats import multivariate_normal

from imcascade_jax import analysis as an
from imcascade_jax import footprint as fp
from imcascade_jax.results import ImcascadeResults

SIG = np.array([1.0, 3.0, 10.0, 40.0])
W = np.array([1.0, 2.0, 3.0, 4.0])
SHAPE = (40, 50)


def _reference(w, sig, q, phi, x0, y0, shape):
    c, s = np.cos(phi), np.sin(phi)
    total = 0.0
    for wi, sg in zip(w, sig, strict=True):
        var, minor = sg**2, (sg * q) ** 2
        cov = [[var * c * c + minor * s * s, (var - minor) * s * c],
               [(var - minor) * s * c, var * s * s + minor * c * c]]
        mvn = multivariate_normal([x0, y0], cov, abseps=1e-12, releps=1e-12, maxpts=10**7)
        total += wi * mvn.cdf([shape[0] - 0.5, shape[1] - 0.5], lower_limit=[-0.5, -0.5])
    return total


@pytest.mark.parametrize("q, phi, x0, y0", [(0.5, 0.7, 20.0, 30.0), (0.05, 1.0, 30.0, 12.0),
                                            (0.1, 2.5, 3.0, 47.0), (1.0, 0.0, -3.0, 60.0)])
def test_flux_in_image_matches_bivariate_normal_cdf(q, phi, x0, y0):
    got = float(fp.flux_in_image(W, SIG, q, phi, x0, y0, SHAPE))
    assert got == pytest.approx(_reference(W, SIG, q, phi, x0, y0, SHAPE), rel=1e-10)


def test_unrotated_is_a_product_of_erfs_and_batches():
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.5, 2.0, (6, 4))
    q, x0, y0 = 0.4, 12.3, 30.1
    got = np.asarray(fp.flux_in_image(weights, SIG, q, 0.0, x0, y0, SHAPE))
    a0 = ndtr((SHAPE[0] - 0.5 - x0) / SIG) - ndtr((-0.5 - x0) / SIG)
    a1 = ndtr((SHAPE[1] - 0.5 - y0) / (q * SIG)) - ndtr((-0.5 - y0) / (q * SIG))
    np.testing.assert_allclose(got, weights @ (a0 * a1), rtol=1e-12)
    # A rectangle much larger than every component holds all the flux.
    big = fp.flux_in_rectangle(weights, SIG, q, 0.8, x0, y0, np.array([-1e4, -1e4]), np.array([1e4, 1e4]))
    np.testing.assert_allclose(big, weights.sum(-1), rtol=1e-12)


def test_psf_convolved_flux_is_a_sum_over_psf_components():
    psf_sig, psf_a = np.array([1.5, 4.0]), np.array([0.7, 0.3])
    got = float(fp.flux_in_image(W, SIG, 0.5, 0.7, 5.0, 8.0, SHAPE, psf_sig, psf_a))
    # Convolving with a circular Gaussian of width p adds p^2 to both axes: (sig, q) -> widths
    # sqrt(sig^2 + p^2) along the major axis and sqrt(q^2 sig^2 + p^2) along the minor one.
    expected = 0.0
    for p, a in zip(psf_sig, psf_a, strict=True):
        sig2 = np.sqrt(SIG**2 + p**2)
        q2 = np.sqrt((0.5 * SIG) ** 2 + p**2) / sig2
        for w, s, qq in zip(W, sig2, q2, strict=True):
            expected += a * _reference([w], [s], qq, 0.7, 5.0, 8.0, SHAPE)
    assert got == pytest.approx(expected, rel=1e-9)


def test_footprint_analysis_radii_and_flag():
    out = fp.footprint_analysis(W, SIG, 0.6, 0.3, 20.0, 25.0, SHAPE)
    inside = float(fp.flux_in_image(W, SIG, 0.6, 0.3, 20.0, 25.0, SHAPE))
    assert float(out["flux_image"]) == pytest.approx(inside, rel=1e-14)
    assert float(out["frac_outside"]) == pytest.approx(1 - inside / W.sum(), rel=1e-12)
    for frac in (0.2, 0.5, 0.9):
        r = float(out[f"r{round(100 * frac)}_image"])
        assert float(an.cog(r, W, SIG)) == pytest.approx(frac * inside, rel=1e-10)
    # The 40 px component puts r90 (~56 px) far beyond a 40x50 image.
    assert float(out["r90_outside_image"]) == 1.0
    small = fp.footprint_analysis(np.r_[W[:2], 0.0, 0.0], SIG, 0.6, 0.3, 20.0, 25.0, SHAPE)
    assert float(small["r90_outside_image"]) == 0.0


def _results(weights, shape, posterior=False):
    params = np.r_[shape[0] / 2, shape[1] / 2, 0.7, 0.4, np.log10(weights)]
    source = {"sig": SIG, "img": np.zeros(shape), "Ndof_sky": 0, "sky_model": False}
    if posterior:
        rng = np.random.default_rng(0)
        source["posterior"] = params + rng.normal(0, 0.01, (200, params.size))
    else:
        source["min_param"] = params
    return ImcascadeResults(source)


@pytest.mark.parametrize("posterior", [False, True])
def test_run_basic_analysis_warns_when_the_galaxy_is_wider_than_its_cutout(posterior):
    res = _results(W, (32, 32), posterior)
    with pytest.warns(UserWarning, match="extrapolated.*outside the 32x32 image"):
        out = res.run_basic_analysis()
    flux_image = np.atleast_1d(out["flux_image"])[0]
    assert np.atleast_1d(out["frac_outside"])[0] > 0.3
    assert flux_image < 0.7 * np.atleast_1d(out["flux"])[0]
    # A cutout 20 times larger holds the same galaxy: no warning, nothing outside.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _results(W, (640, 640), posterior).run_basic_analysis()
    assert np.atleast_1d(out["frac_outside"])[0] < 1e-6
