"""The diagnostic figure (imcascade_jax.plotting): layout, colourbars, numbers and conventions.

Results are set directly on a small Fitter (40x40, 6 widths, a 2-Gaussian PSF, a tilted-plane
sky, 24 masked pixels) or given as dicts: no fit runs here. Figures are drawn with Agg.
"""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest
from matplotlib.text import Text

from imcascade_jax import analysis as an
from imcascade_jax.plotting import diagnostic_figure, format_value, position_angle
from imcascade_jax.results import ImcascadeResults

matplotlib.use("Agg")

SIG = np.logspace(np.log10(0.75), np.log10(12.0), 6)
PSF_SIG = np.array([1.2, 1.81])
PSF_A = np.array([0.6, 0.4])
#: [x0, y0, q, phi, log10 fluxes, tilted-plane sky]
TRUTH = np.concatenate([[20.3, 19.6, 0.6, 0.8], np.log10([2, 6, 12, 9, 4, 1]), [0.01, 1e-4, -2e-4]])
NOISE = 0.02


@pytest.fixture(scope="module")
def fitter():
    """A Fitter on the true model plus noise (sigma 0.02), with a masked neighbour, its
    ``min_param`` set to the truth and an express-like posterior (fluxes scattered, geometry
    and sky fixed)."""
    from imcascade_jax.fitter import Fitter
    from imcascade_jax.mgm import MultiGaussModel

    model = MultiGaussModel((40, 40), SIG, PSF_SIG, PSF_A, verbose=False)
    rng = np.random.default_rng(3)
    img = model.make_model(TRUTH) + rng.normal(0, NOISE, (40, 40))
    mask = np.zeros((40, 40))
    mask[5:9, 28:34] = 1
    img[5:9, 28:34] += 3.0  # a masked neighbour
    fit = Fitter(img, SIG, PSF_SIG, PSF_A, weight=np.full((40, 40), NOISE**-2), mask=mask, verbose=False)
    fit.min_param = TRUTH
    fluxes_only = np.r_[np.zeros(4), np.ones(6), np.zeros(3)]
    fit.posterior = TRUTH + rng.normal(0, 0.02, (400, len(TRUTH))) * fluxes_only
    fit.post_method = "dynesty-express"
    fit.logz, fit.logz_err = -50.0, 0.1
    return fit


def _as_dict(fitter, posterior: bool, scale: float = 1.0, **extra) -> dict:
    """The fitter's results as a dict, the image (and fluxes) multiplied by ``scale``."""
    out = {k: getattr(fitter, k) for k in ("weight", "mask", "sig", "psf_sig", "psf_a")}
    out["img"] = fitter.img * scale
    out["weight"] = fitter.weight / scale**2
    shift = np.r_[np.zeros(4), np.full(6, np.log10(scale)), np.zeros(3)]
    sky = np.r_[np.ones(10), np.full(3, scale)]
    if posterior:
        out["posterior"] = (fitter.posterior + shift) * sky
        out["post_method"] = "nuts-express"
    else:
        out["min_param"] = (fitter.min_param + shift) * sky
    out.update(extra)
    return out


