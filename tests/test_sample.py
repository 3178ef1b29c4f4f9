"""Tests of the functional sampling core (express Gram-matrix likelihood, full likelihood and its
derivatives, priors and their unconstrained densities, NUTS driver, diagnostics), through the
``imcascade_jax.sample`` namespace that re-exports them."""

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
    np.testing.assert_allclose(np.corrcoef(flat.T)[0, 1], 0.9, atol=0.05)
    if backend == "blackjax":
        assert len(n_traces) <= 8  # the log density is traced a bounded number of times


def test_run_nuts_input_errors():
    with pytest.raises(ValueError, match="backend"):
        S.run_nuts(lambda z: -z @ z, jnp.zeros(2), backend="stan")
    with pytest.raises(ValueError, match="backend"):  # the hand-written kernel is gone
        S.run_nuts(lambda z: -z @ z, jnp.zeros(2), backend="native")
    with pytest.raises(ValueError, match="target_accept"):
        S.run_nuts(lambda z: -z @ z, jnp.zeros(2), target_accept=1.0)
    with pytest.raises(ValueError, match="not finite"):
        S.run_nuts(lambda z: -jnp.inf + 0 * z[0], jnp.zeros(2), num_samples=5, num_warmup=0)
    with pytest.raises(ValueError, match="mass_shrinkage"):
        S.run_nuts(lambda z: -z @ z, jnp.zeros(2), mass_shrinkage=-1.0)
    with pytest.raises(ValueError, match="mass_shrinkage"):
        S.run_nuts(lambda z: -z @ z, jnp.zeros(2), mass_shrinkage=5.0, backend="numpyro")
    # Counts must be integers: refused before any sampling, naming the argument.
    for name, value in (("num_samples", 2.5), ("num_samples", "20"), ("num_samples", True),
                        ("num_warmup", 10.0), ("num_chains", None), ("max_tree_depth", 4.5)):
        with pytest.raises(TypeError, match=f"'{name}' must be an integer"):
            S.run_nuts(lambda z: -z @ z, jnp.zeros(2), **{name: value})
    S.run_nuts(lambda z: -z @ z, jnp.zeros(2), num_samples=np.int64(3), num_warmup=np.int32(2),
               progress_bar=False)  # NumPy integers are integers


def test_mass_shrinkage_keeps_the_start_covariance():
    """With a pseudo-count far above the warmup's samples the adapted mass matrix stays the
    start covariance (exactly blackjax's weighting: (count I' + k I) / (count + 5 + k) in
    whitened coordinates, I' the window's estimate); without it, the windows' estimates."""
    mean, cov, ld = _badly_scaled_gaussian()
    start = 0.5 * cov  # a deliberately wrong start: the adaptation must move off it
    kept = S.run_nuts(ld, mean, inverse_mass_matrix=start, num_warmup=300, num_samples=50,
                      seed=2, mass_shrinkage=1e9)
    np.testing.assert_allclose(kept.inverse_mass_matrix[0], start, rtol=1e-5,
                               atol=1e-5 * np.abs(start).max())
    adapted = S.run_nuts(ld, mean, inverse_mass_matrix=start, num_warmup=300, num_samples=50,
                         seed=2)
    np.testing.assert_allclose(np.diag(adapted.inverse_mass_matrix[0]) / np.diag(cov), 1.0,
                               atol=0.35)


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


def test_ess_and_split_rhat_match_numpyro():
    # numpyro's diagnostics are an independent implementation of the same estimators.
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    rng = np.random.default_rng(3)
    noise = rng.normal(size=(4, 501, 3))
    draws = np.empty_like(noise)
    draws[:, 0] = noise[:, 0]
    for t in range(1, draws.shape[1]):  # AR(1) chains: autocorrelated, as MCMC draws are
        draws[:, t] = 0.8 * draws[:, t - 1] + noise[:, t]
    draws[2, :, 1] += 4.0  # one chain off: R-hat well above 1 for that column
    draws[:, 250:, 2] += 3.0  # drift within every chain: only the split R-hat sees it
    np.testing.assert_allclose(S.split_rhat(draws), split_gelman_rubin(draws), rtol=1e-10)
    np.testing.assert_allclose(S.effective_sample_size(draws[..., :1]),
                               effective_sample_size(draws[..., :1]), rtol=1e-8)
    rhat = S.split_rhat(draws)
    assert rhat[0] < 1.02 and rhat[1] > 1.2 and rhat[2] > 1.1
    assert np.isnan(S.split_rhat(draws[:1])).all()  # one chain: undefined


