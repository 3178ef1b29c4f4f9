"""Tests of the Fitter's posterior methods (express mode, prior transforms, dynesty, NUTS,
likelihood choice and the ``log_like_exp`` override) on small images."""

from __future__ import annotations

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from imcascade_jax.fitter import Fitter
from imcascade_jax.model import make_model
from imcascade_jax.render import render
from imcascade_jax.results import ImcascadeResults
from imcascade_jax.synthetic import make_galaxy, moffat_psf
from imcascade_jax.utils import guess_weights

SIG = np.array([0.7, 1.4, 2.8, 5.6, 11.0])
PSF_SIG, PSF_A = np.array([1.0, 2.5]), np.array([0.7, 0.3])
# Random walks: dynesty's default uniform sampling in bootstrapped ellipsoids took minutes
# (millions of calls) on these narrow posteriors.
DYNESTY_FAST = {"sampler_kwargs": {"nlive": 100, "sample": "rwalk"},
                "run_nested_kwargs": {"dlogz_init": 1.0, "maxbatch": 0, "print_progress": False}}


@pytest.fixture(scope="session")
def fitted():
    """A 40x40 galaxy with 5 components, after run_ls_min and set_up_express_run."""
    g = make_galaxy(shape=(40, 40), re=3.0, flux=100.0, noise=0.01,
                    psf=moffat_psf(size=15, core=1.5))
    f = Fitter(g.img, SIG, PSF_SIG, PSF_A, weight=1 / g.err**2, verbose=False)
    f.run_ls_min()
    f.set_up_express_run()
    return f


@pytest.fixture(scope="session")
def nuts_express(fitted):
    """Posterior of run_nuts(method='express'), two chains, and its diagnostics."""
    post = fitted.run_nuts(method="express", num_samples=400, num_warmup=300, num_chains=2,
                           seed=1, progress_bar=False)
    return post.copy(), dict(fitted.nuts_diagnostics), fitted.post_method


def _stats(f, post):
    res = ImcascadeResults({"sig": f.sig, "posterior": post, "log_weight_scale": True,
                            "Ndof_sky": f.Ndof_sky})
    flux, r50 = np.asarray(res.calc_flux()), np.asarray(res.calc_rX(0.5))
    return {k: np.percentile(v, [16, 50, 84]) for k, v in (("flux", flux), ("r50", r50))}


def test_express_prior_is_the_same_in_any_flux_unit(fitted):
    """An image in counts (x 1e6) gets the same log10-flux prior and the sky prior in its units:
    1.1's cap of 1 would pin the sky (sigma ~2e-4 x 1e6 > 1) and shrink the error bars."""
    s = 1e6
    f = Fitter(fitted.img * s, SIG, PSF_SIG, PSF_A, weight=fitted.weight / s**2, verbose=False)
    f.run_ls_min()
    f.set_up_express_run()
    n = f.Ndof_gauss
    np.testing.assert_allclose(f._exp_pri_locs[:n], fitted._exp_pri_locs[:n] + 6.0, atol=1e-7)
    np.testing.assert_allclose(f._exp_pri_scales[:n], fitted._exp_pri_scales[:n], rtol=1e-5)
    np.testing.assert_allclose(f._exp_pri_scales[n:], s * fitted._exp_pri_scales[n:], rtol=1e-5)
    assert np.all(f._exp_pri_scales[n:] > 1.0)  # beyond 1.1's cap: the cap is not applied
    # The 'cauchy' prior's sky scale follows the unit too (1.1's is 1e-3 in any unit).
    assert f._cauchy_sky_scale() == pytest.approx(s * fitted._cauchy_sky_scale(), rel=1e-9)


def test_set_up_express_run(fitted):
    f = fitted
    assert f.express_gauss_arr.shape == (40, 40, 5)
    np.testing.assert_array_equal(f.exp_set_params, f.min_res.x[:4])
    np.testing.assert_allclose(f._exp_pri_locs, f.min_res.x[4:])
    # 1.1's widths: twice the least-squares sigma, capped at 1 dex for the log10 fluxes (the
    # sky's, in image units, uncapped).
    cov = np.linalg.inv(f.min_res.jac.T @ f.min_res.jac)
    cap = np.r_[np.ones(f.Ndof_gauss), np.full(f.Ndof_sky, np.inf)]
    expect = np.minimum(2 * np.sqrt(np.diag(cov))[4:], cap)
    np.testing.assert_allclose(f._exp_pri_scales, expect, rtol=1e-6)
    # 1.1's Cauchy flux locations: guess_weights of the initial size and flux.
    np.testing.assert_allclose(f._cauchy_flux_guess,
                               guess_weights(f.sig, f.init_dict["re"], f.init_dict["flux"]))
    # The component images are the unit-flux components of the model at exp_set_params.
    p = f.min_res.x.copy()
    p[4:] = -np.inf
    p[4] = 0.0
    p[4 + f.Ndof_gauss:] = 0.0
    np.testing.assert_allclose(f.express_gauss_arr[..., 0], render(f.model, p), atol=1e-13)