def drawn_text_boxes(fig, monkeypatch) -> list:
    """(text, window extent) of every text the renderer draws: titles, labels, tick labels
    (only those drawn, i.e. in view), legends, colourbar labels, annotations."""
    drawn = []
    original = Text.draw

    def spy(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append((self.get_text(), self.get_window_extent(renderer)))

    monkeypatch.setattr(Text, "draw", spy)
    fig.canvas.draw()
    monkeypatch.setattr(Text, "draw", original)
    return drawn


def assert_texts_inside_and_apart(fig, boxes) -> None:
    """Every drawn text inside the figure (1 px of slack) and no two overlapping by > 0.5 px."""
    frame = fig.bbox
    for text, box in boxes:
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, f"{text!r} cut off horizontally"
        assert frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, f"{text!r} cut off vertically"
    clashes = []
    for i, (text_a, a) in enumerate(boxes):
        for text_b, b in boxes[i + 1 :]:
            width = min(a.x1, b.x1) - max(a.x0, b.x0)
            height = min(a.y1, b.y1) - max(a.y0, b.y0)
            if width > 0.5 and height > 0.5:
                clashes.append((text_a, text_b))
    assert not clashes, f"overlapping texts: {clashes}"


def _panel(fig, label):
    (ax,) = [ax for ax in fig.axes if ax.get_label() == label]
    return ax


def _summary(fig) -> str:
    return "\n".join(t.get_text() for t in _panel(fig, "summary").texts)


@pytest.mark.parametrize("posterior", [False, True], ids=["least-squares", "posterior"])
@pytest.mark.parametrize("extra", [{}, {"zpt": 27.0, "pixel_scale": 0.168}], ids=["plain", "zpt-arcsec"])
def test_no_text_overlaps_and_nothing_cut_off(fitter, posterior, extra, monkeypatch):
    import matplotlib.pyplot as plt

    res = ImcascadeResults(_as_dict(fitter, posterior))
    fig = res.make_diagnostic_fig(**extra)
    boxes = drawn_text_boxes(fig, monkeypatch)
    texts = [t for t, _ in boxes]
    # Everything the figure shows was drawn: titles, axis labels, tick labels, the summary.
    assert len(boxes) > 40 and "Data" in texts and any("\nModel:" in t for t in texts)
    assert_texts_inside_and_apart(fig, boxes)
    assert fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    plt.close(fig)


def test_colourbars_carry_units(fitter):
    import matplotlib.pyplot as plt

    fig = ImcascadeResults(fitter).make_diagnostic_fig()
    labels = {p: _panel(fig, p).images[0].colorbar.ax.get_ylabel() for p in ("data", "model", "sky", "resid")}
    assert labels == {"data": "counts", "model": "counts", "sky": "counts", "resid": "\u03c3"}
    plt.close(fig)
    # The unit given (or carried by the results), and residuals in it when there are no weights.
    res = ImcascadeResults({k: v for k, v in _as_dict(fitter, False).items() if k != "weight"})
    fig = diagnostic_figure(res, unit="nJy")
    for p in ("data", "model", "sky", "resid"):
        assert _panel(fig, p).images[0].colorbar.ax.get_ylabel() == "nJy"
    assert "nJy" in _summary(fig) and "nJy" in _panel(fig, "cog").get_ylabel()
    plt.close(fig)


def test_sky_panel_has_its_own_stretch(fitter):
    import matplotlib.pyplot as plt

    fig = ImcascadeResults(fitter).make_diagnostic_fig()
    sky = _panel(fig, "sky").images[0]
    plane = fitter.get_sky_model(TRUTH[-3:])
    # The tilted plane spans its own range (0.01 + 1e-4 x - 2e-4 y over 40x40), not the data's.
    assert sky.norm.vmin == pytest.approx(plane.min()) and sky.norm.vmax == pytest.approx(plane.max())
    assert plane.max() - plane.min() == pytest.approx(39 * 3e-4)
    data_norm = _panel(fig, "data").images[0].norm
    assert data_norm.vmax > 10 * sky.norm.vmax
    plt.close(fig)


def test_least_squares_numbers_and_titles(fitter):
    import matplotlib.pyplot as plt

    res = ImcascadeResults(_as_dict(fitter, False))
    fig = res.make_diagnostic_fig(zpt=25.0)
    text = _summary(fig)
    flux = 2 + 6 + 12 + 9 + 4 + 1
    r50 = float(an.radius_fraction(0.5, 10 ** TRUTH[4:10], SIG))
    assert "Least-squares fit" in text
    assert f"flux   {flux:.4g} counts" in text
    assert f"mag    {25 - 2.5 * np.log10(flux):.3f}" in text
    assert f"r50    {r50:.4g} px" in text and "arcsec" not in text
    assert f"phi    {np.degrees(0.8):.4g} deg" in text  # degrees, not radians
    assert "least-squares fit" in _panel(fig, "model").get_title()
    assert _panel(fig, "sbp").get_xlabel() == "semi-major axis [pixels]"
    titles = [ax.get_title() for ax in fig.axes]
    assert not any("Best Fit" in t for t in titles)
    plt.close(fig)


def test_posterior_median_and_percentiles(fitter):
    import matplotlib.pyplot as plt

    res = ImcascadeResults(_as_dict(fitter, True))
    fig = res.make_diagnostic_fig()
    text = _summary(fig)
    flux = an.flux(10 ** (fitter.posterior[:, 4:10]), SIG)
    lo, med, hi = np.percentile(flux, [16, 50, 84])
    assert "median (16th, 84th percentile)" in text
    assert f"flux   {med:.4g} ({lo:.4g}, {hi:.4g}) counts" in text
    assert f"q      {0.6:.4g} (fixed)" in text  # express mode: the geometry is fixed
    assert "posterior median" in _panel(fig, "model").get_title()
    assert not any("Best Fit" in ax.get_title() for ax in fig.axes)
    # The model drawn is the posterior median of every parameter (sky removed).
    median = np.median(fitter.posterior, axis=0)
    np.testing.assert_allclose(_panel(fig, "model").images[0].get_array(),
                               fitter.make_model(np.r_[median[:-3], 0, 0, 0]), rtol=1e-9)
    plt.close(fig)


def test_small_fluxes_keep_their_digits(fitter):
    # Fluxes of 3.4e-3 printed with two decimals read "0.00"; %.4g keeps four digits.
    import matplotlib.pyplot as plt

    res = ImcascadeResults(_as_dict(fitter, False, scale=1e-4))
    fig = res.make_diagnostic_fig()
    assert "flux   0.0034 counts" in _summary(fig)
    plt.close(fig)


def test_round_galaxy_has_no_angle_and_arcsec_from_results(fitter):
    import matplotlib.pyplot as plt

    d = _as_dict(fitter, False, pixel_scale=0.2)
    d["min_param"] = np.r_[d["min_param"][:2], 0.97, d["min_param"][3:]]
    res = ImcascadeResults(d)
    res.pixel_scale = 0.2  # results may carry the pixel scale (e.g. from a WCS)
    fig = res.make_diagnostic_fig()
    text = _summary(fig)
    assert "phi    (not given: q > 0.95)" in text and "deg" not in text
    r50 = float(an.radius_fraction(0.5, 10 ** TRUTH[4:10], SIG))
    assert f"r50    {r50 * 0.2:.4g} arcsec" in text
    assert _panel(fig, "sbp").get_xlabel() == "semi-major axis [arcsec]"
    plt.close(fig)
    with pytest.raises(ValueError, match="pixel_scale"):
        diagnostic_figure(res, pixel_scale=-1.0)


@pytest.mark.parametrize("sky", ["flat", None])
def test_flat_sky_and_no_sky(fitter, sky, monkeypatch):
    import matplotlib.pyplot as plt

    d = _as_dict(fitter, False)
    d["min_param"] = d["min_param"][: -3 if sky is None else -2]
    d.update(Ndof=len(d["min_param"]), Ndof_sky=0 if sky is None else 1, sky_model=sky is not None)
    fig = ImcascadeResults(d).make_diagnostic_fig()
    text = _summary(fig)
    panel = _panel(fig, "sky")
    if sky is None:
        assert "none fitted" in panel.get_title() and not panel.images and "sky: none" in text
    else:
        # A flat sky is one value: a small range centred on it, and the value in the summary.
        norm = panel.images[0].norm
        assert (norm.vmin + norm.vmax) / 2 == pytest.approx(0.01) and norm.vmax - norm.vmin < 0.01
        assert "sky    0.01 counts / pixel" in text and "sky: flat" in text
    boxes = [box for _, box in drawn_text_boxes(fig, monkeypatch)]
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]
                if min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5]
    plt.close(fig)


