"""Tests of the functional sampling core (imcascade_jax.sample): express Gram-matrix likelihood,
priors and their unconstrained densities, NUTS drivers, diagnostics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from imcascade_jax import sample as S
from imcascade_jax.likelihood import gaussian_log_like, poisson_log_like
from imcascade_jax.model import make_model
from imcascade_jax.render import render

SHAPE = (30, 30)
SIG = np.array([0.8, 1.6, 3.2, 6.4])


@pytest.fixture(scope="module")
def problem_data():
    model = make_model(SHAPE, SIG, [1.0, 2.0], [0.6, 0.4])
    param = np.array([14.6, 15.2, 0.7, 0.4, 1.0, 1.3, 1.2, 0.8, 5.0, 0.01, -0.02])
    rng = np.random.default_rng(1)
    clean = np.asarray(render(model, param))
    img = rng.poisson(clean).astype(float)
    weight = 1.0 / np.maximum(img, 1.0)
    weight[:2, :5] = 0.0  # a masked corner
    return model, param, img, weight


def test_express_chi2_is_exact(problem_data):
    model, param, img, weight = problem_data
    s = param[:4]
    for ref in (None, param[4:]):
        prob = S.express_setup(model, img, weight, s, ref)
        for shift in (0.0, 0.3, -0.5):
            p = param.copy()
            p[4:8] += shift
            p[8] += 2 * shift
            direct = float(np.sum(weight * (img - np.asarray(render(model, p))) ** 2))
            assert float(S.express_chi2(prob, p[4:])) == pytest.approx(direct, rel=1e-10)
            ll = S.express_log_like(prob, p[4:])
            assert float(ll) == pytest.approx(
                float(gaussian_log_like(render(model, p), img, weight)), rel=1e-10)
            model_img = S.express_model(prob, p[4:])
            np.testing.assert_allclose(model_img, render(model, p), atol=1e-12)
            pois = S.express_log_like(prob, p[4:], "poisson")
            assert float(pois) == pytest.approx(
                float(poisson_log_like(render(model, p), img, weight)), rel=1e-12)


def test_express_linear_weights_and_bad_likelihood(problem_data):
    model, param, img, weight = problem_data
    lin = model.replace(log_weight_scale=False)
    p = param.copy()
    p[4:8] = 10 ** p[4:8]
    prob = S.express_setup(lin, img, weight, p[:4], p[4:])
    direct = float(np.sum(weight * (img - np.asarray(render(lin, p))) ** 2))
    assert float(S.express_chi2(prob, p[4:])) == pytest.approx(direct, rel=1e-10)
    with pytest.raises(ValueError, match="likelihood"):
        S.express_log_like(prob, p[4:], "cauchy")


def test_express_transformations(problem_data):
    model, param, img, weight = problem_data
    prob = S.express_setup(model, img, weight, param[:4], param[4:])
    f = lambda p: S.express_log_like(prob, p)  # noqa: E731
    x = jnp.asarray(param[4:])
    assert float(jax.jit(f)(x)) == pytest.approx(float(f(x)), rel=1e-12)
    batch = jnp.stack([x, x + 0.01])
    np.testing.assert_allclose(jax.vmap(f)(batch), [f(batch[0]), f(batch[1])], rtol=1e-12)
    g = jax.grad(f)(x)
    for i in range(len(x)):
        h = 1e-6 * max(1.0, abs(float(x[i])))
        e = jnp.zeros_like(x).at[i].set(h)
        fd = (f(x + e) - f(x - e)) / (2 * h)
        assert float(g[i]) == pytest.approx(float(fd), rel=1e-4, abs=1e-3)


def test_prior_transform_and_density_match_scipy():
    prior = S.make_prior(["normal", "normal", "uniform", "cauchy", "cauchy"],
                         loc=[1.0, 1.0, 0.0, 2.0, 3.0], scale=[0.5, 0.25, 1.0, 0.7, 1.0],
                         lo=[-np.inf, 0.0, -1.0, -np.inf, 0.0], hi=[np.inf, 1.0, 3.0, np.inf, np.inf])
    u = np.array([0.1, 0.3, 0.6, 0.85, 0.4])
    x = np.asarray(S.prior_transform(prior, u))
    a = (0.0 - 1.0) / 0.25
    dists = [stats.norm(1.0, 0.5), stats.truncnorm(a, 0.0, loc=1.0, scale=0.25),
             stats.uniform(-1.0, 4.0), stats.cauchy(2.0, 0.7)]
    expect = [d.ppf(ui) for d, ui in zip(dists, u[:4], strict=True)]
    c = stats.cauchy(3.0, 1.0)
    f0 = c.cdf(0.0)
    expect.append(c.ppf(f0 + u[4] * (1 - f0)))
    np.testing.assert_allclose(x, expect, rtol=1e-9)
    logp = sum(d.logpdf(xi) for d, xi in zip(dists, x[:4], strict=True))
    logp += c.logpdf(x[4]) - np.log(1 - f0)
    assert float(S.prior_log_density(prior, jnp.asarray(x))) == pytest.approx(logp, rel=1e-10)
    outside = x.copy()
    outside[1] = 1.5
    assert float(S.prior_log_density(prior, jnp.asarray(outside))) == -np.inf


def test_constrain_round_trip_and_log_jacobian():
    prior = S.make_prior(["normal", "uniform", "cauchy", "cauchy"], loc=[0.0, 0.0, 1.0, 1.0],
                         scale=[1.0, 1.0, 1.0, 1.0], lo=[-np.inf, 2.0, 0.0, -np.inf],
                         hi=[np.inf, 5.0, np.inf, 4.0])
    z = jnp.array([0.3, -1.2, 0.4, -0.7])
    x, logdet = S.constrain(prior, z)
    assert np.all((np.asarray(x) > np.asarray(prior.lo)) & (np.asarray(x) < np.asarray(prior.hi)))
    np.testing.assert_allclose(S.unconstrain(prior, x), z, rtol=1e-10)
    jac = jax.jacfwd(lambda z: S.constrain(prior, z)[0])(z)
    assert float(logdet) == pytest.approx(float(np.log(np.abs(np.linalg.det(jac)))), rel=1e-10)
    # A start on a bound maps to a finite point.
    assert np.all(np.isfinite(S.unconstrain(prior, jnp.array([0.0, 2.0, 0.0, 4.0]))))


@pytest.mark.parametrize("kwargs, match", [
    ({"kinds": "gamma", "loc": [0.0]}, "kinds"),
    ({"kinds": "uniform", "lo": [0.0]}, "finite"),
    ({"kinds": "normal", "loc": [0.0], "scale": [0.0]}, "scale"),
    ({"kinds": "normal", "loc": [0.0], "lo": [1.0], "hi": [0.0]}, "lo < hi"),
])
def test_make_prior_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.make_prior(**kwargs)


def test_laplace_inverse_mass_is_exact_for_a_gaussian():
    cov = np.array([[2.0, 7e-4, 0.0], [7e-4, 1e-6, 1e-8], [0.0, 1e-8, 4e-4]])
    prec = jnp.asarray(np.linalg.inv(cov))
    ld = lambda z: -0.5 * z @ prec @ z  # noqa: E731
    laplace = jax.jit(S.laplace_inverse_mass, static_argnums=0)
    np.testing.assert_allclose(laplace(ld, jnp.zeros(3)), cov, rtol=1e-6,
                               atol=1e-14)
    # Negative curvature is made usable (positive definite), not propagated.
    m = laplace(lambda z: 0.5 * z @ z, jnp.zeros(2))
    assert np.all(np.linalg.eigvalsh(np.asarray(m)) > 0)


def _badly_scaled_gaussian():
    cov = np.array([[1e-6, 4.5e-4, 0.0], [4.5e-4, 0.25, 0.0], [0.0, 0.0, 4.0]])
    mean = np.array([1e-3, -2.0, 5.0])
    prec = jnp.asarray(np.linalg.inv(cov))
    return mean, cov, lambda z: -0.5 * (z - mean) @ prec @ (z - mean)


@pytest.mark.parametrize("backend", ["blackjax", "numpyro"])
def test_run_nuts_recovers_a_badly_scaled_gaussian(backend):
    mean, cov, ld = _badly_scaled_gaussian()
    n_traces = []

    def counted(z):
        n_traces.append(1)
        return ld(z)

    res = S.run_nuts(counted, mean + np.sqrt(np.diag(cov)), num_warmup=200, num_samples=400,
                     num_chains=2, backend=backend, seed=3, progress_bar=False)
    assert res.positions.shape == (2, 400, 3)
    flat = res.positions.reshape(-1, 3)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(flat.mean(0) - mean) < 0.25 * sd)
    np.testing.assert_allclose(flat.std(0), sd, rtol=0.25)
    diag = S.nuts_diagnostics(res, res.positions)
    assert diag["num_grad_evals"] > 0 and diag["rhat"] is not None
    assert diag["min_ess"] > 100 and diag["max_rhat"] < 1.05
    assert not S.diagnostics_warnings(diag)
    if backend == "blackjax":
        assert len(n_traces) <= 8  # the log density is traced a bounded number of times


def test_run_nuts_input_errors():
    with pytest.raises(ValueError, match="backend"):
        S.run_nuts(lambda z: -z @ z, jnp.zeros(2), backend="stan")
    with pytest.raises(ValueError, match="not finite"):
        S.run_nuts(lambda z: -jnp.inf + 0 * z[0], jnp.zeros(2), num_samples=5, num_warmup=0)


def test_diagnostics_warnings_flag_problems():
    diag = {"min_ess": 20.0, "max_rhat": 1.2, "divergent_fraction": 0.1, "num_divergent": 10}
    msgs = S.diagnostics_warnings(diag)
    assert len(msgs) == 3 and "effective sample size" in msgs[0]


def test_effective_sample_size_of_independent_draws():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(2, 1000, 2))
    draws[..., 1] = 3.0  # constant column -> nan
    ess = S.effective_sample_size(draws)
    assert 1500 < ess[0] < 2600 and np.isnan(ess[1])
    assert abs(S.split_rhat(draws)[0] - 1) < 0.01