def test_set_up_express_run_with_set_params(fitted):
    f = Fitter(fitted.img, SIG, PSF_SIG, PSF_A, weight=fitted.weight, verbose=False)
    stack = f.set_up_express_run(set_params=[20.0, 20.0, 0.8, 0.3])
    assert stack.shape == (40, 40, 5) and not hasattr(f, "min_res")
    np.testing.assert_array_equal(f.exp_set_params, [20.0, 20.0, 0.8, 0.3])
    with pytest.raises(ValueError, match="run_ls_min"):
        f.ptform_exp_ls(np.full(f.Ndof - 4, 0.5))
    x = np.asarray(f.ptform_exp_unif(np.full(f.Ndof - 4, 0.5)))
    np.testing.assert_allclose(x, 0.5 * (f.lb[4:] + f.ub[4:]))


def test_express_model_and_likelihood_match_full(fitted):
    f = fitted
    rng = np.random.default_rng(0)
    for _ in range(3):
        exp = f.min_res.x[4:] + rng.normal(0, 0.05, f.Ndof - 4) * np.r_[np.ones(5), 1e-3 * np.ones(3)]
        full = np.concatenate([f.exp_set_params, exp])
        np.testing.assert_allclose(f.make_express_model(exp), f.make_model(full), atol=1e-12)
        # 1.1's log_like_exp: -chi2/2 + loglike_const.
        chi2 = np.sum((f.img - np.asarray(f.make_model(full))) ** 2 * f.weight)
        assert float(f.log_like_exp(exp)) == pytest.approx(-0.5 * chi2 + f.loglike_const, rel=1e-10)
        assert float(f.log_like_exp(exp)) == pytest.approx(float(f.log_like(full)), rel=1e-10)
    assert float(jax.jit(f.log_like_exp)(jnp.asarray(exp))) == pytest.approx(
        float(f.log_like_exp(exp)), rel=1e-12)
    g = jax.grad(f.log_like_exp)(jnp.asarray(exp))
    assert np.all(np.isfinite(g))


def test_prior_transforms_match_11_formulas(fitted):
    f = fitted
    rng = np.random.default_rng(2)
    u = rng.uniform(0.02, 0.98, f.Ndof)
    x = np.asarray(f.ptform(u))
    assert x[0] == pytest.approx(stats.norm.ppf(u[0], loc=f.param_init[0], scale=1))
    assert x[1] == pytest.approx(stats.norm.ppf(u[1], loc=f.param_init[1], scale=1))
    assert x[2] == pytest.approx(stats.truncnorm.ppf(u[2], -4.0, 0.0, loc=1, scale=0.25))
    assert x[3] == pytest.approx(u[3] * np.pi)
    np.testing.assert_allclose(x[4:], u[4:] * (f.ub[4:] - f.lb[4:]) + f.lb[4:], rtol=1e-12)
    ue = u[4:]
    np.testing.assert_allclose(f.ptform_exp_ls(ue),
                               stats.norm.ppf(ue, f._exp_pri_locs, f._exp_pri_scales), rtol=1e-9)
    np.testing.assert_allclose(f.ptform_exp_unif(ue), ue * (f.ub[4:] - f.lb[4:]) + f.lb[4:],
                               rtol=1e-12)
    # 1.1's Cauchy priors: fluxes at guess_weights with a third of it as scale; sky (0, 1e-3)
    # for an image of robust spread 0.02, scaling with the image (flux-unit free).
    guess = f._cauchy_flux_guess
    locs = np.r_[guess, np.zeros(f.Ndof_sky)]
    good = f.img[f.weight > 0]
    spread = 1.4826 * np.median(np.abs(good - np.median(good)))
    scales = np.r_[guess / 3, np.full(f.Ndof_sky, 1e-3 * spread / 0.02)]
    np.testing.assert_allclose(f.ptform_exp_lin_cauchy(ue), stats.cauchy.ppf(ue, locs, scales),
                               rtol=1e-9)
    batch = jax.jit(jax.vmap(f.ptform_exp_ls))(jnp.asarray([ue, ue]))
    np.testing.assert_allclose(batch[1], f.ptform_exp_ls(ue), rtol=1e-12)