def test_position_angle_east_of_north():
    from astropy.wcs import WCS

    # North up (array axis 0 = +Dec), east to the left (RA decreasing along axis 1).
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [20.0, 20.0]
    wcs.wcs.cdelt = [-5e-5, 5e-5]
    # phi = 0 points north; phi turns towards +axis 1, i.e. west: PA = -phi = 180 - phi (mod 180).
    for phi in (0.0, 0.3, 1.2, 2.5):
        assert position_angle(wcs, 19.0, 19.0, phi) == pytest.approx((180 - np.degrees(phi)) % 180, abs=1e-3)


def test_format_value():
    assert format_value(0.00123456) == "0.001235"
    assert format_value(257.0712) == "257.1"
    assert format_value(np.full(10, 0.7)) == "0.7 (fixed)"
    samples = np.linspace(0.0, 100.0, 101)
    assert format_value(samples) == "50 (16, 84)"
    assert format_value(samples, "%.2f") == "50.00 (16.00, 84.00)"


def test_figure_from_fitter_file_and_dict_without_warnings(fitter, tmp_path):
    import matplotlib.pyplot as plt

    from imcascade_jax import io

    io.save_results(fitter, tmp_path / "fit.asdf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for source in (fitter, str(tmp_path / "fit.asdf"), _as_dict(fitter, False)):
            fig = ImcascadeResults(source).make_diagnostic_fig()
            image = _panel(fig, "data").images[0].get_array()
            assert np.ma.getmaskarray(image).sum() == 24  # the masked pixels are hidden
            assert len(_panel(fig, "sbp").get_lines()) == 6 + 1 + 1 + 2  # components, legend, total, levels
            assert _panel(fig, "sbp").get_yscale() == "log"
            assert "Model: 6 Gaussians" in _summary(fig)
            plt.close(fig)
    with pytest.raises(ValueError, match="img"):
        ImcascadeResults({"sig": SIG, "min_param": TRUTH}).make_diagnostic_fig()


def test_residuals_are_the_noise(fitter):
    import matplotlib.pyplot as plt

    fig = ImcascadeResults(_as_dict(fitter, False)).make_diagnostic_fig()
    chi = np.ma.compressed(_panel(fig, "resid").images[0].get_array())
    # The true model leaves the noise: (data - model) / sigma has unit spread and zero mean.
    assert np.std(chi) == pytest.approx(1.0, abs=0.06) and abs(np.mean(chi)) < 0.1
    plt.close(fig)


@pytest.mark.slow
def test_11_diagnostic_figure_warns_on_masked_pixels():
    # The 1.1 bug ours fixes (test above): 1.1 divides by zero at masked (zero-weight) pixels.
    pytest.importorskip("imcascade")
    from imcascade.fitter import Fitter as RefFitter
    from imcascade.results import ImcascadeResults as RefResults

    img = np.random.default_rng(1).normal(0, 0.01, (40, 40))
    mask = np.zeros((40, 40))
    mask[2:5, 30:34] = 1
    fit = RefFitter(img, SIG[:5], PSF_SIG, PSF_A, weight=np.full((40, 40), 1e4), mask=mask, verbose=False)
    fit.min_param = np.concatenate([[20, 20, 0.7, 1.0], TRUTH[4:9], [1e-3, 1e-5, -1e-5]])
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        RefResults(fit).make_diagnostic_fig()
