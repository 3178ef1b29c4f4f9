"""``imcascade-jax fit --band ...``: joint multi-band fits from the command line.

The FITS files are the synthetic three-band galaxy of tests/multiband_cases.py, with header WCSs
(band z: pixels 1.5x larger, turned by 15 degrees). Argument errors are checked without any fit;
one test replaces the fit by the truth (no compilation) to check the report and the files; the
end-to-end run is slow-marked.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

sys.path.insert(0, os.path.dirname(__file__))
from multiband_cases import TRUE_FLUX, X0, Y0, truth_fitter, write_fits_bands  # noqa: E402

from imcascade_jax import ImcascadeResults, cli  # noqa: E402


@pytest.fixture(scope="module")
def bands(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mbcli")
    out = write_fits_bands(folder)
    out["dir"] = folder
    return out


def _argv(bands, *extra, names=("g", "r", "z")):
    paths = bands["paths"]
    argv = ["fit"]
    for n in names:
        argv += ["--band", f"{n}={paths[n]['img']}"]
    for n in names:
        argv += ["--psf", f"{n}={paths[n]['psf']}", "--err", f"{n}={paths[n]['err']}"]
    return argv + list(extra)


def _one_line_error(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("imcascade-jax: error:") and "\n" not in err, err
    return err


def test_help_documents_bands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    out = capsys.readouterr().out
    for word in ("--band", "BAND=IMAGE.fits", "BAND=PSF.fits", "BAND=NUMBER", "reference band"):
        assert word in out, word


def test_argument_errors_name_the_band(bands, capsys, tmp_path):
    paths = bands["paths"]
    argv = ["fit", "--band", f"g={paths['g']['img']}", "--band", f"r={paths['r']['img']}",
            "--psf", f"g={paths['g']['psf']}"]
    assert "needed for band(s) ['r']" in _one_line_error(capsys, argv)
    err = _one_line_error(capsys, [*argv, "--psf", f"i={paths['r']['psf']}"])
    assert "--psf i=" in err and "['g', 'r']" in err
    assert "not both" in _one_line_error(capsys, [*argv[:1], paths["g"]["img"], *argv[1:]])
    full = _argv(bands, names=("g", "r"))
    assert "no zero point for band(s) ['r']" in _one_line_error(capsys, [*full, "--zpt", "g=22.5"])
    assert "--cutoff is not available" in _one_line_error(capsys, [*full, "--cutoff", "5"])
    assert "dynesty is not available" in _one_line_error(capsys, [*full, "--posterior", "dynesty"])
    assert "--verbose is not available" in _one_line_error(capsys, [*full, "-v"])
    assert "given twice" in _one_line_error(capsys, [*full, "--band", f"g={paths['g']['img']}"])
    # A zero point per band needs --band; a plain IMAGE takes one zero point.
    err = _one_line_error(capsys, ["fit", paths["g"]["img"], "--zpt", "g=22.5"])
    assert "--zpt g=22.5: BAND=VALUE needs --band" in err
    with pytest.raises(SystemExit):
        cli.main([*full, "--zpt", "g=abc"])
    assert "invalid zero point" in capsys.readouterr().err


def test_wcs_in_some_bands_only_is_refused(bands, capsys, tmp_path):
    plain = tmp_path / "r_nowcs.fits"
    fits.PrimaryHDU(fits.getdata(bands["paths"]["r"]["img"])).writeto(plain)
    argv = _argv(bands, names=("g", "r"))
    argv[argv.index(f"r={bands['paths']['r']['img']}")] = f"r={plain}"
    err = _one_line_error(capsys, argv)
    assert "['g'] have a celestial WCS" in err and "['r'] do not" in err


def test_report_and_files_of_the_true_fit(bands, capsys, monkeypatch):
    """The fit replaced by the truth: the report, the ASDF file, the table and the figure."""
    from imcascade_jax.multiband import setup

    seen = {}

    def truth(images, psf, **kwargs):
        seen.update(kwargs, images=images, psf=psf)
        fitter = truth_fitter(zpt=kwargs["zpt"])
        fitter.run_ls_min = lambda: None  # the truth stands for the fit
        return fitter

    monkeypatch.setattr(setup, "initialize_multiband_fitter", truth)
    d = bands["dir"]
    outs = [str(d / "truth.asdf"), str(d / "truth.ecsv")]
    argv = _argv(bands, "--zpt", "g=22.5", "--zpt", "r=22.4", "--zpt", "z=22.1", "--out", outs[0],
                 "--out", outs[1], "--plot", str(d / "truth.png"), "--x0", "23", "--y0", "25")
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    # What reached the set-up: every band's data and header WCS, the centre, the zero points.
    assert list(seen["images"]) == ["g", "r", "z"] and seen["x0"] == 23.0 and seen["y0"] == 25.0
    np.testing.assert_allclose(seen["wcs"]["z"].pixel_scale_matrix, bands["wcs"]["z"].pixel_scale_matrix,
                               rtol=1e-12)
    np.testing.assert_allclose(seen["err"]["g"], 0.01)
    assert seen["zpt"] == {"g": 22.5, "r": 22.4, "z": 22.1}
    # The truth's numbers: total fluxes are the sums of the component fluxes.
    flux = {b: sum(f) for b, f in TRUE_FLUX.items()}
    assert f"g: flux {flux['g']:.6g}, mag {22.5 - 2.5 * np.log10(flux['g']):.6g}" in text
    g_r = 22.5 - 22.4 - 2.5 * np.log10(flux["g"] / flux["r"])
    assert f"g - r = {g_r:.4g} mag" in text
    assert f"x0 = {X0:.6g} px, y0 = {Y0:.6g} px" in text
    assert "0.262 arcsec per reference pixel" in text and "deg east of north" in text
    table = Table.read(outs[1])
    assert list(table["band"]) == ["g", "r", "z"] and str(table["r50"].unit) == "pix"
    np.testing.assert_allclose(table["flux"], [flux[b] for b in "grz"], rtol=1e-12)
    res = ImcascadeResults(outs[0]).run_basic_analysis()
    np.testing.assert_allclose([res["flux"][b] for b in "grz"], table["flux"], rtol=1e-12)
    np.testing.assert_allclose([res["mag"][b] for b in "grz"], table["mag"], rtol=1e-12)
    assert (d / "truth.png").stat().st_size > 50_000
    # --ra/--dec: through the reference band's header WCS, to its pixels.
    ra, dec = bands["wcs"]["g"].pixel_to_world_values(Y0, X0)  # astropy: (axis 1, axis 0)
    assert cli.main(_argv(bands, "--ra", f"{ra:.10f}", "--dec", f"{dec:.10f}")) == 0
    assert seen["x0"] == pytest.approx(X0, abs=1e-5) and seen["y0"] == pytest.approx(Y0, abs=1e-5)


@pytest.mark.slow
def test_joint_fit_end_to_end(bands, capsys):
    """Set-up, joint least squares and the express posterior from the FITS files (WCSs included)."""
    d = bands["dir"]
    out = str(d / "joint.asdf")
    argv = _argv(bands, "--zpt", "22.5", "--sky-type", "flat", "--posterior", "nuts",
                 "--num-warmup", "300", "--num-samples", "300", "--out", out)
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "converged" in text and "posterior medians" in text
    res = ImcascadeResults(out).run_basic_analysis()
    for band, fluxes in TRUE_FLUX.items():
        # Noise 0.01 per pixel: the total flux is known to ~1%; the widths are the set-up's.
        assert res["flux"][band][0] == pytest.approx(sum(fluxes), rel=0.04), band
    fitter_res = ImcascadeResults(out)
    geometry = fitter_res.fitter.ls_result.params
    assert float(geometry.x0) == pytest.approx(X0, abs=0.05)
    assert float(geometry.y0) == pytest.approx(Y0, abs=0.05)


# -- fit-catalog --band ---------------------------------------------------------------------------

#: Galaxy k of the catalog: the test galaxy with fluxes times (1 + k), shifted by (0.3 k, -0.2 k).
N_CAT = 3


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    """Cubes (IMAGE, ERR) of three galaxies in g and r, and the PSFs; galaxy 2 all NaN in r."""
    from multiband_cases import BANDS, NOISE, PHI, SIG, SKY, Q, psf_image

    from imcascade_jax.multiband.synthetic import make_multiband_galaxy

    folder = tmp_path_factory.mktemp("mbcat")
    two = {n: BANDS[n] for n in ("g", "r")}
    stacks = {n: [] for n in two}
    for k in range(N_CAT):
        flux = {n: np.asarray(TRUE_FLUX[n]) * (1 + k) for n in two}
        imgs = make_multiband_galaxy(two, X0 + 0.3 * k, Y0 - 0.2 * k, Q, PHI, SIG, flux, SKY,
                                     seed=10 + k)
        for n in two:
            stacks[n].append(imgs[n])
    stacks["r"][2][:] = np.nan
    paths = {}
    for n in two:
        paths[n] = folder / f"cube_{n}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.array(stacks[n]), name="IMAGE"),
                      fits.ImageHDU(np.full((N_CAT, 48, 48), NOISE), name="ERR")]).writeto(paths[n])
        fits.PrimaryHDU(psf_image(two[n])).writeto(folder / f"psf_{n}.fits")
    return folder


def _cat_argv(folder, *extra):
    return ["fit-catalog", "--band", f"g={folder / 'cube_g.fits'}", "--band",
            f"r={folder / 'cube_r.fits'}", "--psf", f"g={folder / 'psf_g.fits'}", "--psf",
            f"r={folder / 'psf_r.fits'}", *extra]


def test_catalog_argument_errors(cubes, capsys):
    out = str(cubes / "t.ecsv")
    argv = _cat_argv(cubes, "--out", out)
    assert "not both" in _one_line_error(capsys, [*argv[:1], str(cubes / "cube_g.fits"), *argv[1:]])
    err = _one_line_error(capsys, [*argv, "--positions", str(cubes / "p.ecsv")])
    assert "--positions is not available with --band" in err
    err = _one_line_error(capsys, argv[:5] + ["--psf", f"g={cubes / 'psf_g.fits'}", "--out", out])
    assert "band 'r' has no PSF" in err
    err = _one_line_error(capsys, ["fit-catalog", str(cubes / "cube_g.fits"), "--zpt", "r=22",
                                   "--out", out])
    assert "--zpt r=22: BAND=VALUE needs --band" in err
    assert "give the cutouts" in _one_line_error(capsys, ["fit-catalog", "--out", out])


@pytest.mark.slow
def test_catalog_of_joint_fits(cubes, capsys):
    out = cubes / "cat.ecsv"
    argv = _cat_argv(cubes, "--zpt", "g=22.5", "--zpt", "r=22.4", "--sky-type", "flat",
                     "--no-progress", "--out", str(out))
    with pytest.warns(UserWarning, match="masking 2304 non-finite pixels"):
        assert cli.main(argv) == 0
    assert "Fitted 3 galaxies in 2 bands (g, r)" in capsys.readouterr().out
    table = Table.read(out)
    assert all(s > 0 for s in table["status"][:2])
    # Galaxy 2 has no usable pixel in r: a bad input, its values NaN.
    assert table["status"][2] == -10 and "every pixel" in table["message"][2]
    assert np.isnan(table["flux_g"][2]) and table["n_steps"][2] == -1
    for k in range(2):
        for band in ("g", "r"):
            truth = sum(TRUE_FLUX[band]) * (1 + k)
            assert table[f"flux_{band}"][k] == pytest.approx(truth, rel=0.05), (k, band)
        assert table["x0"][k] == pytest.approx(X0 + 0.3 * k, abs=0.05)
        colour = table["mag_g"][k] - table["mag_r"][k]
        assert table["g_r"][k] == pytest.approx(colour, abs=1e-9)
    assert str(table["g_r"].unit) == "mag" and str(table["r50_g"].unit) == "pix"
