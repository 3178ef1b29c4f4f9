"""The diagnostic figure of a joint multi-band fit (imcascade_jax.multiband.plotting).

Fitters carry the true parameters of a synthetic three-band galaxy as their least-squares result
(tests/multiband_cases.py): no fit runs here. Figures are drawn with Agg.
"""

from __future__ import annotations

import os
import sys

import matplotlib
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from multiband_cases import BANDS, NOISE, SIG, TRUE_FLUX, truth_fitter  # noqa: E402
from test_figure import assert_texts_inside_and_apart, drawn_text_boxes  # noqa: E402

from imcascade_jax import ImcascadeResults  # noqa: E402
from imcascade_jax import analysis as an  # noqa: E402
from imcascade_jax.multiband.analysis import colour_profile  # noqa: E402
from imcascade_jax.multiband.plotting import band_images, panel_labels  # noqa: E402

matplotlib.use("Agg")
ZPT = {"g": 22.5, "r": 22.4, "z": 22.1}


@pytest.fixture(scope="module")
def fitters():
    return {False: truth_fitter(posterior=False), True: truth_fitter(posterior=True, zpt=ZPT)}


def _panel(fig, label):
    (ax,) = [ax for ax in fig.axes if ax.get_label() == label]
    return ax


def _text(fig, label) -> str:
    return "\n".join(t.get_text() for t in _panel(fig, label).texts)


@pytest.mark.parametrize("posterior", [False, True], ids=["least-squares", "posterior"])
def test_no_text_overlaps_and_nothing_cut_off(fitters, posterior, monkeypatch):
    import matplotlib.pyplot as plt

    extra = {"pixel_scale": 0.262} if posterior else {}
    fig = ImcascadeResults(fitters[posterior]).make_diagnostic_fig(**extra)
    labels = {ax.get_label() for ax in fig.axes}
    assert set(sum(panel_labels(("g", "r", "z")), [])) <= labels
    boxes = drawn_text_boxes(fig, monkeypatch)
    texts = [t for t, _ in boxes]
    assert len(boxes) > 60 and "z: data" in texts and any(t.startswith("band r") for t in texts)
    assert_texts_inside_and_apart(fig, boxes)
    plt.close(fig)


def test_colourbars_carry_units(fitters):
    import matplotlib.pyplot as plt

    fig = ImcascadeResults(fitters[False]).make_diagnostic_fig(unit="nanomaggies")
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bars.count("nanomaggies") == 6 and bars.count("\u03c3") == 3
    assert _panel(fig, "sbp").get_ylabel().endswith("[nanomaggies / reference pixel]")
    plt.close(fig)


def test_band_numbers_are_the_truth(fitters):
    import matplotlib.pyplot as plt

    fig = ImcascadeResults(fitters[False]).make_diagnostic_fig()
    for name, flux in TRUE_FLUX.items():
        text = _text(fig, f"text_{name}")
        r50 = float(an.radius_fraction(0.5, np.asarray(flux), SIG))
        assert f"flux  {sum(flux):.4g} counts" in text
        assert f"r50   {r50:.4g} px" in text
    assert "q    0.6" in _text(fig, "summary") and "phi  40.11 deg" in _text(fig, "summary")
    plt.close(fig)


def test_colour_curves_are_the_colour_profiles(fitters):
    import matplotlib.pyplot as plt

    fig = ImcascadeResults(fitters[False]).make_diagnostic_fig()
    lines = {ln.get_label(): ln for ln in _panel(fig, "colour").get_lines()}
    assert set(lines) == {"g - r", "r - z"}
    r = lines["r - z"].get_xdata()
    flux = np.array([TRUE_FLUX[n] for n in BANDS])
    np.testing.assert_allclose(lines["r - z"].get_ydata(),
                               np.asarray(colour_profile(r, flux, SIG, 0.6, 1, 2)), rtol=1e-12)
    # Zero points shift a colour by their difference (posterior: the median line).
    fig2 = ImcascadeResults(fitters[True]).make_diagnostic_fig()
    medians = {ln.get_label(): ln.get_ydata() for ln in _panel(fig2, "colour").get_lines()}
    assert _panel(fig2, "colour").get_ylabel() == "colour [mag]"
    np.testing.assert_allclose(medians["g - r"] - lines["g - r"].get_ydata(), 0.1, atol=0.03)
    plt.close(fig)
    plt.close(fig2)


def test_residuals_are_the_noise_and_mask_is_hidden(fitters):
    ims, kind = band_images(ImcascadeResults(fitters[False]))
    assert kind == "least-squares fit"
    for name, band in ims.items():
        chi = band["chi"].compressed()
        # Residuals of the true model are the noise (sigma 0.01) in units of sigma.
        assert abs(np.std(chi) - 1.0) < 0.05 and abs(np.mean(chi)) < 0.05, name
        assert band["noise"] == pytest.approx(NOISE, rel=0.1)
    assert np.ma.getmaskarray(ims["g"]["img"]).sum() == 24
    assert np.median(ims["z"]["sky"]) == pytest.approx(-0.005)
