"""imcascade 1.1's documented flows, with ``imcascade`` replaced by ``imcascade_jax``.

The code in these tests follows the seed documentation (quickstart and the in-depth example's
least-squares part) line by line; only the data are synthetic and smaller, to keep the suite fast.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from imcascade_jax.synthetic import make_galaxy, moffat_psf  # noqa: E402


@pytest.fixture(scope="module")
def scene():
    """A galaxy (Sersic n = 1.5, r_e = 4, flux 200) with a neighbour, 80x80."""
    psf = moffat_psf(size=25, core=2.5, power=3.0)
    g = make_galaxy(shape=(80, 80), n=1.5, re=4.0, flux=200.0, q=0.7, phi=0.5, psf=psf, seed=5)
    neighbour = make_galaxy(shape=(80, 80), n=1.0, re=2.0, flux=60.0, centre=(15.0, 62.0),
                            psf=psf, noise=0.0).img
    return g.img + neighbour, psf, g.err**2, g.truth


def test_quickstart_flow(scene):
    sci, psf, _, truth = scene
    from imcascade_jax.fitter import initialize_fitter

    fitter = initialize_fitter(sci, psf)
    opt_param = fitter.run_ls_min()
    assert opt_param.shape == (4 + fitter.Ndof_gauss + 3,)

    from imcascade_jax.results import ImcascadeResults

    res_class = ImcascadeResults(fitter)
    out = res_class.run_basic_analysis()
    # 1.1's keys first, then what the image holds of the model (no WCS here: no sky keys).
    assert list(out)[:7] == ["flux", "r20", "r50", "r80", "r90", "C80_20", "C90_50"]
    assert set(out) - set(list(out)[:7]) == {"flux_image", "frac_outside", "r20_image", "r50_image",
                                             "r80_image", "r90_image", "r90_outside_image"}
    assert out["frac_outside"] < 0.01
    assert out["flux"] == pytest.approx(truth["flux"], rel=0.05)
    assert out["r50"] == pytest.approx(truth["re"], rel=0.08)
    fig = res_class.make_diagnostic_fig()
    assert len(fig.axes) >= 6


def test_in_depth_flow(scene, tmp_path):
    img, psf_data, var, truth = scene
    import sep

    from imcascade_jax.psf_fitter import PSFFitter

    psf_fitter = PSFFitter(psf_data)
    psf_sig, psf_a, chi2, fig = psf_fitter.fit_N(3, plot=True)  # Can choose number
    assert len(psf_sig) == 3 and abs(np.sum(psf_a) - 1) < 0.05

    bkg = sep.Background(img)
    x_cent, y_cent = int(img.shape[0] / 2.0), int(img.shape[1] / 2.0)
    obj, seg = sep.extract(img - bkg.back(), 1.5, err=np.sqrt(var), deblend_cont=0.005,
                           segmentation_map=True)
    seg[np.where(seg == seg[x_cent, y_cent])] = 0
    mask_raw = seg > 0
    from imcascade_jax.utils import expand_mask

    mask = expand_mask(mask_raw, radius=1.5)
    mask = np.array(mask, dtype=bool)
    assert mask[15, 62] and not mask[40, 40]

    sig = np.logspace(np.log10(1), np.log10(40), num=9)
    init_dict = {"re": 4.0, "flux": 150.0}
    from imcascade_jax import Fitter

    fitter = Fitter(img, sig, psf_sig, psf_a, weight=1.0 / var, mask=mask, init_dict=init_dict)
    min_res = fitter.run_ls_min()
    assert min_res[0] == pytest.approx(40.0, abs=0.1) and min_res[1] == pytest.approx(40.0, abs=0.1)

    from imcascade_jax import ImcascadeResults

    res_class = ImcascadeResults(fitter)
    fig = res_class.make_diagnostic_fig()
    assert fig is not None
    path = str(tmp_path / "examp_results.asdf")
    fitter.save_results(path)
    res_class_w_file = ImcascadeResults(path)
    out = res_class_w_file.run_basic_analysis(zpt=27)
    assert out["flux"] == pytest.approx(truth["flux"], rel=0.05)
    assert out["mag"] == pytest.approx(27 - 2.5 * np.log10(out["flux"]))
    rplot = np.linspace(0, 50, num=100)
    assert res_class_w_file.calc_sbp(rplot).shape[0] == 100
    assert res_class_w_file.calc_cog(rplot)[-1] == pytest.approx(out["flux"], rel=0.02)