def _quadratic(data, z):
    return -0.5 * jnp.sum(((z - data[0]) / data[1]) ** 2)


def test_run_nuts_reuses_the_compiled_program_for_new_data():
    # The data are arguments of the compiled program: a second problem of the same shapes
    # runs without compiling or tracing again, and its samples follow its own data.
    traces = []

    def counted(data, z):
        traces.append(1)
        return _quadratic(data, z)

    kw = dict(num_warmup=100, num_samples=200, seed=0)
    first = S.run_nuts(jax.tree_util.Partial(counted, (jnp.array([1.0, 2.0]), jnp.array([0.5, 3.0]))),
                       jnp.zeros(2), **kw)
    n_traces = len(traces)
    second = S.run_nuts(jax.tree_util.Partial(counted, (jnp.array([-4.0, 9.0]), jnp.array([0.1, 1.0]))),
                        jnp.zeros(2), **kw)
    assert first.compile_s > 0 and second.compile_s == 0.0
    assert len(traces) == n_traces
    mean = second.positions.reshape(-1, 2).mean(0)
    np.testing.assert_allclose(mean, [-4.0, 9.0], atol=0.3)
    # Other static settings (here the number of samples) compile a new program.
    third = S.run_nuts(jax.tree_util.Partial(counted, (jnp.zeros(2), jnp.ones(2))), jnp.zeros(2),
                       num_warmup=100, num_samples=50)
    assert third.compile_s > 0 and third.positions.shape == (1, 50, 2)


def test_run_nuts_transforms_and_log_density_input():
    prior = S.make_prior(["normal", "uniform"], loc=[1.0, 0.0], scale=[0.5, 1.0], lo=[0.0, -1.0],
                         hi=[np.inf, 2.0])
    ld = S.log_density(lambda x: 0.0 * x[0], prior)  # the prior alone
    res = S.run_nuts(ld, jnp.array([1.0, 0.5]), num_warmup=300, num_samples=3000, seed=4,
                     init_transform=ld.unconstrain, transform=ld.constrain)
    x = res.samples.reshape(-1, 2)
    np.testing.assert_allclose(x, jax.vmap(ld.constrain)(jnp.asarray(res.positions[0])),
                               rtol=1e-12)
    a = (0.0 - 1.0) / 0.5
    assert stats.kstest(x[::3, 0], stats.truncnorm(a, np.inf, loc=1.0, scale=0.5).cdf).pvalue > 1e-3
    assert stats.kstest(x[::3, 1], stats.uniform(-1.0, 3.0).cdf).pvalue > 1e-3


def test_shape_coordinates():
    a = np.array([0.3, -0.2, 0.0, 1.5])
    b = np.array([-0.4, 0.1, 0.0, 0.2])
    q, phi, logdet = S.shape_from_unconstrained(a, b, 0.0)
    assert np.all((np.asarray(q) > 0) & (np.asarray(q) <= 1))
    assert np.all((np.asarray(phi) >= 0) & (np.asarray(phi) < np.pi))
    assert float(q[2]) == 1.0  # round at the origin
    a2, b2 = (np.asarray(t) for t in S.shape_to_unconstrained(q, phi, 0.0))
    np.testing.assert_allclose(a2[[0, 1, 3]], a[[0, 1, 3]], atol=1e-12)
    np.testing.assert_allclose(b2[[0, 1, 3]], b[[0, 1, 3]], atol=1e-12)
    # phi and phi + pi are the same shape.
    a3, b3 = S.shape_to_unconstrained(q[0], phi[0] + np.pi, 0.0)
    np.testing.assert_allclose([a3, b3], [a[0], b[0]], atol=1e-12)
    for i in (0, 1, 3):
        jac = jax.jacfwd(lambda v: jnp.stack(S.shape_from_unconstrained(v[0], v[1])[:2]))(
            jnp.array([a[i], b[i]]))
        assert float(logdet[i]) == pytest.approx(np.log(abs(np.linalg.det(jac))), rel=1e-10)
    # Smooth through round: q, the log-Jacobian and a covariance built from (q, phi) have
    # finite gradients at the origin.
    def cov_xy(v):
        q, phi, ld = S.shape_from_unconstrained(v[0], v[1])
        return (1 - q**2) * jnp.sin(2 * phi) + ld

    g = jax.grad(cov_xy)(jnp.zeros(2))
    assert np.all(np.isfinite(g))


