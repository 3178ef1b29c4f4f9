"""The joint express posterior under 1.1's least-squares prior (``prior='min_results'``)
against exact references: the prior equal to the full mode's (the same ``J^T W J``), the
Gauss-Newton information equal to ``J^T S J`` by automatic differentiation, and the NUTS
posterior's moments equal to those of the likelihood Gaussian reweighted by the prior
(importance sampling, an independent computation)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax.multiband.express import joint_express_setup, likelihood_gaussian
from imcascade_jax.multiband.express_prior import (
    JointExpressLogLike,
    least_squares_flux_prior,
    run_express_nuts_ls_prior,
)
from imcascade_jax.multiband.fitter import MultiBandFitter
from imcascade_jax.multiband.full import full_log_density
from tests import multiband_cases as cases

NUM_SAMPLES = 1500


@pytest.fixture(scope="module")
def setup():
    """Two registered bands of the shared test galaxy at their true parameters."""
    fitter = cases.truth_fitter()
    names = ("g", "r")
    imgs = cases.images()
    sub = MultiBandFitter({n: imgs[n] for n in names},
                          {n: cases.psf_dict(cases.BANDS[n]) for n in names}, cases.SIG,
                          weights={n: np.full(imgs[n].shape, cases.NOISE**-2) for n in names},
                          x0=24.0, y0=24.0)
    p = fitter.ls_result.params
    params = p._replace(flux=np.asarray(p.flux)[:2], sky=p.sky[:2])
    sub.ls_result = fitter.ls_result._replace(params=params)
    data, weight = sub._data()
    problem = joint_express_setup(sub.model, data, weight, jnp.stack(params[:4]), params.flux)
    loc, scale = least_squares_flux_prior(sub.model, data, weight, sub.ls_result)
    return sub, data, weight, problem, loc, scale


def test_prior_is_the_full_modes_least_squares_prior(setup):
    sub, data, weight, _, loc, scale = setup
    ld, _ = full_log_density(sub.model, data, weight, sub.ls_result, (24.0, 24.0))
    n = loc.size
    np.testing.assert_allclose(loc.ravel(), np.asarray(ld.prior.loc)[4:4 + n], rtol=0, atol=0)
    np.testing.assert_allclose(scale.ravel(), np.asarray(ld.prior.scale)[4:4 + n], rtol=0, atol=0)
    # Centres are the log10 least-squares fluxes; widths at most the 1 dex cap.
    np.testing.assert_allclose(10.0 ** loc, np.asarray(sub.ls_result.params.flux), rtol=1e-12)
    assert np.all((scale > 0) & (scale <= 1.0))


def test_fisher_is_gauss_newton_of_the_gram_matrices(setup):
    _, _, _, problem, loc, _ = setup
    ll = JointExpressLogLike(problem)
    x = jnp.asarray(loc.ravel())
    jac = jax.jacfwd(lambda a: jnp.power(10.0, a))(x)
    gram = np.zeros((x.size, x.size))
    n = loc.shape[1]
    for b in range(loc.shape[0]):
        gram[b * n:(b + 1) * n, b * n:(b + 1) * n] = np.asarray(problem.gram[b])
    expected = np.asarray(jac).T @ gram @ np.asarray(jac)
    np.testing.assert_allclose(np.asarray(ll.fisher(x)), expected, rtol=1e-12, atol=0)
    # The log-likelihood's gradient there by autodiff is that of the quadratic form.
    mean, cov = likelihood_gaussian(problem)
    f = 10.0 ** loc
    g_flux = np.concatenate([np.linalg.solve(np.asarray(cov[b]), np.asarray(mean[b]) - f[b])
                             for b in range(loc.shape[0])])
    np.testing.assert_allclose(np.asarray(jax.grad(ll)(x)), g_flux * np.asarray(jnp.diag(jac)),
                               rtol=1e-7)


def _importance_moments(problem, loc, scale, seed=0, n=400_000):
    """Posterior mean and sd of each flux: draws of the likelihood Gaussian, weighted by the
    normal prior on log10 flux as a density in the flux (``1 / (flux ln 10)`` times it)."""
    mean, cov = likelihood_gaussian(problem)
    rng = np.random.default_rng(seed)
    out_m, out_s = [], []
    for b in range(loc.shape[0]):
        x = rng.multivariate_normal(np.asarray(mean[b]), np.asarray(cov[b]), size=n)
        ok = np.all(x > 0, axis=1)
        a = np.log10(np.where(ok[:, None], x, 1.0))
        logw = np.sum(-0.5 * ((a - loc[b]) / scale[b]) ** 2 - np.log(np.where(ok[:, None], x, 1.0)),
                      axis=1)
        w = np.where(ok, np.exp(logw - logw[ok].max()), 0.0)
        w /= w.sum()
        m = w @ x
        out_m.append(m)
        out_s.append(np.sqrt(w @ (x - m) ** 2))
    return np.array(out_m), np.array(out_s)


def test_nuts_posterior_matches_importance_sampling(setup):
    _, _, _, problem, loc, scale = setup
    post = run_express_nuts_ls_prior(problem, loc, scale, seed=3, num_warmup=700,
                                     num_samples=NUM_SAMPLES)
    assert post.flux.shape == (NUM_SAMPLES, *loc.shape)
    assert post.step_size.shape == (1,)
    m_ref, s_ref = _importance_moments(problem, loc, scale)
    m, s = post.flux.mean(axis=0), post.flux.std(axis=0)
    # Monte Carlo error of the NUTS mean: sd / sqrt(ESS), ESS >= ~300 of 1500 here.
    np.testing.assert_array_less(np.abs(m - m_ref), 4.5 * s_ref / np.sqrt(300.0))
    np.testing.assert_allclose(s, s_ref, rtol=0.15)
    assert post.divergent.sum() <= 5


def test_fitter_runs_the_least_squares_prior_and_checks_settings(setup):
    sub = setup[0]
    post = sub.run_nuts(method="express", prior="min_results", num_warmup=300, num_samples=200,
                        seed=1)
    assert post.flux.shape == (200, 2, len(cases.SIG))
    assert sub.posterior is post
    with pytest.raises(ValueError, match="'prior' must be one of"):
        sub.run_nuts(method="express", prior="uniform")
    with pytest.raises(ValueError, match="either prior='min_results' or a 'prior_width'"):
        sub.run_nuts(method="express", prior="min_results", prior_width=1.0)
    with pytest.raises(ValueError, match="express-mode settings"):
        sub.run_nuts(method="full", prior="min_results")
    with pytest.raises(ValueError, match="'loc' and 'scale' must have"):
        run_express_nuts_ls_prior(setup[3], setup[4][:1], setup[5][:1])


def test_express_inputs_follow_the_least_squares_result(setup):
    """The express problem and prior are remade for a new least-squares result, never reused
    from an earlier one."""
    sub = setup[0]
    problem, (loc, _) = sub._express_inputs(True)
    assert sub._express_inputs(True)[0] is problem  # same result: reused
    old = sub.ls_result
    try:
        p = old.params
        sub.ls_result = old._replace(params=p._replace(flux=2.0 * np.asarray(p.flux)))
        problem2, (loc2, _) = sub._express_inputs(True)
        np.testing.assert_allclose(np.asarray(problem2.ref), 2.0 * np.asarray(p.flux))
        np.testing.assert_allclose(loc2, loc + np.log10(2.0), rtol=0, atol=1e-12)
    finally:
        sub.ls_result = old


def test_posterior_problems_are_reported():
    """Divergent transitions above 1% and a small effective sample size are warned about and
    stored in ``nuts_diagnostics``, as the single-band ``Fitter.run_nuts`` does."""
    fitter = cases.truth_fitter(posterior=True)  # 300 independent draws: ESS ~300
    post = fitter.posterior
    fitter.posterior = post._replace(divergent=np.arange(300) % 20 == 0)  # 5%
    with pytest.warns(RuntimeWarning, match="15 divergent transitions"):
        fitter._checked_posterior(1)
    assert fitter.nuts_diagnostics["num_divergent"] == 15
    assert 200 < fitter.nuts_diagnostics["min_ess"] < 450
    stuck = np.repeat(post.flux[:30], 10, axis=0)  # every draw repeated 10 times: ESS ~30
    fitter.posterior = post._replace(flux=stuck)
    with pytest.warns(RuntimeWarning, match="low effective sample size"):
        fitter._checked_posterior(1)
    fitter.posterior = post
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitter._checked_posterior(1)  # a healthy posterior: no warning
