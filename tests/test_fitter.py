"""Fitter, initialize_fitter and the least-squares core: truth recovery, bounds, bad input,
1.1's defaults, compile reuse."""

from __future__ import annotations

import logging
import warnings

import jax
import numpy as np
import pytest

from imcascade_jax import buckets
from imcascade_jax import fit as core_fit
from imcascade_jax.fitter import Fitter, fitter_from_ASDF, initialize_fitter
from imcascade_jax.synthetic import make_galaxy, moffat_psf

SHAPE = (48, 48)
SIG = np.logspace(np.log10(0.75), np.log10(16.0), 6)
PSF_SIG = np.array([1.1, 2.4])
PSF_A = np.array([0.75, 0.25])
TRUTH = dict(n=1.0, re=3.0, flux=120.0, q=0.6, phi=0.7, centre=(24.3, 23.6))


@pytest.fixture(scope="module")
def galaxy():
    """An exponential galaxy (q 0.6, phi 0.7) convolved with a Moffat PSF, noise 0.005."""
    return make_galaxy(shape=SHAPE, n=TRUTH["n"], re=TRUTH["re"], flux=TRUTH["flux"],
                       q=TRUTH["q"], phi=TRUTH["phi"], centre=TRUTH["centre"],
                       psf=moffat_psf(size=21, core=2.0, power=3.0), seed=3)


def make_fitter(galaxy, **kwargs):
    kwargs.setdefault("verbose", False)
    return Fitter(galaxy.img, SIG, PSF_SIG, PSF_A, weight=1.0 / galaxy.err**2, **kwargs)


@pytest.fixture(scope="module")
def fitted(galaxy):
    f = make_fitter(galaxy, init_dict={"re": 3.0, "flux": 100.0})
    f.run_ls_min()
    return f


def total_flux(f):
    a = f.min_param[4:4 + f.Ndof_gauss]
    return float(np.sum(10**a if f.log_weight_scale else a))


# -- truth recovery ---------------------------------------------------------------------------

def test_recovers_truth(fitted):
    x = fitted.min_param
    assert fitted.min_res.success, fitted.min_res.message
    assert abs(x[0] - TRUTH["centre"][0]) < 0.05
    assert abs(x[1] - TRUTH["centre"][1]) < 0.05
    assert abs(x[2] - TRUTH["q"]) < 0.05  # r_e = 3 px under a ~2 px PSF: q is the hardest
    assert abs(x[3] - TRUTH["phi"]) < 0.05
    assert total_flux(fitted) == pytest.approx(TRUTH["flux"], rel=0.03)
    # chi2 per pixel ~ 1 for the right model with Gaussian noise
    assert fitted.min_res.chi2 / np.prod(SHAPE) == pytest.approx(1.0, abs=0.08)


def test_result_format_like_scipy(fitted):
    res = fitted.min_res
    npix = np.prod(SHAPE)
    assert res.x.shape == (fitted.Ndof,)
    assert res.jac.shape == (npix, fitted.Ndof)
    assert res.fun.shape == (npix,)
    assert res.cost == pytest.approx(0.5 * np.sum(res.fun**2), rel=1e-10)
    np.testing.assert_array_equal(fitted.min_param, res.x)


def test_jacobian_matches_finite_differences(fitted):
    """min_res.jac is d(residuals)/d(param) (scipy's convention) in log10 fluxes."""
    x = fitted.min_param
    jac = fitted.min_res.jac
    for i in [0, 2, 3, 5, fitted.Ndof - 1]:
        h = 1e-6 * max(1.0, abs(x[i]))
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd = (fitted.resid_1d(xp) - fitted.resid_1d(xm)) / (2 * h)
        np.testing.assert_allclose(jac[:, i], fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max())


def test_within_bounds(fitted):
    assert np.all(fitted.min_param >= fitted.lb - 1e-12)
    assert np.all(fitted.min_param <= fitted.ub + 1e-12)


def test_poor_start_reaches_same_optimum(galaxy, fitted):
    # (The flux guess also sets the upper bound of every component, as in 1.1: a guess below
    # the true flux would bound the fit, so the poor start is poor in structure and size.)
    f = make_fitter(galaxy, init_dict={"x0": 20.0, "y0": 28.0, "q": 0.2, "phi": 2.8,
                                       "re": 8.0, "flux": 300.0})
    f.run_ls_min()
    assert f.min_res.success
    np.testing.assert_allclose(f.min_param[:2], fitted.min_param[:2], atol=2e-3)
    assert f.min_res.chi2 == pytest.approx(fitted.min_res.chi2, abs=0.1)  # delta chi2 << 1