def test_flux_coordinates():
    scale = jnp.array([2.0, 2.0, 2.0])
    v = jnp.array([-40.0, 0.3, 50.0])
    a, logdet = S.flux_from_unconstrained(v, scale)
    np.testing.assert_allclose(S.flux_to_unconstrained(a, scale), v, rtol=1e-9)
    # Log-like below the scale, linear above it.
    assert float(a[0]) == pytest.approx((np.log(2.0) - 40.0) / np.log(10.0), rel=1e-12)
    assert float(10 ** a[2]) == pytest.approx(100.0, rel=1e-12)
    da = jax.vmap(jax.grad(lambda t, s: S.flux_from_unconstrained(t, s)[0]))(v, scale)
    np.testing.assert_allclose(logdet, np.log(np.abs(da)), rtol=1e-9)


def test_reparametrised_posterior_keeps_the_prior():
    # A prior-only posterior sampled through the shape and flux coordinates returns the
    # prior itself: the log-Jacobians are right.
    prior = S.make_prior(["normal", "normal", "normal", "uniform", "normal", "normal"],
                         loc=[0.0, 0.0, 1.0, 0.0, 0.5, -1.0], scale=[1.0, 1.0, 0.25, 1.0, 0.05, 0.3],
                         lo=[-np.inf, -np.inf, 0.0, 0.0, -np.inf, -np.inf],
                         hi=[np.inf, np.inf, 1.0, np.pi, np.inf, np.inf])
    # Flux scales: the first flux is sampled in the linear regime (3.2 +- 0.4 >> 0.01), the
    # second in the log regime (0.1 x/ 2 << 1).
    post = S.Posterior(jax.tree_util.Partial(lambda x: 0.0 * x[0]), prior, shape_index=2,
                       flux_scale=jnp.array([0.01, 1.0]), flux_start=4)
    ld = S.log_density_of(post)
    res = S.run_nuts(ld, jnp.array([0.0, 0.0, 0.9, 1.0, 0.5, -1.0]), num_warmup=500,
                     num_samples=6000, seed=2, init_transform=ld.unconstrain,
                     transform=ld.constrain)
    x = res.samples.reshape(-1, 6)[::10]  # thinned: KS assumes independent draws
    dists = [stats.norm(0, 1), stats.norm(0, 1), stats.truncnorm(-4.0, 0.0, loc=1, scale=0.25),
             stats.uniform(0, np.pi), stats.norm(0.5, 0.05), stats.norm(-1.0, 0.3)]
    for i, dist in enumerate(dists):
        assert stats.kstest(x[:, i], dist.cdf).pvalue > 1e-3, i


def test_full_log_like_gradient_matches_autodiff(problem_data):
    model, param, img, weight = problem_data
    p = jnp.asarray(param + 0.01)
    for likelihood, ref in (("gaussian", gaussian_log_like), ("poisson", poisson_log_like)):
        value = S.full_log_like(model, img, weight, p, likelihood)
        assert float(value) == pytest.approx(float(ref(render(model, p), img, weight)), rel=1e-12)
        g = jax.grad(lambda q, lk=likelihood: S.full_log_like(model, img, weight, q, lk))(p)
        g_ref = jax.grad(lambda q, r=ref: r(render(model, q), img, weight))(p)
        np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(g_ref))))


