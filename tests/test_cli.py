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
    (tmp_path / "empty").mkdir()
    err = _one_line_error(capsys, ["fit-catalog", str(tmp_path / "empty"), "--out", str(tmp_path / "t.fits")])
    assert "no FITS file" in err
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
    # What each cutout holds of its model: the exact integral over the cutout of the row's model.
    from imcascade_jax.footprint import flux_in_image

    row = table[0]
    p, n = np.asarray(row["params"]), int(row["n_components"])
    expected = float(flux_in_image(10 ** p[4:4 + n], np.asarray(row["sig"])[:n], p[2], p[3], p[0], p[1],
                                   imgs.shape[1:]))
    assert row["flux_image"] == pytest.approx(expected, rel=1e-12)
    assert row["frac_outside"] == pytest.approx(1 - expected / row["flux"], rel=1e-6)

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
    # --overwrite replaces the file (the writer was once called without it: FileExistsError).
    os.utime(out, (0, 0))
    assert cli.main(["fit", files["img"], "--psf", files["psf"], "--err", files["err"],
                     "--num-components", "5", "--out", out, "--overwrite"]) == 0
    assert os.stat(out).st_mtime > 0


def test_fit_that_did_not_succeed_exits_3(capsys, files, monkeypatch):
    """A fit stopped by its step limit is reported and written, and the exit status says so."""
    from imcascade_jax.fitter import Fitter

    run_ls_min = Fitter.run_ls_min
    monkeypatch.setattr(Fitter, "run_ls_min", lambda self, ls_kwargs=None:
                        run_ls_min(self, {"max_steps": 3}))
    out = str(files["dir"] / "stopped.ecsv")
    with pytest.warns(UserWarning, match="did not succeed"):
        code = cli.main(["fit", files["img"], "--psf", files["psf"], "--err", files["err"],
                         "--num-components", "5", "--out", out])
    assert code == 3
    text = capsys.readouterr().out
    assert "did not succeed (stopped: maximum number of steps reached): exit status 3" in text
    from astropy.table import Table

    assert int(Table.read(out)["status"][0]) == -1  # FitStatus.MAX_STEPS


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


# -- command-line completeness ---------------------------------------------------------------------
def test_version(capsys):
    from imcascade_jax import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"imcascade-jax {__version__}"


def test_help_imports_no_jax():
    import subprocess

    code = ("import sys\nfrom imcascade_jax import cli\n"
            "try:\n    cli.main(['fit', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'jax' not in sys.modules and 'numpy' not in sys.modules, 'imported'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "--ra" in out.stdout and "--overwrite" in out.stdout
    imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "imcascade_jax.cli", "--help"],
                             capture_output=True, text=True, env=env)
    assert imports.returncode == 0
    modules = {line.split("|")[-1].strip() for line in imports.stderr.splitlines() if "|" in line}
    assert "jax" not in modules and "imcascade_jax.cli_common" in modules


class _Stop(Exception):
    pass


@pytest.fixture()
def captured_setup(monkeypatch):
    """initialize_fitter replaced by a recorder that stops the command."""
    import imcascade_jax.fitter as fitter_module

    calls = {}

    def record(im, psf, **kwargs):
        calls.clear()
        calls.update(kwargs, im=im, psf=psf)
        raise _Stop

    monkeypatch.setattr(fitter_module, "initialize_fitter", record)
    return calls


def test_fit_options_reach_initialize_fitter(files, captured_setup, tmp_path):
    imgs = files["data"][0]
    mask = np.zeros(imgs[0].shape)
    mask[3, 4] = 7.0  # any non-zero value is bad
    fits.PrimaryHDU(mask).writeto(tmp_path / "mask.fits")
    argv = ["fit", files["img"], "--psf", files["psf"], "--x0", "30.5", "--y0", "31.25",
            "--gain", "4.7", "--readnoise", "4.3", "--exptime", "2", "--sky-type", "flat",
            "--pixel-scale", "0.396", "--num-components", "6", "--mask", str(tmp_path / "mask.fits")]
    with pytest.raises(_Stop):
        cli.main(argv)
    c = captured_setup
    assert (c["x0"], c["y0"], c["gain"], c["readnoise"], c["exp_time"]) == (30.5, 31.25, 4.7, 4.3, 2.0)
    assert c["sky_type"] == "flat" and c["sky_model"] is True and c["num_components"] == 6
    assert c["pixel_scale"] == 0.396 and c["err"] is None and c["wcs"] is None
    assert c["mask"][3, 4] == 1 and c["mask"].sum() == 1
    np.testing.assert_array_equal(c["im"], imgs[0])
    with pytest.raises(_Stop):
        cli.main(["fit", files["img"], "--sky-type", "none", "--var", files["err"]])
    assert captured_setup["sky_model"] is False and "sky_type" not in captured_setup
    np.testing.assert_allclose(captured_setup["err"], np.sqrt(files["data"][1][0]))