def test_unknown_prior_or_method(fitted):
    with pytest.raises(ValueError, match="prior"):
        fitted.run_dynesty(method="express", prior="jeffreys")
    with pytest.raises(ValueError, match="method"):
        fitted.run_dynesty(method="quick")
    with pytest.raises(ValueError, match="prior"):
        fitted.run_nuts(prior="jeffreys")
    with pytest.raises(ValueError, match="backend"):
        fitted.run_nuts(backend="stan")
    with pytest.raises(ValueError, match="express"):
        fitted.run_nuts(method="full", prior="cauchy")


def test_missing_dynesty_is_an_import_error_with_instructions(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "dynesty", None)
    with pytest.raises(ImportError, match=r"pip install \"imcascade_jax\[dynesty\]\""):
        fitted.run_dynesty(method="express")


def test_run_nuts_express(fitted, nuts_express):
    post, diag, method = nuts_express
    f = fitted
    assert method == "nuts-express"
    assert post.shape == (800, f.Ndof)
    np.testing.assert_array_equal(post[:, :4], np.broadcast_to(f.exp_set_params, (800, 4)))
    for key in ("ess", "min_ess", "rhat", "num_divergent", "step_size", "num_grad_evals",
                "compile_s", "run_s", "ess_per_s"):
        assert key in diag
    assert diag["max_rhat"] < 1.05 and diag["min_ess"] > 100
    assert diag["divergent_fraction"] < 0.02
    s = _stats(f, post)
    ls = ImcascadeResults({"sig": f.sig, "min_param": f.min_res.x, "Ndof_sky": 3})
    assert abs(s["flux"][1] - float(ls.calc_flux())) < s["flux"][2] - s["flux"][0]


def test_run_dynesty_express_consistent_with_nuts(fitted, nuts_express):
    pytest.importorskip("dynesty")
    f = fitted
    post = f.run_dynesty(method="express", seed=0, **DYNESTY_FAST)
    assert f.post_method == "dynesty-express"
    assert np.isfinite(f.logz) and np.isfinite(f.logz_err) and f.dynesty_sampler is not None
    assert post.shape[1] == f.Ndof
    np.testing.assert_array_equal(post[:, :4], np.broadcast_to(f.exp_set_params, (len(post), 4)))
    s_dyn, s_nuts = _stats(f, post), _stats(f, nuts_express[0])
    for key in ("flux", "r50"):
        width = max(s_dyn[key][2] - s_dyn[key][0], s_nuts[key][2] - s_nuts[key][0]) / 2
        assert abs(s_dyn[key][1] - s_nuts[key][1]) < width


@pytest.mark.slow
def test_cauchy_prior_keeps_log_weights(fitted):
    pytest.importorskip("dynesty")
    f = fitted
    post = f.run_dynesty(method="express", prior="cauchy", seed=1, **DYNESTY_FAST)
    assert f.log_weight_scale is True  # 1.1 switched the fitter to linear weights for good
    assert np.all(np.isfinite(post))
    flux = ImcascadeResults(f).calc_flux()
    assert 80 < np.median(flux) < 120


def test_second_galaxy_of_the_same_shape_does_not_recompile(fitted, nuts_express):
    # The compiled NUTS program takes the data as arguments (cached by shapes and settings).
    g = make_galaxy(shape=(40, 40), re=2.5, flux=80.0, noise=0.01,
                    psf=moffat_psf(size=15, core=1.5), seed=11)
    f = Fitter(g.img, SIG, PSF_SIG, PSF_A, weight=1 / g.err**2, verbose=False)
    f.run_ls_min()
    post = f.run_nuts(method="express", num_samples=400, num_warmup=300, num_chains=2, seed=1,
                      progress_bar=False)
    assert f.nuts_diagnostics["compile_s"] == 0.0
    flux = ImcascadeResults(f).calc_flux()
    assert 70 < np.median(flux) < 90 and not np.allclose(post, nuts_express[0])