def test_gauss_newton_start_of_a_linear_gaussian_problem(problem_data):
    # For express parameters in linear fluxes the Gaussian likelihood is exactly quadratic:
    # the Gauss-Newton start equals the Laplace covariance.
    model, param, img, weight = problem_data
    lin = model.replace(log_weight_scale=False)
    p = param.copy()
    p[4:8] = 10 ** p[4:8]
    prob = S.express_setup(lin, img, weight, p[:4], p[4:])
    prior = S.make_prior("normal", loc=p[4:], scale=np.r_[np.ones(4), 0.1, 0.01, 0.01])
    ld = S.express_log_density(prob, prior)
    z0 = ld.unconstrain(jnp.asarray(p[4:]))
    np.testing.assert_allclose(ld.inverse_mass(z0), S.laplace_inverse_mass(ld.logdensity, z0),
                               rtol=1e-8)


def test_full_log_like_gradient_of_a_float32_model(problem_data):
    # The gradient has the parameters' dtype whatever the model renders in.
    model, param, img, weight = problem_data
    m32 = model.replace(sig=model.sig.astype(jnp.float32), psf_sig=model.psf_sig.astype(jnp.float32),
                        psf_a=model.psf_a.astype(jnp.float32), psf_q=model.psf_q.astype(jnp.float32),
                        psf_phi=model.psf_phi.astype(jnp.float32))
    p = jnp.asarray(param + 0.01)
    g = jax.grad(lambda q: S.full_log_like(m32, img, weight, q))(p)
    g64 = jax.grad(lambda q: S.full_log_like(model, img, weight, q))(p)
    assert g.dtype == p.dtype
    np.testing.assert_allclose(g, g64, rtol=2e-3, atol=2e-3 * float(jnp.max(jnp.abs(g64))))


def _central_difference(f, x, index, h):
    e = np.zeros_like(x)
    e[index] = h
    return (float(f(jnp.asarray(x + e))) - float(f(jnp.asarray(x - e)))) / (2 * h)


@pytest.mark.parametrize("likelihood", ["gaussian", "poisson"])
def test_full_log_like_derivatives_match_finite_differences(problem_data, likelihood):
    # Every array argument: the image, the weights, the parameters and a model array
    # (the widths), each by reverse mode against central differences of the function itself.
    model, param, img, weight = problem_data
    p = param + 0.01
    args = {"img": img, "weight": weight, "param": p, "sig": np.asarray(model.sig)}

    def like(name, value):
        kw = dict(args, **{name: value})
        m = model.replace(sig=jnp.asarray(kw["sig"]))
        return S.full_log_like(m, kw["img"], kw["weight"], kw["param"], likelihood)

    pixels = [(5, 7), (14, 15), (20, 3), (29, 29)]  # unmasked pixels
    for name, value in args.items():
        grad = np.asarray(jax.grad(lambda v, n=name: like(n, v))(jnp.asarray(value)))
        indices = pixels if value.ndim == 2 else range(value.size)
        for i in indices:
            h = 1e-6 * max(1.0, abs(float(value[i])))
            fd = _central_difference(lambda v, n=name: like(n, v), np.array(value, float), i, h)
            assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-6 * np.abs(grad).max()), (name, i)
    # The masked corner: no data term, and the Gaussian's weight derivative is -r^2/2 there
    # (as plain differentiation of gaussian_log_like gives).
    g_img = jax.grad(lambda v: like("img", v))(jnp.asarray(img))
    assert float(g_img[0, 0]) == 0.0
    # Forward mode equals reverse mode.
    v = np.random.default_rng(0).normal(size=p.size)
    _, tangent = jax.jvp(lambda q: like("param", q), (jnp.asarray(p),), (jnp.asarray(v),))
    g_p = jax.grad(lambda q: like("param", q))(jnp.asarray(p))
    assert float(tangent) == pytest.approx(float(g_p @ v), rel=1e-10)


