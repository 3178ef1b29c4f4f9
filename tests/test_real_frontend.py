"""What a newcomer does with real images, from the command line (slow).

The images are public survey data kept outside the repository (``../shared/data/real``, or the
folder named by ``IMCASCADE_JAX_REAL_DATA``); every test skips when it is absent. References:
imfit's tutorial fits of IC 3478 and its NED position; ProFit's single-Sersic magnitudes of the
GAMA galaxies (``ExampleInit.tab``); PetroFit's published curve of growth of the A2744 dwarf.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from imcascade_jax import cli

DATA = Path(os.environ.get("IMCASCADE_JAX_REAL_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"))

pytestmark = pytest.mark.slow


def _need(*parts):
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def test_ic3478_from_the_command_line(tmp_path, capsys):
    d = _need("imfit_ic3478")
    out = tmp_path / "ic3478.ecsv"
    code = cli.main(["fit", str(d / "ic3478rss_256.fits"), "--psf", str(d / "psf_moffat_51.fits"),
                     "--mask", str(d / "ic3478rss_256_mask.fits"), "--gain", "4.725",
                     "--readnoise", "4.3", "--out", str(out)])
    assert code == 0
    capsys.readouterr()
    t = Table.read(out)[0]
    ref = next(f for f in json.loads((DATA / "reference_values.json").read_text())["imfit_ic3478"]["fits"]
               if f["label"].startswith("sersic, gain+readnoise, mask, PSF"))
    # imfit's centre is 1-based FITS (X, Y); ours 0-based (x0, y0) = (Y - 1, X - 1).
    assert t["x0"] == pytest.approx(ref["Y0"] - 1, abs=0.3)
    assert t["y0"] == pytest.approx(ref["X0"] - 1, abs=0.3)
    # imfit's PA is counter-clockwise from +Y; our phi turns from +Y (axis 0) towards +X.
    assert abs((np.degrees(t["phi"]) + ref["PA"] + 90) % 180 - 90) < 1.5
    # NED: IC 3478 at 12h32m44.2s +14d11m46s.
    ned = SkyCoord("12h32m44.2s", "+14d11m46s")
    assert SkyCoord(t["ra"], t["dec"], unit="deg").separation(ned).arcsec < 3.0
    assert t["pixel_scale"] == pytest.approx(0.396, rel=0.005)
    # The widths are capped by the image's extent (the widest at half the half-size), so the
    # model's light outside the cutout is what those widths carry: reported, consistently.
    assert t["flux_image"] < t["flux"] and t["r50_image"] < t["r50"]
    assert t["frac_outside"] == pytest.approx(1.0 - t["flux_image"] / t["flux"], abs=1e-9)
    print(f"IC 3478: RA {t['ra']:.6f} Dec {t['dec']:.6f} PA {t['pa_deg']:.2f} deg E of N; flux "
          f"{t['flux']:.6g} (image {t['flux_image']:.6g}, {100 * t['frac_outside']:.1f}% outside); r50 "
          f"{t['r50']:.2f} px = {t['r50_arcsec']:.2f} arcsec, r50_image {t['r50_image']:.2f} px; r80/r90 "
          f"{t['r80']:.1f}/{t['r90']:.1f} px; chi2_red {t['chi2_red']:.3f}")


def test_kids_cutouts_of_different_shapes_from_a_folder(tmp_path, capsys):
    d = _need("profit_gama", "KiDS")
    out = tmp_path / "kids.fits"
    code = cli.main(["fit-catalog", str(d), "--pattern", "*fitim.fits", "--err-sub", "fitim=sigma",
                     "--psf-sub", "fitim=psfim", "--mask-sub", "fitim=mskim", "--pixel-scale", "0.2",
                     "--out", str(out), "--no-progress"])
    assert code == 0
    t = Table.read(out)
    assert len(t) == 10 and np.all(t["status"] > 0)
    ref = Table.read(DATA / "profit_gama" / "ExampleInit.tab", format="ascii")
    ids = [int(str(i)[1:7]) for i in t["id"]]
    m_single = np.array([ref[ref["CATAID"] == i][0]["sersic.mag1"] - 0.7526 for i in ids])
    dmag = np.asarray(t["mag"]) - m_single
    # Rough references (Lange et al. 2015 single Sersic): 9 of 10 within 0.15 mag.
    assert np.sum(np.abs(dmag) < 0.15) >= 9
    np.testing.assert_allclose(t["r50_arcsec"], 0.2 * t["r50"])
    print("KiDS: mag - m_single", np.round(dmag, 3), "r50 (arcsec)", np.round(t["r50_arcsec"], 2),
          "frac_outside", np.round(t["frac_outside"], 4))


def test_a2744_dwarf_at_the_published_position(tmp_path, capsys):
    d = _need("petrofit_a2744")
    out = tmp_path / "dwarf.ecsv"
    # PetroFit's source position (x, y) = (138, 89) is 0-based (column, row): x0 = 89, y0 = 138.
    code = cli.main(["fit", str(d / "abell_2744_dwarf_galaxy_f105w.fits.gz"),
                     "--psf", str(d / "f105w_psf.fits.gz"),
                     "--err", str(d / "abell_2744_dwarf_galaxy_f105w_rms.fits.gz"),
                     "--x0", "89", "--y0", "138", "--out", str(out)])
    assert code == 0
    t = Table.read(out)[0]
    assert abs(t["x0"] - 89) < 1 and abs(t["y0"] - 138) < 1
    cog = Table.read(d / "abell_2744_galaxy_f105w_photometry.ecsv")
    # PetroFit's curve of growth levels off at 246-247 e-/s (r = 40-50 px).
    assert t["flux_image"] == pytest.approx(float(np.max(cog["flux_arr"])), rel=0.05)
    assert t["pixel_scale"] == pytest.approx(0.06, rel=0.01)
    print(f"A2744 dwarf: centre ({t['x0']:.2f}, {t['y0']:.2f}) px, RA {t['ra']:.6f} Dec {t['dec']:.6f}, "
          f"flux {t['flux']:.2f} (image {t['flux_image']:.2f}; PetroFit max {np.max(cog['flux_arr']):.2f}), "
          f"r50 {t['r50_arcsec']:.3f} arcsec, PA {t['pa_deg']:.1f} deg E of N")