def test_ra_dec_need_a_wcs_and_become_pixels(files, captured_setup, tmp_path, capsys):
    from astropy.wcs import WCS

    err = _one_line_error(capsys, ["fit", files["img"], "--ra", "150", "--dec", "2"])
    assert "need a celestial WCS" in err
    w = WCS(naxis=2)
    w.wcs.ctype, w.wcs.crval, w.wcs.crpix = ["RA---TAN", "DEC--TAN"], [150.0, 2.0], [10.0, 20.0]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    fits.PrimaryHDU(files["data"][0][0], header=w.to_header()).writeto(tmp_path / "wcs.fits")
    ra, dec = w.wcs_pix2world([[12.0, 30.0]], 0)[0]  # FITS X - 1 = 12, FITS Y - 1 = 30
    with pytest.raises(_Stop):
        cli.main(["fit", str(tmp_path / "wcs.fits"), "--ra", str(ra), "--dec", str(dec)])
    assert captured_setup["x0"] == pytest.approx(30.0) and captured_setup["y0"] == pytest.approx(12.0)
    assert captured_setup["wcs"] is not None
    err = _one_line_error(capsys, ["fit", str(tmp_path / "wcs.fits"), "--ra", str(ra + 1), "--dec", str(dec)])
    assert "outside the image" in err


def test_overwrite_is_refused_before_reading_anything(tmp_path, capsys):
    out = tmp_path / "exists.ecsv"
    out.write_text("keep me")
    err = _one_line_error(capsys, ["fit", str(tmp_path / "missing.fits"), "--out", str(out)])
    assert "exists: use --overwrite" in err and out.read_text() == "keep me"
    err = _one_line_error(capsys, ["fit", str(tmp_path / "missing.fits"), "--out", str(tmp_path / "r.txt")])
    assert ".asdf, .fits or .ecsv" in err


def test_noise_options_that_would_be_ignored_are_refused(files, capsys):
    err = _one_line_error(capsys, ["fit", files["img"], "--exptime", "100"])
    assert "--exptime is used only with --gain" in err
    err = _one_line_error(capsys, ["fit", files["img"], "--gain", "4"])
    assert "both --gain and --readnoise" in err
    err = _one_line_error(capsys, ["fit", files["img"], "--gain", "4", "--readnoise", "3",
                                   "--err", files["err"]])
    assert "not both" in err


def test_fit_catalog_takes_folders_of_cutouts_of_different_shapes(files, tmp_path, monkeypatch, capsys):
    import imcascade_jax.batch as batch_module

    imgs, errs, _, psf, _ = files["data"]
    folder = tmp_path / "cutouts"
    folder.mkdir()
    shapes = [(imgs.shape[1], imgs.shape[2]), (imgs.shape[1] - 6, imgs.shape[2] - 2)]
    for k, (n0, n1) in enumerate(shapes):
        fits.PrimaryHDU(imgs[k][:n0, :n1]).writeto(folder / f"g{k}_img.fits")
        fits.PrimaryHDU(errs[k][:n0, :n1]).writeto(folder / f"g{k}_sig.fits")
        fits.PrimaryHDU(psf).writeto(folder / f"g{k}_psf.fits")
    seen = {}

    def record(images, psf, **kwargs):
        seen.update(kwargs, images=images, psf=psf)
        n = len(images)  # rows of failed fits: the command adds NaN footprint columns
        return Table({"id": kwargs["ids"], "status": [-12] * n, "params": np.full((n, 12), np.nan),
                      "n_components": [5] * n, "sig": np.full((n, 5), np.nan),
                      "r50": np.full(n, np.nan), "r90": np.full(n, np.nan)})

    monkeypatch.setattr(batch_module, "fit_catalog", record)
    out = tmp_path / "t.ecsv"
    assert cli.main(["fit-catalog", str(folder), "--pattern", "*_img.fits", "--err-sub", "img=sig",
                     "--psf-sub", "img=psf", "--sky-type", "flat", "--out", str(out)]) == 0
    assert [im.shape for im in seen["images"]] == shapes
    assert seen["ids"] == ["g0_img.fits", "g1_img.fits"]
    np.testing.assert_array_equal(seen["err"][1], errs[1][: shapes[1][0], : shapes[1][1]])
    assert len(seen["psf"]) == 2 and seen["sky_type"] == "flat"
    table = Table.read(out)
    assert "0-based" in "".join(table.meta["comments"])
    assert np.all(np.isnan(table["flux_image"])) and not np.any(table["extrapolated"])


