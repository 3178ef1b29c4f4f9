"""Full-mode NUTS of multi-band fits: exact gradients (against finite differences), the
Gauss-Newton information (against the exact Hessian), and a posterior against the truths of a
synthetic two-band galaxy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax.multiband.fit import MultiFitResult
from imcascade_jax.multiband.fitter import MultiBandFitter
from imcascade_jax.multiband.full import (
    MultiBandLogLike,
    full_log_density,
    params_from_vector,
    vector_from_params,
)
from imcascade_jax.multiband.model import MultiParams, make_multiband_model, render_bands
from imcascade_jax.multiband.results import MultiBandResults
from imcascade_jax.multiband.synthetic import SyntheticBand, make_multiband_galaxy

SIG = np.geomspace(0.8, 10.0, 5)
TRUE_FLUX = {"g": [8.0, 20, 25, 14, 6], "r": [6.0, 16, 24, 18, 9]}
PSF = {"g": ([1.3, 3.0], [0.75, 0.25]), "r": ([1.1, 2.6], [0.7, 0.3])}
X0, Y0, Q, PHI = 23.6, 24.2, 0.7, 0.6
SKY = {"g": 0.01, "r": 0.0}
NOISE = 0.01
SHAPE = (48, 48)


def _psfs():
    return {n: {"sig": s, "a": a} for n, (s, a) in PSF.items()}


@pytest.fixture(scope="module")
def fitter():
    """The two-band galaxy (48x48, registered), after the joint least squares."""
    bands = {n: SyntheticBand(SHAPE, np.asarray(s), np.asarray(a), noise=NOISE)
             for n, (s, a) in PSF.items()}
    imgs = make_multiband_galaxy(bands, X0, Y0, Q, PHI, SIG, TRUE_FLUX, SKY, seed=3)
    f = MultiBandFitter(imgs, _psfs(), SIG, weights={n: np.full(SHAPE, NOISE**-2) for n in PSF},
                        x0=24.0, y0=24.0)
    ls = f.run_ls_min(q0=0.9, phi0=0.2)
    assert ls["status"].success, ls["status"].message
    return f


def _small_problem():
    """A 20x22 / 18x18 pair (the second band rotated and offset) with data off the model."""
    psfs = _psfs()
    c, s = np.cos(0.3), np.sin(0.3)
    mb = make_multiband_model({"g": (20, 22), "r": (18, 18)}, SIG[:3], psfs,
                              affines={"r": (0.8 * np.array([[c, -s], [s, c]]), [1.0, -0.5])})
    params = MultiParams(jnp.asarray(9.3), jnp.asarray(10.1), jnp.asarray(0.7), jnp.asarray(0.5),
                         jnp.array([[5.0, 9.0, 4.0], [3.0, 8.0, 6.0]]),
                         (jnp.array([0.02]), jnp.array([-0.01])))
    images = jax.jit(render_bands)(mb, params)
    rng = np.random.default_rng(0)
    data = tuple(jnp.asarray(m + 0.05 * rng.standard_normal(m.shape)) for m in images)
    weights = tuple(jnp.full(m.shape, 400.0) for m in images)
    return mb, params, data, weights


def test_vector_round_trip():
    mb, params, _, _ = _small_problem()
    x = vector_from_params(mb, params)
    back = params_from_vector(mb, x)
    np.testing.assert_allclose(back.flux, params.flux, rtol=1e-12)
    np.testing.assert_allclose(x[4:10], np.log10(np.asarray(params.flux).ravel()), rtol=1e-12)
    np.testing.assert_allclose(back.sky[1], params.sky[1], rtol=1e-12)


def test_log_like_gradient_matches_finite_differences():
    mb, params, data, weights = _small_problem()
    log_like = MultiBandLogLike(mb, data, weights)
    x = vector_from_params(mb, params)
    grad = np.asarray(jax.jit(jax.grad(log_like))(x))
    f = jax.jit(log_like)
    h = 1e-6
    fd = np.array([(float(f(x.at[i].add(h))) - float(f(x.at[i].add(-h)))) / (2 * h)
                   for i in range(x.size)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-4 * np.max(np.abs(fd)))


def test_log_density_gradient_matches_finite_differences():
    """Through every map of the sampler's coordinates (shape, softplus fluxes, prior)."""
    mb, params, data, weights = _small_problem()
    ls = MultiFitResult(params, *(jnp.zeros(()),) * 5)
    ld, x0 = full_log_density(mb, data, weights, ls, (9.0, 10.0))
    z = ld.unconstrain(jnp.asarray(x0)) + 0.01 * jnp.linspace(0.0, 1.0, x0.size)
    f = jax.jit(ld.logdensity)
    grad = np.asarray(jax.jit(jax.grad(ld.logdensity))(z))
    h = 1e-6
    fd = np.array([(float(f(z.at[i].add(h))) - float(f(z.at[i].add(-h)))) / (2 * h)
                   for i in range(z.size)])
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5 * np.max(np.abs(fd)))