def test_refit_resets_express_state_and_priors(fitted, nuts_express):
    # New data and a new start, then run_ls_min again: express mode and the least-squares
    # priors must follow the new fit, not the first one.
    f = Fitter(fitted.img, SIG, PSF_SIG, PSF_A, weight=fitted.weight, verbose=False)
    f.run_ls_min()
    kw = dict(method="express", num_samples=400, num_warmup=300, num_chains=2, seed=1,
              progress_bar=False)
    first = f.run_nuts(**kw)
    g = make_galaxy(shape=(40, 40), re=2.5, flux=80.0, noise=0.01,
                    psf=moffat_psf(size=15, core=1.5), seed=11)
    f.img, f.weight = g.img, 1 / g.err**2
    f.param_init = f.param_init.copy()
    f.param_init[:2] += 0.5
    old_fit = f.min_res
    f.run_ls_min()
    assert f.min_res is not old_fit
    # The first posterior is gone: results now read the new least-squares fit.
    assert f.posterior is None and f.post_method is None and f.nuts_diagnostics is None
    assert np.ndim(ImcascadeResults(f).calc_flux()) == 0
    post = f.run_nuts(**kw)
    np.testing.assert_array_equal(post[:, :4], np.broadcast_to(f.min_res.x[:4], (800, 4)))
    np.testing.assert_array_equal(f.exp_set_params, f.min_res.x[:4])
    np.testing.assert_allclose(f._exp_pri_locs, f.min_res.x[4:])
    expect = np.minimum(2 * np.sqrt(np.diag(np.linalg.inv(f.min_res.jac.T @ f.min_res.jac)))[4:],
                        1.0)
    np.testing.assert_allclose(f._exp_pri_scales, expect, rtol=1e-6)
    # The express problem holds the new data.
    np.testing.assert_array_equal(np.asarray(f._express.img), g.img)
    flux_first = ImcascadeResults({"sig": f.sig, "posterior": first, "log_weight_scale": True,
                                   "Ndof_sky": 3}).calc_flux()
    flux = ImcascadeResults(f).calc_flux()
    assert 90 < np.median(flux_first) < 110 and 70 < np.median(flux) < 90


def test_log_like_exp_override_is_honoured(fitted):
    f = Fitter(fitted.img, SIG, PSF_SIG, PSF_A, weight=fitted.weight, verbose=False)
    f.min_res = fitted.min_res
    f.set_up_express_run()
    target = f.min_res.x[4:] + np.r_[0.3 * np.ones(5), np.zeros(3)]
    scale = np.r_[0.01 * np.ones(5), 1e-5 * np.ones(3)]
    calls = []

    def my_like(exp_params):
        calls.append(1)
        return -0.5 * jnp.sum(((exp_params - target) / scale) ** 2)

    f.log_like_exp = my_like
    post = f.run_nuts(method="express", prior="uniform", num_samples=200, num_warmup=200,
                      progress_bar=False)
    assert calls  # traced
    np.testing.assert_allclose(np.median(post[:, 4:9], axis=0), target[:5], atol=0.01)
    del f.log_like_exp  # back to the built-in likelihood
    assert f._custom_log_like_exp() is None


@pytest.mark.slow
def test_log_like_exp_override_is_honoured_by_dynesty(fitted):
    pytest.importorskip("dynesty")
    f = Fitter(fitted.img, SIG, PSF_SIG, PSF_A, weight=fitted.weight, verbose=False)
    f.min_res = fitted.min_res
    target = f.min_res.x[4:] + np.r_[0.05 * np.ones(5), np.zeros(3)]
    scale = np.r_[0.01 * np.ones(5), 1e-5 * np.ones(3)]
    f.log_like_exp = lambda p: -0.5 * jnp.sum(((p - target) / scale) ** 2)
    post = f.run_dynesty(method="express", prior="min_results", seed=0, **DYNESTY_FAST)
    # Posterior: the Gaussian override times the least-squares Gaussian prior.
    loc, sd = f._exp_pri_locs[:5], f._exp_pri_scales[:5]
    expect = (loc / sd**2 + target[:5] / scale[:5] ** 2) / (1 / sd**2 + 1 / scale[:5] ** 2)
    width = 1 / np.sqrt(1 / sd**2 + 1 / scale[:5] ** 2)
    np.testing.assert_allclose(np.median(post[:, 4:9], axis=0), expect, atol=0.8 * width.min())
    np.testing.assert_allclose(np.std(post[:, 4:9], axis=0), width, rtol=0.2)


