"""The joint express posterior under the flat prior (elliptical slice sampling) against exact
references: the likelihood Gaussian of the fluxes from a direct least-squares solve, and that
Gaussian truncated to positive fluxes by rejection sampling."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax.diagnostics import effective_sample_size
from imcascade_jax.multiband.express import (
    joint_express_setup,
    likelihood_gaussian,
    positive_flux_log_indicator,
    run_express_slice,
)
from imcascade_jax.multiband.model import make_multiband_model, render_band_basis, sky_basis
from imcascade_jax.multiband.synthetic import SyntheticBand, make_multiband_galaxy

SHAPE = (32, 32)
SIG = np.geomspace(0.8, 10.0, 5)
#: Band 'bright': every component many sigma from zero. Band 'faint': the two outer ones at zero
#: (their least-squares values lie within a marginal width of zero, where the walls matter).
FLUX = {"bright": [8.0, 20, 30, 25, 15], "faint": [6.0, 12, 10, 0, 0]}
GEOMETRY = (15.6, 16.2, 0.7, 0.6)
NOISE = 0.01
NUM_SAMPLES = 2000


@pytest.fixture(scope="module")
def express():
    """The reduced problem at the true geometry, its exact likelihood Gaussians and samples."""
    bands = {n: SyntheticBand(SHAPE, np.array([1.2, 2.8]), np.array([0.7, 0.3]), noise=NOISE)
             for n in FLUX}
    imgs = make_multiband_galaxy(bands, *GEOMETRY, SIG, FLUX, {"bright": 0.01}, seed=3)
    psfs = {n: {"sig": b.psf_sig, "a": b.psf_a} for n, b in bands.items()}
    mb = make_multiband_model({n: SHAPE for n in FLUX}, SIG, psfs)
    geometry = jnp.asarray(GEOMETRY)
    weight = np.full(SHAPE, NOISE**-2)
    ref = np.array([FLUX[n] for n in FLUX])  # any reference: the reduction is exact
    problem = joint_express_setup(mb, tuple(imgs.values()), (weight, weight), geometry, ref)
    exact = []
    for i, n in enumerate(FLUX):  # direct weighted least squares over fluxes and sky together
        phi = np.concatenate([np.asarray(render_band_basis(mb, i, geometry)),
                              np.asarray(sky_basis(mb, i))]).reshape(len(SIG) + 1, -1)
        info = (phi * weight.reshape(-1)) @ phi.T
        cov = np.linalg.inv(info)
        coef = cov @ (phi @ (weight.reshape(-1) * imgs[n].reshape(-1)))
        exact.append((coef[:len(SIG)], cov[:len(SIG), :len(SIG)]))
    post = run_express_slice(problem, seed=4, num_warmup=200, num_samples=NUM_SAMPLES)
    return problem, exact, post


def test_likelihood_gaussian_is_the_direct_least_squares_solution(express):
    problem, exact, _ = express
    mean, cov = likelihood_gaussian(problem)
    for b, (m, c) in enumerate(exact):
        np.testing.assert_allclose(mean[b], m, rtol=1e-6, atol=1e-6 * np.abs(m).max())
        np.testing.assert_allclose(cov[b], c, rtol=1e-6, atol=1e-9 * np.abs(c).max())


def _check_moments(samples, mean, sd, corr, n_sigma=4.5):
    ess = effective_sample_size(samples[None])
    err = sd / np.sqrt(ess)
    assert np.all(np.abs(samples.mean(0) - mean) < n_sigma * err), (samples.mean(0), mean, err)
    # Sample standard deviations: relative error about 1 / sqrt(2 ESS).
    np.testing.assert_allclose(samples.std(0), sd, rtol=n_sigma / np.sqrt(2 * ess.min()))
    np.testing.assert_allclose(np.corrcoef(samples.T), corr, atol=0.06)


def test_far_from_zero_the_posterior_is_the_likelihood_gaussian(express):
    _, exact, post = express
    mean, cov = exact[0]
    sd = np.sqrt(np.diag(cov))
    assert np.all(mean > 8 * sd)  # the walls at zero are out of reach
    _check_moments(post.flux[:, 0], mean, sd, cov / np.outer(sd, sd))


def test_near_zero_the_posterior_is_the_truncated_gaussian(express):
    _, exact, post = express
    mean, cov = exact[1]
    sd = np.sqrt(np.diag(cov))
    assert np.sum(mean < sd) >= 2  # two components within a marginal width of zero
    draws = np.random.default_rng(0).multivariate_normal(mean, cov, size=400_000)
    kept = draws[np.all(draws >= 0.0, axis=1)]
    assert len(kept) > 20_000
    samples = post.flux[:, 1]
    assert np.all(samples >= 0.0)
    _check_moments(samples, kept.mean(0), kept.std(0), np.corrcoef(kept.T))
    # The truncation matters here: the truncated means differ from the Gaussian's.
    assert np.max(np.abs(kept.mean(0) - mean) / sd) > 0.5


def test_slice_sampler_is_efficient_and_reports_no_step_size(express):
    _, _, post = express
    assert post.flux.shape == (NUM_SAMPLES, 2, len(SIG))
    for b in range(2):
        assert effective_sample_size(post.flux[None, :, b]).min() > 0.25 * NUM_SAMPLES
    # Proposals per transition: 1 when no wall is near, a few when one is.
    assert 1.0 / np.mean(post.acceptance) < 4.0
    assert not post.divergent.any() and np.all(np.isnan(post.step_size))


def test_positive_flux_indicator():
    assert float(positive_flux_log_indicator(jnp.array([0.0, 1.0]))) == 0.0
    assert float(positive_flux_log_indicator(jnp.array([1.0, -1e-12]))) == -np.inf


def test_slice_sampler_rejects_bad_settings(express):
    problem = express[0]
    with pytest.raises(ValueError, match="num_samples"):
        run_express_slice(problem, num_samples=0)
    with pytest.raises(ValueError, match="thin"):
        run_express_slice(problem, thin=0)
    with pytest.raises(TypeError, match="'seed'"):
        run_express_slice(problem, seed=1.5)
    with pytest.raises(ValueError, match="'seed'"):
        run_express_slice(problem, seed=2**70)


def test_unconstrained_component_is_refused(express):
    """A component no pixel constrains (a zero row of the Gram matrix): improper under a flat
    prior, refused rather than returned as non-finite samples."""
    problem = express[0]
    gram = problem.gram.at[1, 4, :].set(0.0).at[1, :, 4].set(0.0)
    with pytest.raises(ValueError, match=r"band\(s\) at \[1\]"):
        run_express_slice(dataclasses.replace(problem, gram=gram), num_warmup=10, num_samples=10)


def test_same_seed_same_samples(express):
    problem, _, post = express
    again = run_express_slice(problem, seed=4, num_warmup=200, num_samples=NUM_SAMPLES)
    np.testing.assert_array_equal(again.flux, post.flux)
    other = run_express_slice(problem, seed=5, num_warmup=200, num_samples=NUM_SAMPLES)
    assert not np.array_equal(other.flux, post.flux)