def test_fisher_is_jtwj_of_finite_difference_jacobian():
    mb, params, data, weights = _small_problem()
    x = vector_from_params(mb, params)
    log_like = MultiBandLogLike(mb, data, weights)
    fisher = np.asarray(jax.jit(MultiBandLogLike.fisher)(log_like, x))
    images = jax.jit(lambda v: render_bands(mb, params_from_vector(mb, v)))
    h = 1e-6
    cols = [[(np.asarray(p) - np.asarray(m)) / (2 * h) for p, m in
             zip(images(x.at[i].add(h)), images(x.at[i].add(-h)), strict=True)]
            for i in range(x.size)]
    jac = [np.stack([c[b].ravel() for c in cols], axis=1) for b in range(mb.n_bands)]
    expected = sum(j.T @ (np.asarray(w).ravel()[:, None] * j) for j, w in zip(jac, weights, strict=True))
    np.testing.assert_allclose(fisher, expected, rtol=1e-5, atol=1e-7 * np.max(np.abs(expected)))


def test_run_nuts_rejects_bad_settings():
    imgs = {n: np.zeros(SHAPE) for n in PSF}
    fitter = MultiBandFitter(imgs, _psfs(), SIG)
    with pytest.raises(ValueError, match="'method'"):
        fitter.run_nuts(method="fulll")
    with pytest.raises(ValueError, match="'prior_width'"):
        fitter.run_nuts(method="full", prior_width=1.0)
    with pytest.raises(ValueError, match="run_ls_min"):
        fitter.run_nuts(method="full")


@pytest.mark.slow
def test_full_nuts_recovers_the_truth(fitter, tmp_path):
    post = fitter.run_nuts(method="full", num_warmup=200, num_samples=200, seed=0)
    assert post.flux.shape == (200, 2, SIG.size)
    assert post.divergent.sum() <= 4
    truth = np.array([X0, Y0, Q, PHI])
    med, sd = np.median(post.geometry, 0), post.geometry.std(0)
    assert np.all(np.abs(med - truth) < 4 * sd), (med, sd)
    res = MultiBandResults(fitter).run_basic_analysis()
    for b, name in enumerate(fitter.names):
        total = post.flux[:, b].sum(-1)
        assert abs(np.median(total) - sum(TRUE_FLUX[name])) < 4 * total.std(), name
        per = np.median(post.flux[:, b], 0)
        assert np.all(np.abs(per - TRUE_FLUX[name]) < 4 * post.flux[:, b].std(0)), (name, per)
        assert abs(np.median(post.sky[b]) - SKY[name]) < 4 * post.sky[b].std()
        # The per-band analysis summarises the posterior: median of the total flux.
        np.testing.assert_allclose(res["flux"][name][0], np.median(total), rtol=1e-10)
    # The full posterior goes through the ASDF file and the figure like an express one.
    import matplotlib

    matplotlib.use("Agg")
    from imcascade_jax import ImcascadeResults

    fitter.save_results(tmp_path / "full.asdf")
    back = ImcascadeResults(str(tmp_path / "full.asdf"))
    res_back = back.run_basic_analysis()
    for name in fitter.names:
        np.testing.assert_allclose(res_back["flux"][name], res["flux"][name], rtol=1e-12)
        np.testing.assert_allclose(res_back["r50"][name], res["r50"][name], rtol=1e-12)
    fig = back.make_diagnostic_fig()
    assert len(fig.axes) > 3