def test_express_log_like_derivatives_match_finite_differences(problem_data):
    # Through the set-up: the data and weights enter via the Gram matrix.
    model, param, img, weight = problem_data
    s, ref = param[:4], param[4:]

    def like(name, value):
        kw = {"img": img, "weight": weight, "exp": ref + 0.02, "structural": s}
        kw[name] = value
        prob = S.express_setup(model, kw["img"], kw["weight"], kw["structural"], ref)
        return S.express_log_like(prob, kw["exp"])

    for name, value, indices in (("img", img, [(5, 7), (20, 3)]), ("weight", weight, [(14, 15)]),
                                 ("exp", ref + 0.02, range(ref.size)), ("structural", s, range(4))):
        grad = np.asarray(jax.grad(lambda v, n=name: like(n, v))(jnp.asarray(value)))
        for i in indices:
            h = 1e-6 * max(1.0, abs(float(value[i])))
            fd = _central_difference(lambda v, n=name: like(n, v), np.array(value, float), i, h)
            assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-6 * np.abs(grad).max()), (name, i)


def test_log_weight_constant_is_the_one_normalisation(problem_data):
    model, param, img, weight = problem_data
    good = weight > 0
    expect = 0.5 * np.sum(np.log(weight[good]) - np.log(2 * np.pi))
    assert float(S.log_weight_constant(weight)) == pytest.approx(expect, rel=1e-13)
    prob = S.express_setup(model, img, weight, param[:4], param[4:])
    assert float(prob.const) == pytest.approx(expect, rel=1e-13)
    # The Gaussian likelihood of a perfect model is the constant alone.
    clean = render(model, param)
    assert float(gaussian_log_like(clean, clean, weight)) == pytest.approx(expect, rel=1e-13)


def test_least_squares_prior_widths():
    # Twice the standard deviations of J^T J's inverse, capped at 1; a parameter the image
    # does not depend on (zero row and column) gets the cap instead of breaking the inverse.
    rng = np.random.default_rng(5)
    jac = rng.normal(size=(200, 7)) * np.array([1.0, 1.0, 1.0, 1.0, 30.0, 0.5, 3e3])
    jtj = jac.T @ jac
    x = rng.normal(size=7)
    loc, scale = S.least_squares_prior(x, jtj)
    expect = np.minimum(2 * np.sqrt(np.diag(np.linalg.inv(jtj)))[4:], 1.0)
    np.testing.assert_allclose(loc, x[4:])
    np.testing.assert_allclose(scale, expect, rtol=1e-10)
    jtj[3, :] = jtj[:, 3] = 0.0
    jtj[4, :] = jtj[:, 4] = 0.0
    _, scale = S.least_squares_prior(x, jtj)
    keep = [0, 1, 2, 5, 6]
    sub = np.sqrt(np.diag(np.linalg.inv(jtj[np.ix_(keep, keep)])))
    np.testing.assert_allclose(scale, [1.0, min(2 * sub[3], 1.0), min(2 * sub[4], 1.0)],
                               rtol=1e-10)


def test_nuts_progress_bar_labels_and_costs_nothing_when_off(capsys):
    from imcascade_jax.progress import ProgressBar

    ld = jax.tree_util.Partial(_quadratic, (jnp.array([1.0, 2.0]), jnp.array([0.5, 3.0])))
    S.run_nuts(ld, jnp.zeros(2), num_warmup=100, num_samples=100, progress_bar=True)
    err = capsys.readouterr().err
    assert "NUTS warmup" in err and "NUTS sampling" in err and "200/200" in err
    # Off: the compiled program has no callback, so an open bar never moves.
    with ProgressBar(100, 100, enabled=True) as bar:
        S.run_nuts(ld, jnp.zeros(2), num_warmup=100, num_samples=100, progress_bar=False)
        assert bar.bar.n == 0


def test_run_nuts_seed_is_checked():
    # The key is made inside the compiled program from the seed: a seed that is not an
    # integer, or does not fit JAX's integer type, is refused before anything compiles.
    ld = S.log_density(lambda x: -0.5 * jnp.sum(x * x), S.make_prior("normal", [0.0], [1.0]))
    with pytest.raises(TypeError, match="seed"):
        S.run_nuts(ld, jnp.array([0.0]), seed=1.5, num_warmup=2, num_samples=2)
    with pytest.raises(ValueError, match="seed"):
        S.run_nuts(ld, jnp.array([0.0]), seed=2**70, num_warmup=2, num_samples=2)