def test_fit_catalog_positions_table_reaches_fit_catalog(files, tmp_path, monkeypatch):
    """--positions: x0/y0 matched to the cutouts by the table's id column (file names)."""
    import imcascade_jax.batch as batch_module

    imgs, errs, _, psf, _ = files["data"]
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for k in range(2):
        fits.PrimaryHDU(imgs[k]).writeto(folder / f"g{k}_img.fits")
    fits.PrimaryHDU(psf).writeto(tmp_path / "psf.fits")
    Table({"id": ["g1_img.fits", "g0_img.fits"], "x0": [30.5, 31.0], "y0": [29.0, 32.25]}).write(
        tmp_path / "pos.ecsv")
    seen = {}

    def record(images, psf, **kwargs):
        seen.update(kwargs)
        n = len(images)
        return Table({"id": kwargs["ids"], "status": [-12] * n, "params": np.full((n, 12), np.nan),
                      "n_components": [5] * n, "sig": np.full((n, 5), np.nan),
                      "r50": np.full(n, np.nan), "r90": np.full(n, np.nan)})

    monkeypatch.setattr(batch_module, "fit_catalog", record)
    assert cli.main(["fit-catalog", str(folder), "--psf", str(tmp_path / "psf.fits"),
                     "--positions", str(tmp_path / "pos.ecsv"), "--force-position",
                     "--out", str(tmp_path / "t.ecsv")]) == 0
    assert seen["x0"] == [31.0, 30.5] and seen["y0"] == [32.25, 29.0] and seen["force_position"]
    Table({"x0": [1.0]}).write(tmp_path / "bad.ecsv")
    assert cli.main(["fit-catalog", str(folder), "--psf", str(tmp_path / "psf.fits"),
                     "--positions", str(tmp_path / "bad.ecsv"), "--out", str(tmp_path / "u.ecsv")]) == 2
    # Ids that match no cutout, repeated ids and non-numbers are refused; a cutout without a
    # row is named in a warning.
    for name, table in (("none", {"id": ["a", "b"], "x0": [1.0, 2.0], "y0": [1.0, 2.0]}),
                        ("twice", {"id": ["g0_img.fits"] * 2, "x0": [1.0, 2.0], "y0": [1.0, 2.0]}),
                        ("text", {"id": ["g0_img.fits"], "x0": ["x"], "y0": ["1"]})):
        Table(table).write(tmp_path / f"{name}.ecsv")
        assert cli.main(["fit-catalog", str(folder), "--psf", str(tmp_path / "psf.fits"),
                         "--positions", str(tmp_path / f"{name}.ecsv"),
                         "--out", str(tmp_path / f"{name}_out.ecsv")]) == 2, name
    Table({"id": ["g0_img.fits"], "x0": [31.0], "y0": [32.25]}).write(tmp_path / "one.ecsv")
    code = cli.main(["fit-catalog", str(folder), "--psf", str(tmp_path / "psf.fits"),
                    "--positions", str(tmp_path / "one.ecsv"), "--force-position",
                    "--out", str(tmp_path / "one_out.ecsv")])
    assert code == 0 and seen["x0"] == [31.0, None]
