"""Tests of the ``imcascade-jax`` command, run in-process through ``cli.main``.

The catalog tests reuse test_batch's small catalog and settings, so the compiled batch function is
shared when both modules run in one session.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

sys.path.insert(0, os.path.dirname(__file__))
from test_batch import MASKED_INDEX, N_GAL, NAN_INDEX, make_small_catalog  # noqa: E402

from imcascade_jax import cli  # noqa: E402
from imcascade_jax.batch import fit_catalog  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A FITS cube (IMAGE, ERR, MASK), a 2-D PSF, one galaxy image with its error map."""
    d = tmp_path_factory.mktemp("cli")
    imgs, errs, mask, psf, truth = make_small_catalog()
    cube = d / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(imgs, name="IMAGE"),
                  fits.ImageHDU(errs, name="ERR"), fits.ImageHDU(mask, name="MASK")]).writeto(cube)
    fits.PrimaryHDU(psf).writeto(d / "psf.fits")
    fits.PrimaryHDU(imgs[0]).writeto(d / "img.fits")
    fits.PrimaryHDU(errs[0]).writeto(d / "err.fits")
    (d / "notfits.fits").write_text("this is not a FITS file\n")
    return {"dir": d, "cube": str(cube), "psf": str(d / "psf.fits"), "img": str(d / "img.fits"),
            "err": str(d / "err.fits"), "bad": str(d / "notfits.fits"),
            "data": (imgs, errs, mask, psf, truth)}


CAT_OPTS = ["--num-components", "5", "--batch-size", "4", "--no-progress"]


def _one_line_error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("imcascade-jax: error:"), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "fit", "fit-catalog"):
        assert cmd in out
    with pytest.raises(SystemExit):
        cli.main(["fit-catalog", "--help"])
    out = capsys.readouterr().out
    for word in ("IMAGE", "ERR", "VAR", "WEIGHT", "MASK", "--psf", "--out", ".ecsv", "--float32",
                 "--batch-size", "--scheduler", "status"):
        assert word in out, word
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    out = capsys.readouterr().out
    for word in ("--err", "--var", "--weight", "--mask", "--out", "--plot", "--posterior", "nuts",
                 "dynesty"):
        assert word in out, word


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_bad_files_give_one_line(capsys, files, tmp_path):
    err = _one_line_error(capsys, ["fit", str(tmp_path / "missing.fits")])
    assert "not found" in err
    err = _one_line_error(capsys, ["fit", files["bad"]])
    assert "FITS" in err
    err = _one_line_error(capsys, ["fit-catalog", files["img"], "--out", str(tmp_path / "t.fits")])
    assert "IMAGE" in err
    err = _one_line_error(capsys, ["fit-catalog", files["cube"], "--out", str(tmp_path / "t.txt")])
    assert ".ecsv" in err
    err = _one_line_error(capsys, ["fit-catalog", files["cube"], "--psf", files["bad"], "--out",
                                   str(tmp_path / "t.fits")])
    assert "FITS" in err
    err = _one_line_error(capsys, ["fit", files["img"], "--psf", files["psf"], "--err", files["cube"]])
    assert "--err" in err


def test_cube_with_two_noise_extensions_is_refused(capsys, files, tmp_path):
    imgs, errs, *_ = files["data"]
    path = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(imgs, name="IMAGE"), fits.ImageHDU(errs, name="ERR"),
                  fits.ImageHDU(errs**2, name="VAR")]).writeto(path)
    err = _one_line_error(capsys, ["fit-catalog", str(path), "--out", str(tmp_path / "t.fits")])
    assert "only one of" in err


def test_fit_catalog_command_matches_library(capsys, files):
    imgs, errs, mask, psf, _ = files["data"]
    out = str(files["dir"] / "table.fits")
    assert cli.main(["fit-catalog", files["cube"], "--psf", files["psf"], "--out", out, *CAT_OPTS]) == 0
    assert "Table written" in capsys.readouterr().out
    table = Table.read(out)
    assert len(table) == N_GAL
    assert list(np.flatnonzero(table["flag"])) == [NAN_INDEX, MASKED_INDEX]
    ref = fit_catalog(imgs, psf, err=errs, mask=mask, num_components=5, batch_size=4, progress=False)
    np.testing.assert_allclose(np.asarray(table["params"]), np.asarray(ref["params"]), rtol=1e-12,
                               equal_nan=True)
    np.testing.assert_allclose(np.asarray(table["r50"]), np.asarray(ref["r50"]), equal_nan=True)

    # ECSV by the extension; refuses to overwrite without --overwrite.
    ecsv = str(files["dir"] / "table.ecsv")
    assert cli.main(["fit-catalog", files["cube"], "--psf", files["psf"], "--out", ecsv, "--zpt", "25",
                     *CAT_OPTS]) == 0
    t2 = Table.read(ecsv)
    np.testing.assert_allclose(np.asarray(t2["flux"]), np.asarray(table["flux"]), equal_nan=True)
    np.testing.assert_allclose(np.asarray(t2["mag"]), 25 - 2.5 * np.log10(np.asarray(t2["flux"])))
    capsys.readouterr()
    _one_line_error(capsys, ["fit-catalog", files["cube"], "--psf", files["psf"], "--out", ecsv,
                             *CAT_OPTS])


def test_fit_command_single_galaxy(capsys, files):
    out = str(files["dir"] / "one.asdf")
    code = cli.main(["fit", files["img"], "--psf", files["psf"], "--err", files["err"],
                     "--num-components", "5", "--out", out, "--zpt", "25"])
    assert code == 0
    text = capsys.readouterr().out
    for word in ("converged", "flux", "r20/r50/r80/r90", "mag", "written"):
        assert word in text, word
    from imcascade_jax.io import load_results

    tree = load_results(out)
    assert np.asarray(tree["min_param"]).shape == (12,)


def test_posterior_not_available_is_one_line(capsys, files, monkeypatch):
    from imcascade_jax.fitter import Fitter

    monkeypatch.setattr(Fitter, "run_nuts", None, raising=False)
    err = _one_line_error(capsys, ["fit", files["img"], "--psf", files["psf"], "--err", files["err"],
                                   "--num-components", "5", "--posterior", "nuts"])
    assert "nuts" in err


# README command 1 runs the demo: CI exercises it.
def test_demo(capsys, tmp_path):
    png = tmp_path / "demo.png"
    assert cli.main(["demo", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    for word in ("truth", "flux", "r50", "Timing", "compiled"):
        assert word in out
    assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_fit_plot(capsys, files):
    png = files["dir"] / "fit.png"
    assert cli.main(["fit", files["img"], "--psf", files["psf"], "--err", files["err"],
                     "--num-components", "5", "--plot", str(png)]) == 0
    assert png.stat().st_size > 10_000