def test_active_bounds_are_respected(galaxy):
    """Bounds that exclude the optimum: the fit stops on them, and stays inside."""
    f = make_fitter(galaxy, init_dict={"q": 0.9}, bounds_dict={"q": [0.8, 1.0]})
    f.run_ls_min()
    assert f.min_param[2] == pytest.approx(0.8, abs=1e-9)
    assert np.all(f.min_param >= f.lb) and np.all(f.min_param <= f.ub)


def test_phi_wraps_instead_of_clipping():
    """A galaxy at phi ~ 0.02 fitted from phi = pi - 0.3: the default [0, pi] bounds wrap."""
    g = make_galaxy(shape=(40, 40), n=1.0, re=3.0, flux=100.0, q=0.5, phi=0.02,
                    centre=(20.0, 20.0), psf=moffat_psf(size=21, core=2.0, power=3.0), seed=1)
    f = Fitter(g.img, SIG[:5], PSF_SIG, PSF_A, weight=1 / g.err**2, verbose=False,
               init_dict={"phi": np.pi - 0.3, "re": 3.0, "flux": 100.0})
    f.run_ls_min()
    dphi = (f.min_param[3] - 0.02 + np.pi / 2) % np.pi - np.pi / 2
    assert abs(dphi) < 0.03
    assert 0 <= f.min_param[3] < np.pi


def test_second_fit_of_same_shape_does_not_recompile(galaxy, fitted):
    """The compiled solver is reused for another image of the same shape and model."""
    before = buckets.compile_stats()["compiled"]
    g2 = make_galaxy(shape=SHAPE, n=2.0, re=4.0, flux=80.0, q=0.8, phi=2.0,
                     psf=moffat_psf(size=21, core=2.0, power=3.0), seed=9)
    # (1.1's default slope bounds, 10x a guess from the edges, would hold sky1 at a bound.)
    f2 = make_fitter(g2, init_dict={"re": 4.0, "flux": 80.0},
                     bounds_dict={"sky1": [-1e-3, 1e-3], "sky2": [-1e-3, 1e-3]})
    f2.run_ls_min()
    assert buckets.compile_stats()["compiled"] == before
    assert f2.min_res.success


def test_ls_kwargs(galaxy):
    f = make_fitter(galaxy)
    with pytest.raises(ValueError, match="method"):
        f.run_ls_min({"method": "trf"})
    f.run_ls_min({"max_nfev": 2})
    assert f.min_res.status == -1 and not f.min_res.success


def test_vmap_over_images(galaxy, fitted):
    """The core solver batches over images of one shape."""
    lb, ub = fitted._solver_bounds()
    imgs = np.stack([galaxy.img, galaxy.img[::-1, ::-1]])
    res = jax.vmap(core_fit.least_squares, in_axes=(None, 0, None, None, None, None))(
        fitted.model, imgs, fitted.weight, fitted.param_init, lb, ub)
    x = np.asarray(res.x)
    np.testing.assert_allclose(x[0, :2], fitted.min_param[:2], atol=1e-4)
    # the flipped image has its centre mirrored: (47 - x0, 47 - y0)
    np.testing.assert_allclose(x[1, :2], 47.0 - fitted.min_param[:2], atol=1e-3)


# -- options of the advanced guide -----------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"sky_type": "flat"},
    {"sky_model": False},
    {"log_weight_scale": False},
    {"render_mode": "erf"},
    {"render_mode": "gauss"},
    {"psf_shape": {"q": 0.95, "phi": 0.3}},
])
def test_options_fit(galaxy, kwargs):
    f = make_fitter(galaxy, init_dict={"re": 3.0, "flux": 100.0}, **kwargs)
    f.run_ls_min()
    assert f.min_res.status > 0, f.min_res.message
    assert total_flux(f) == pytest.approx(TRUTH["flux"], rel=0.05)
    assert abs(f.min_param[0] - TRUTH["centre"][0]) < 0.1


# -- 1.1's defaults and likelihood ------------------------------------------------------------

