"""Acceptance: a synthetic galaxy at known sky coordinates, in a FITS image with a rotated,
flipped WCS, fitted from Python and from the command line, comes back at the right RA/Dec,
position angle east of north and half-light radius in arcsec.

Truths: the WCS's own high-level transforms (astropy ``pixel_to_world``, ``position_angle``) of
the pixel centre and of a point along the major axis used to draw the galaxy; r50 = r_e of the
Sersic profile drawn, times the 0.2 arcsec pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from imcascade_jax import cli
from imcascade_jax.fitter import initialize_fitter
from imcascade_jax.results import ImcascadeResults
from imcascade_jax.synthetic import make_galaxy, moffat_psf

SHAPE, X0, Y0, Q, PHI, RE, SCALE = (48, 48), 22.3, 25.6, 0.5, 0.6, 4.0, 0.2


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [20.0, 45.0]
    th = np.radians(30.0)  # rotated by 30 degrees, east to the left (a flipped FITS X)
    w.wcs.cd = SCALE / 3600 * np.array([[-np.cos(th), -np.sin(th)], [-np.sin(th), np.cos(th)]])
    return w


@pytest.fixture(scope="module")
def sky_galaxy(tmp_path_factory):
    d = tmp_path_factory.mktemp("sky")
    psf = moffat_psf(size=21)
    g = make_galaxy(shape=SHAPE, n=1.0, re=RE, flux=200.0, q=Q, phi=PHI, centre=(X0, Y0),
                    noise=0.002, psf=psf, seed=3)
    w = _wcs()
    fits.PrimaryHDU(g.img, header=w.to_header()).writeto(d / "gal.fits")
    fits.PrimaryHDU(g.err).writeto(d / "err.fits")
    fits.PrimaryHDU(psf).writeto(d / "psf.fits")
    centre = w.pixel_to_world(Y0, X0)
    along = w.pixel_to_world(Y0 + np.sin(PHI), X0 + np.cos(PHI))
    return {"dir": d, "img": g.img, "err": g.err, "psf": psf, "wcs": w, "centre": centre,
            "pa": centre.position_angle(along).deg % 180}


def _check(sky_galaxy, ra, dec, pa, r50_arcsec):
    sep = SkyCoord(ra, dec, unit="deg").separation(sky_galaxy["centre"]).arcsec
    assert sep < 0.05
    assert abs((pa - sky_galaxy["pa"] + 90) % 180 - 90) < 0.5
    assert r50_arcsec == pytest.approx(RE * SCALE, rel=0.03)


@pytest.fixture(scope="module")
def python_result(sky_galaxy):
    fitter = initialize_fitter(str(sky_galaxy["dir"] / "gal.fits"), sky_galaxy["psf"],
                               err=sky_galaxy["err"], verbose=False)
    fitter.run_ls_min()
    return fitter, ImcascadeResults(fitter).run_basic_analysis(zpt=25.0)


def test_python_fit_reports_sky_coordinates(sky_galaxy, python_result):
    fitter, out = python_result
    assert fitter.wcs is not None  # read from the FITS header
    _check(sky_galaxy, out["ra"], out["dec"], out["pa_deg"], out["r50_arcsec"])
    assert out["pixel_scale"] == pytest.approx(SCALE, rel=1e-6)
    assert out["frac_outside"] < 0.01 and out["r90_outside_image"] == 0.0


def test_python_fit_with_a_wcs_argument(sky_galaxy, python_result):
    fitter, _ = python_result
    out = ImcascadeResults(fitter).run_basic_analysis(wcs=sky_galaxy["wcs"])
    _check(sky_galaxy, out["ra"], out["dec"], out["pa_deg"], out["r50_arcsec"])


def test_cli_fit_reports_sky_coordinates_and_writes_tables(sky_galaxy, python_result, capsys):
    d = sky_galaxy["dir"]
    ra, dec = sky_galaxy["centre"].ra.deg, sky_galaxy["centre"].dec.deg
    argv = ["fit", str(d / "gal.fits"), "--psf", str(d / "psf.fits"), "--err", str(d / "err.fits"),
            "--ra", f"{ra + 1e-4}", "--dec", f"{dec}", "--zpt", "25",
            "--out", str(d / "res.ecsv"), "--out", str(d / "res.fits"), "--out", str(d / "res.asdf")]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "deg east of north" in text and "arcsec" in text and "0-based" in text
    assert "reduced chi2" in text and "RA, Dec" in text
    for name in ("res.ecsv", "res.fits"):
        t = Table.read(d / name)
        _check(sky_galaxy, t["ra"][0], t["dec"][0], t["pa_deg"][0], t["r50_arcsec"][0])
        assert str(t["ra"].unit) == "deg" and str(t["r50_arcsec"].unit) == "arcsec"
        fitter, _ = python_result
        n_pix, n_free = t["n_pix"][0], t["n_free"][0]
        assert t["chi2_red"][0] == pytest.approx(t["chi2"][0] / (n_pix - n_free))
        assert n_pix == SHAPE[0] * SHAPE[1] - int(np.sum(fitter.mask > 0))
    assert (d / "res.asdf").exists()
    # Existing outputs are refused before any work, and left untouched.
    before = (d / "res.ecsv").read_bytes()
    assert cli.main(argv) == 2
    assert "exists: use --overwrite" in capsys.readouterr().err
    assert (d / "res.ecsv").read_bytes() == before


def test_cli_cutoff_reports_the_aperture_flux(sky_galaxy, python_result, capsys):
    from imcascade_jax import analysis as an

    d = sky_galaxy["dir"]
    argv = ["fit", str(d / "gal.fits"), "--psf", str(d / "psf.fits"), "--err", str(d / "err.fits"),
            "--cutoff", "6", "--out", str(d / "cut.ecsv")]
    assert cli.main(argv) == 0
    assert "inside the ellipse of semi-major axis 6 px" in capsys.readouterr().out
    t = Table.read(d / "cut.ecsv")
    weights = 10 ** np.asarray(t.meta["comments"][-1].split()[1:], float)[4:4 + len(python_result[0].sig)]
    fitter, _ = python_result
    assert t["flux"][0] == pytest.approx(float(an.flux(weights, fitter.sig, 6.0)), rel=1e-8)
    assert t["flux"][0] < 0.9 * t["flux_image"][0]


@pytest.mark.slow
def test_cli_posterior_reports_diagnostics_and_medians(sky_galaxy, capsys):
    d = sky_galaxy["dir"]
    argv = ["fit", str(d / "gal.fits"), "--psf", str(d / "psf.fits"), "--err", str(d / "err.fits"),
            "--posterior", "nuts", "--chains", "2", "--num-samples", "300", "--num-warmup", "300",
            "--out", str(d / "post.ecsv")]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "min ESS" in text and "max R-hat" in text and "divergent transitions" in text
    assert "posterior medians" in text and "Least squares" in text
    t = Table.read(d / "post.ecsv")
    assert "posterior medians" in " ".join(t.meta["comments"])
    assert t["flux_minus"][0] > 0 and t["flux_plus"][0] > 0
    _check(sky_galaxy, t["ra"][0], t["dec"][0], t["pa_deg"][0], t["r50_arcsec"][0])


def test_posterior_summary_lines_name_every_diagnostic():
    from types import SimpleNamespace

    from imcascade_jax.cli_fit import _posterior_lines

    diag = {"min_ess": 812.4, "max_rhat": 1.0042, "num_divergent": 3, "mean_acceptance": 0.93,
            "rhat": np.array([1.0]), "divergent_fraction": 0.02}
    fitter = SimpleNamespace(nuts_diagnostics=diag, posterior=np.zeros((2000, 5)), post_method="nuts-express")
    lines = _posterior_lines(fitter)
    assert lines[0] == ("Posterior (nuts-express): 2000 samples; min ESS 812, max R-hat 1.004, "
                        "3 divergent transitions, mean acceptance 0.93")
    assert lines[1:] == ["  WARNING: 3 divergent transitions (2.0%)"]