def test_poisson_likelihood_gives_unbiased_flux():
    # Counts: a model galaxy of 200000 counts on a sky of 20 counts per pixel, Poisson noise
    # (the posterior's width of the total flux is ~0.3%; with 20000 counts it is 2%, flux and
    # sky being degenerate, and a 1% test would test the noise realisation).
    model = make_model((40, 40), SIG, PSF_SIG, PSF_A, sky_type="flat")
    flux = np.array([0.1, 0.2, 0.3, 0.25, 0.15]) * 200000.0
    truth = np.concatenate([[19.6, 20.3, 0.8, 0.5], np.log10(flux), [20.0]])
    clean = np.asarray(render(model, truth))
    img = np.random.default_rng(7).poisson(clean).astype(float)
    f = Fitter(img, SIG, PSF_SIG, PSF_A, weight=1.0 / np.maximum(img, 1.0), verbose=False,
               sky_type="flat", likelihood="poisson")
    f.run_ls_min()
    post = f.run_nuts(method="express", num_samples=500, num_warmup=300, progress_bar=False)
    lo, total, hi = np.percentile(np.sum(10 ** post[:, 4:9], axis=1), [16, 50, 84])
    assert abs(total / 200000.0 - 1) < 0.01
    assert abs(total - 200000.0) < 3 * (hi - lo) / 2  # and consistent with its own width
    assert abs(np.median(post[:, 9]) - 20.0) < 3 * np.std(post[:, 9])
    # The Poisson express likelihood is the Cash statistic of the rendered express model.
    exp = f.min_res.x[4:]
    model_img = np.asarray(f.make_express_model(exp))
    assert float(f.log_like_exp(exp)) == pytest.approx(
        float(np.sum(img * np.log(model_img) - model_img)), rel=1e-10)


@pytest.mark.slow
def test_nuts_warns_on_poor_diagnostics(fitted, caplog):
    f = Fitter(fitted.img, SIG, PSF_SIG, PSF_A, weight=fitted.weight, verbose=False)
    f.min_res = fitted.min_res
    with caplog.at_level(logging.WARNING, logger="imcascade_jax"):
        f.run_nuts(method="express", num_samples=30, num_warmup=10, progress_bar=False)
    assert "effective sample size" in caplog.text
    assert f.nuts_diagnostics["rhat"] is None


# numpyro compiles on every call (~15 s): slow.
@pytest.mark.parametrize("backend", [pytest.param("numpyro", marks=pytest.mark.slow)])
def test_run_nuts_backends_agree(fitted, nuts_express, backend):
    # nuts_express uses the default backend, blackjax.
    post = fitted.run_nuts(method="express", num_samples=400, num_warmup=300,
                           backend=backend, progress_bar=False)
    assert fitted.post_method == "nuts-express"
    assert fitted.nuts_diagnostics["backend"] == backend
    s_other, s_native = _stats(fitted, post), _stats(fitted, nuts_express[0])
    for key in ("flux", "r50"):
        width = (s_native[key][2] - s_native[key][0]) / 2
        assert abs(s_other[key][1] - s_native[key][1]) < 0.5 * width
        other_width = (s_other[key][2] - s_other[key][0]) / 2
        assert 0.7 < other_width / width < 1.4


def test_run_nuts_full_agrees_with_express(fitted, nuts_express):
    post = fitted.run_nuts(method="full", num_samples=300, num_warmup=200, progress_bar=False)
    assert fitted.post_method == "nuts-full"
    assert np.all(np.ptp(post[:, :4], axis=0) > 0)  # structural parameters free
    assert np.all((post[:, 2] > 0) & (post[:, 2] <= 1))  # q in 1.1's range
    assert np.all((post[:, 3] >= 0) & (post[:, 3] < np.pi))  # phi in 1.1's range
    assert fitted.nuts_diagnostics["num_divergent"] == 0
    s_full, s_exp = _stats(fitted, post), _stats(fitted, nuts_express[0])
    for key in ("flux", "r50"):
        width = max(s_full[key][2] - s_full[key][0], s_exp[key][2] - s_exp[key][0]) / 2
        assert abs(s_full[key][1] - s_exp[key][1]) < width


def test_compiler_options_follow_the_log_density(fitted):
    # Classic XLA emitters only for the Gram-matrix express likelihood (small operations);
    # image-rendering log densities keep the defaults (faster full-mode gradients).
    from imcascade_jax.logdensity import express_log_density
    from imcascade_jax.nuts import small_operations_only

    express, _ = fitted.posterior_log_density(method="express")
    full, _ = fitted.posterior_log_density(method="full")
    assert small_operations_only(express.logdensity)
    assert not small_operations_only(full.logdensity)
    poisson = express_log_density(fitted._express, express.prior, likelihood="poisson")
    assert not small_operations_only(poisson.logdensity)