def test_defaults_match_imcascade11(galaxy, imcascade11):
    from imcascade.fitter import Fitter as Fitter11

    w = 1.0 / galaxy.err**2
    mask = np.zeros(SHAPE)
    mask[:3, :5] = 1
    init = {"re": 3.0, "flux": 100.0}
    ours = Fitter(galaxy.img, SIG, PSF_SIG, PSF_A, weight=w, mask=mask, init_dict=init,
                  verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Fitter11(galaxy.img.copy(), SIG, PSF_SIG, PSF_A, weight=w.copy(), mask=mask,
                       init_dict=dict(init), verbose=False)
    np.testing.assert_allclose(ours.param_init, ref.param_init, rtol=1e-12)
    np.testing.assert_allclose(ours.lb, ref.lb, rtol=1e-12)
    np.testing.assert_allclose(ours.ub, ref.ub, rtol=1e-12)
    assert (ours.Ndof, ours.Ndof_gauss, ours.Ndof_sky) == (ref.Ndof, ref.Ndof_gauss, ref.Ndof_sky)
    np.testing.assert_allclose(ours.weight, ref.weight)
    assert ours.loglike_const == pytest.approx(ref.loglike_const, rel=1e-12)
    # 1.1's chi2 formula applied to our model image, less its log(2 pi) per masked pixel.
    p = ours.param_init.copy()
    model = ours.make_model(p)
    chi2_11 = np.sum((ref.img - model) ** 2 * ref.weight - ref.log_weight + np.log(2 * np.pi))
    n_masked = int(mask.sum())
    assert float(ours.chi_sq(p)) == pytest.approx(chi2_11 - n_masked * np.log(2 * np.pi), rel=1e-12)
    assert float(ours.log_like(p)) == pytest.approx(-0.5 * float(ours.chi_sq(p)), rel=1e-12)


def test_residuals(fitted):
    p = fitted.min_param
    expected = (fitted.img - fitted.make_model(p)) * np.sqrt(fitted.weight)
    np.testing.assert_allclose(fitted.resid_1d(p), expected.ravel(), rtol=1e-12, atol=1e-12)


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"weight": np.ones((10, 10))}, "weight"),
    ({"mask": np.zeros((10, 10))}, "mask"),
    ({"weight": -np.ones(SHAPE)}, "weight"),
    ({"weight": np.full(SHAPE, np.inf)}, "weight"),
    ({"mask": np.ones(SHAPE)}, "masked"),
    ({"init_dict": {"q": 1.5}}, "q"),
    ({"init_dict": {"x0": 100.0}, "bounds_dict": {"x0": [0.0, 48.0]}}, "x0"),
    ({"render_mode": "fast"}, "render_mode"),
    ({"sky_type": "plane"}, "sky_type"),
    ({"psf_shape": {"q": 0.9}}, "psf_shape"),
    ({"likelihood": "cauchy"}, "likelihood"),
])
def test_bad_input(galaxy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Fitter(galaxy.img, SIG, PSF_SIG, PSF_A, verbose=False, **kwargs)


@pytest.mark.parametrize("sig", [SIG[::-1], np.array([0.0, 1.0, 2.0]), np.array([1.0, np.nan])])
def test_bad_sig(galaxy, sig):
    with pytest.raises(ValueError, match="sig"):
        Fitter(galaxy.img, sig, PSF_SIG, PSF_A, verbose=False)


def test_bad_psf_arguments(galaxy):
    with pytest.raises(ValueError, match="psf_sig"):
        Fitter(galaxy.img, SIG, PSF_SIG, PSF_A[:1], verbose=False)


def test_nan_pixels_are_masked_with_warning_and_inputs_untouched(galaxy):
    img = galaxy.img.copy()
    img[5, 7] = np.nan
    weight = np.ones(SHAPE)
    mask = np.zeros(SHAPE)
    mask[0, 0] = 1
    with pytest.warns(UserWarning, match="non-finite"):
        f = Fitter(img, SIG, PSF_SIG, PSF_A, weight=weight, mask=mask, verbose=False)
    assert f.weight[5, 7] == 0 and f.mask[5, 7] == 1 and f.img[5, 7] == 0
    assert f.weight[0, 0] == 0
    # the caller's arrays are not modified (1.1 zeroes the caller's weights in place)
    assert np.isnan(img[5, 7]) and weight[0, 0] == 1 and mask[5, 7] == 0


# -- logging ----------------------------------------------------------------------------------

def test_logging_uses_own_logger(galaxy, caplog):
    root_handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.INFO, logger="imcascade_jax"):
        make_fitter(galaxy, verbose=True, sky_model=False, psf_shape=None,
                    init_dict={"re": 3.0, "flux": 100.0}).run_ls_min({"max_steps": 3})
    assert any("least squares" in r.message for r in caplog.records)
    assert logging.getLogger().handlers == root_handlers


