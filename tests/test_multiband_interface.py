"""The 1.1-style entry points of joint multi-band fits: ``initialize_fitter`` with dicts of
bands, ``ImcascadeResults`` of a multi-band fitter (numbers keyed by band, colour profiles)."""

from __future__ import annotations

import numpy as np
import pytest

from imcascade_jax import ImcascadeResults, initialize_fitter
from imcascade_jax.multiband.fitter import MultiBandFitter
from imcascade_jax.synthetic import make_galaxy, moffat_psf

#: Two registered bands of one Sersic galaxy (truth: flux 200 in g, 300 in r; r_e 4 px).
FLUX = {"g": 200.0, "r": 300.0}
PSFS = {"g": moffat_psf(25, core=2.6), "r": moffat_psf(25, core=2.2)}


@pytest.fixture(scope="module")
def two_bands():
    gals = {b: make_galaxy((64, 64), n=1.0, re=4.0, flux=FLUX[b], q=0.7, phi=0.5, noise=0.01,
                           psf=PSFS[b], centre=(31.6, 32.3), seed=i)
            for i, b in enumerate(FLUX)}
    fitter = initialize_fitter({b: g.img for b, g in gals.items()}, PSFS,
                               err={b: g.err for b, g in gals.items()}, verbose=False)
    fitter.run_ls_min()
    return fitter


def test_initialize_fitter_with_dicts_fits_every_band(two_bands):
    assert isinstance(two_bands, MultiBandFitter)
    res = ImcascadeResults(two_bands).run_basic_analysis(zpt=25.0)
    assert set(res["flux"]) == {"g", "r"}
    for band, truth in FLUX.items():
        # Sersic n = 1 truth against a 7-component cascade fitted by least squares.
        assert res["flux"][band] == pytest.approx(truth, rel=0.03)
        assert res["r50"][band] == pytest.approx(4.0, rel=0.05)
        assert res["mag"][band] == pytest.approx(25.0 - 2.5 * np.log10(res["flux"][band]), abs=1e-9)
    # Same profile shape in both bands: a flat colour at the flux ratio.
    colour = ImcascadeResults(two_bands).calc_color_profile("g", "r", [2.0, 4.0, 8.0])
    np.testing.assert_allclose(colour, -2.5 * np.log10(FLUX["g"] / FLUX["r"]), atol=0.1)


def test_bad_multiband_input_names_the_band():
    img = np.zeros((32, 32))
    with pytest.raises(ValueError, match=r"'psf' has no entry for band\(s\) \['r'\]"):
        initialize_fitter({"g": img, "r": img}, {"g": PSFS["g"]})
    with pytest.raises(ValueError, match=r"'err' has band\(s\) \['i'\]"):
        initialize_fitter({"g": img}, {"g": PSFS["g"]}, err={"i": img})
    # A band left out of an optional dict does not fall back on sep silently (None does).
    for arg in ("err", "mask"):
        with pytest.raises(ValueError, match=rf"'{arg}' has no entry for band\(s\) \['r'\]: give"):
            initialize_fitter({"g": img, "r": img}, PSFS, **{arg: {"g": img}})


def test_colour_profile_of_an_unknown_band_is_refused(two_bands):
    with pytest.raises(ValueError, match="'band2' 'z' is not a band of the fit"):
        ImcascadeResults(two_bands).calc_color_profile("g", "z", [1.0])