def test_verbose_false_is_silent(galaxy):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    lg = logging.getLogger("imcascade_jax")
    lg.addHandler(handler)
    try:
        make_fitter(galaxy, verbose=False, init_dict={"re": 3.0, "flux": 100.0}).run_ls_min(
            {"max_steps": 3})
    finally:
        lg.removeHandler(handler)
    assert [r.levelno for r in records] == [logging.WARNING]  # only "did not converge"


# -- initialize_fitter and files ----------------------------------------------------------------

def test_initialize_fitter_arrays_and_fits(galaxy, tmp_path):
    from astropy.io import fits

    psf = moffat_psf(size=21, core=2.0, power=3.0)
    f1 = initialize_fitter(galaxy.img, psf, err=galaxy.err, verbose=False)
    img_path, psf_path = tmp_path / "img.fits", tmp_path / "psf.fits"
    fits.writeto(img_path, galaxy.img.astype(">f4"))  # big-endian, as FITS files are
    fits.writeto(psf_path, psf * 7.0)  # unnormalised
    f2 = initialize_fitter(str(img_path), str(psf_path), err=galaxy.err, verbose=False)
    assert f1.Ndof_gauss == 7  # small images get 7 components, as 1.1
    assert f1.has_psf and f2.has_psf
    np.testing.assert_allclose(f1.sig, f2.sig, rtol=1e-3)
    np.testing.assert_allclose(f1.psf_a.sum(), 1.0, atol=0.05)
    assert f1.sig[0] == pytest.approx(0.75)
    f1.run_ls_min()
    assert total_flux(f1) == pytest.approx(TRUTH["flux"], rel=0.05)


def test_initialize_fitter_uses_given_flux_and_centre(galaxy):
    """1.1 ignored a given flux; and used the first axis for the default y0."""
    psf = moffat_psf(size=21, core=2.0, power=3.0)
    f = initialize_fitter(galaxy.img[:, :40], psf, err=galaxy.err[:, :40], flux=77.0,
                          verbose=False)
    assert f.init_dict["flux"] == 77.0
    assert f.init_dict["y0"] == 20.0


def test_save_and_reload(fitted, tmp_path):
    path = tmp_path / "fit.asdf"
    fitted.save_results(str(path))
    f2 = fitter_from_ASDF(str(path), init_dict=fitted.init_dict)  # 1.1 does not save init_dict
    np.testing.assert_allclose(f2.img, fitted.img)
    np.testing.assert_allclose(f2.sig, fitted.sig)
    np.testing.assert_allclose(f2.min_param, fitted.min_param)
    np.testing.assert_allclose(f2.param_init, fitted.param_init)


def test_float32_fit_matches_float64(galaxy, fitted):
    import jax.numpy as jnp

    f = make_fitter(galaxy, init_dict={"re": 3.0, "flux": 100.0}, dtype=jnp.float32)
    f.run_ls_min()
    assert f.min_res.success, f.min_res.message
    np.testing.assert_allclose(f.min_param[:4], fitted.min_param[:4], atol=2e-4)
    assert total_flux(f) == pytest.approx(total_flux(fitted), rel=1e-4)
    assert f.min_res.chi2 == pytest.approx(fitted.min_res.chi2, rel=1e-5)


@pytest.mark.slow
def test_same_model_as_imcascade11_gives_its_least_squares_fit(imcascade11):
    """With 1.1's widths and 1.1's PSF decomposition, our least-squares fit of the quickstart
    galaxy reproduces 1.1's own (reference: imcascade 1.1's ``run_ls_min`` and results, run
    here). With our decomposition r50 is ~1% larger: 1.1's PSF model is too faint in the core."""
    from imcascade.fitter import initialize_fitter as initialize_fitter11
    from imcascade.results import ImcascadeResults as Results11

    from imcascade_jax.results import ImcascadeResults
    from imcascade_jax.synthetic import quickstart_data

    g = quickstart_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = initialize_fitter11(g.img, g.psf, err=g.err)
        ref.run_ls_min()
    ours = Fitter(g.img, ref.sig, ref.psf_sig, ref.psf_a, weight=ref.weight, mask=ref.mask,
                  verbose=False)
    ours.run_ls_min()
    res, res11 = ImcascadeResults(ours), Results11(ref)
    assert float(res.calc_flux()) == pytest.approx(float(res11.calc_flux()), rel=1e-3)
    assert float(res.calc_rX(0.5)) == pytest.approx(float(res11.calc_rX(0.5)), rel=1e-3)
    # Fluxes of the components that carry the light (the inner ones trade flux along a
    # degenerate direction and are compared through r50 above).
    np.testing.assert_allclose(ours.min_param[6:10], ref.min_param[6:10], atol=0.02)


# -- inputs a user may get wrong ------------------------------------------------------------------

def test_initialize_fitter_refuses_weight_and_init_dict(galaxy):
    with pytest.raises(TypeError, match="sets 'weight' itself: give the noise as err="):
        initialize_fitter(galaxy.img, galaxy.psf, weight=1 / galaxy.err**2, verbose=False)
    with pytest.raises(TypeError, match="sets 'init_dict' itself"):
        initialize_fitter(galaxy.img, galaxy.psf, init_dict={"re": 3.0}, verbose=False)


def test_masked_pixels_may_hold_any_error(galaxy):
    """Masked pixels carry no information, whatever their error says (negative, -inf, huge)."""
    mask = np.zeros(SHAPE, bool)
    mask[:6] = True
    err = galaxy.err.copy()
    err[:4], err[4, :5], err[5, :5] = -1.0, -np.inf, 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        garbage = initialize_fitter(galaxy.img, galaxy.psf, err=err, mask=mask, verbose=False)
    clean = initialize_fitter(galaxy.img, galaxy.psf, err=galaxy.err, mask=mask, verbose=False)
    np.testing.assert_array_equal(garbage.weight, clean.weight)
    assert np.all(garbage.weight[:6] == 0)
    err[20, 20] = -1.0  # an unmasked one is still refused
    with pytest.raises(ValueError, match="'err' must be >= 0 in every unmasked pixel; 1 pixels"):
        initialize_fitter(galaxy.img, galaxy.psf, err=err, mask=mask, verbose=False)


def test_noiseless_background_asks_for_errors():
    """Integer counts that are mostly 0: sep's background rms is 0, so it gives no weights."""
    from imcascade_jax.errors import SetupError

    g = make_galaxy(shape=(64, 64), re=3.0, flux=100.0, q=0.7, phi=0.5, noise=0.0)
    counts = np.random.default_rng(2).poisson(g.img * 50 + 0.01).astype(float)  # 86% zeros
    with pytest.raises(SetupError, match="no measurable noise.*give 'err'"):
        initialize_fitter(counts, g.psf, verbose=False)
    f = initialize_fitter(counts, g.psf, err=np.sqrt(counts + 1.0), verbose=False)  # with errors: fine
    assert np.all(f.weight > 0)


def test_zero_errors_everywhere_name_err(galaxy):
    from imcascade_jax.errors import NoUsablePixelsError

    with pytest.raises(NoUsablePixelsError, match="zero weight from 'err'"):
        initialize_fitter(galaxy.img, galaxy.psf, err=np.zeros(SHAPE), verbose=False)


def test_complex_image_is_refused(galaxy):
    with pytest.raises(TypeError, match="'im' must be real, got a complex array"):
        initialize_fitter(galaxy.img + 0j, galaxy.psf, err=galaxy.err, verbose=False)


def test_background_of_exact_zeros_still_gets_sky_bounds():
    """An image whose background is exactly 0 (a 0/1 segmentation-like blob, given errors): the
    sky starts at 0 (sep's background) inside non-empty bounds, and the fit converges."""
    g = make_galaxy(shape=(64, 64), re=3.0, flux=100.0, q=0.7, phi=0.5, noise=0.01)
    img = (g.img > 0.05).astype(float)
    f = initialize_fitter(img, g.psf, err=g.err, verbose=False)
    assert f.init_dict["sky0"] == 0.0 and f.bounds_dict["sky0"][1] > 0
    f.run_ls_min()
    assert f.min_res.success
    rows, cols = np.indices(img.shape)
    centroid = ((rows * img).sum() / img.sum(), (cols * img).sum() / img.sum())
    np.testing.assert_allclose(f.min_param[:2], centroid, atol=0.2)


def test_galaxy_off_the_image_centre_is_fitted_where_it_was_detected():
    """No position given and the galaxy 18 px from the image centre (beyond the +-10 px centre
    bounds about the start): the fit starts on the detection and finds the true centre."""
    g = make_galaxy(shape=(128, 128), re=3.0, flux=200.0, q=0.7, phi=0.5, noise=0.01,
                    centre=(64.0 + 12.3, 64.0 - 13.6), psf=moffat_psf(size=15, core=1.5))
    f = initialize_fitter(g.img, g.psf, err=g.err, verbose=False)
    assert abs(f.init_dict["x0"] - 76.3) < 1.0 and abs(f.init_dict["y0"] - 50.4) < 1.0
    f.run_ls_min()
    assert f.min_res.success, f.min_res.message
    np.testing.assert_allclose(f.min_param[:2], [76.3, 50.4], atol=0.05)
