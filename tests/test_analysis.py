"""Tests for imcascade_jax.analysis: closed forms, exactness of the radii, shapes, transformations.

The comparisons with imcascade 1.1 live in ``test_results.py``; here every expected number comes
from closed forms (single Gaussians), quadrature, or the defining equation of each radius.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from imcascade_jax import analysis as an
from imcascade_jax import radii

SIG = np.logspace(np.log10(0.75), np.log10(50.0), 9)
LOG_W = np.array([1.2, 1.5, 1.8, 2.0, 1.9, 1.6, 1.2, 0.8, 0.3])
PSF_SIG = np.array([1.2, 1.81, 2.93, 5.28])
PSF_A = np.array([0.27, 0.51, 0.19, 0.03])


# Root-finding kernels compile once per padded number of problems (16, 64, ...) and number of
# components: the tests below keep to 9 components and 16 parameter sets so that they share
# compiled kernels.
N_SETS = 16


@pytest.fixture(scope="module")
def batch():
    """16 parameter sets scattered around a galaxy-like profile, and their axis ratios."""
    rng = np.random.default_rng(0)
    weights = 10 ** (LOG_W + rng.normal(0.0, 0.1, (N_SETS, len(SIG))))
    q = rng.uniform(0.3, 1.0, N_SETS)
    return weights, q


def _cog_np(r, w, sig):
    return np.sum(w * (1 - np.exp(-(np.asarray(r)[..., None] ** 2) / (2 * sig**2))), axis=-1)


def _sbp_np(r, w, sig, q):
    peak = w / (2 * np.pi * np.asarray(q)[..., None] * sig**2)
    return np.sum(peak * np.exp(-(np.asarray(r)[..., None] ** 2) / (2 * sig**2)), -1)


def test_flux_total_and_cutoff(batch):
    w, _ = batch
    np.testing.assert_allclose(an.flux(w, SIG), w.sum(-1), rtol=1e-14)
    expected = np.sum(w * (1 - np.exp(-(30.0**2) / (2 * SIG**2))), -1)
    np.testing.assert_allclose(an.flux(w, SIG, 30.0), expected, rtol=1e-13)
    assert an.flux(w[0], SIG).shape == ()
    assert an.flux(w.reshape(4, 4, -1), SIG).shape == (4, 4)
    assert an.flux(w, SIG).dtype == jnp.float64


@pytest.mark.strict_rank
def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="'weights'"):
        an.flux(np.ones(3), SIG)
    with pytest.raises(ValueError, match="'sig'"):
        an.cog(1.0, np.ones(9), np.ones((3, 3)))


def test_profiles_match_formulas_and_shapes(batch):
    w, q = batch
    r = np.linspace(0.0, 60.0, 13)
    np.testing.assert_allclose(an.cog(r, w, SIG), _cog_np(r[:, None], w, SIG).T, rtol=1e-12)
    np.testing.assert_allclose(an.sbp(r, w, SIG, q), _sbp_np(r[:, None], w, SIG, q).T, rtol=1e-12)
    assert an.cog(r, w, SIG, return_ind=True).shape == (N_SETS, 13, 9)
    assert an.sbp(r, w[0], SIG, q[0], return_ind=True).shape == (13, 9)
    assert an.sbp(2.0, w, SIG, q).shape == (N_SETS,)
    assert an.cog(r.reshape(13, 1), w[0], SIG).shape == (13, 1)


@pytest.mark.strict_rank
def test_cog_is_the_integral_of_the_sbp(batch):
    w, q = batch
    w, q = w[3], q[3]
    for radius in (0.5, 4.0, 25.0):
        area = quad(lambda x: 2 * np.pi * q * x * _sbp_np(x, w, SIG, q), 0, radius, epsabs=0, epsrel=1e-12)[0]
        np.testing.assert_allclose(float(an.cog(radius, w, SIG)), area, rtol=1e-10)


def test_obs_components_order_and_flux(batch):
    w, q = batch
    final_a, final_var, final_q = an.obs_components(w, SIG, q, PSF_SIG, PSF_A)
    assert final_a.shape == final_q.shape == (N_SETS, 36) and final_var.shape == (36,)
    # PSF-major: component k = p * N + i.
    np.testing.assert_allclose(final_var[9 * 2 + 4], SIG[4] ** 2 + PSF_SIG[2] ** 2)
    np.testing.assert_allclose(final_a[5, 9 * 3 + 1], w[5, 1] * PSF_A[3])
    expected_q = np.sqrt(SIG[1] ** 2 * q[5] ** 2 + PSF_SIG[3] ** 2) / np.sqrt(SIG[1] ** 2 + PSF_SIG[3] ** 2)
    np.testing.assert_allclose(final_q[5, 9 * 3 + 1], expected_q)
    # The observed curve of growth tends to the intrinsic flux times the PSF's.
    np.testing.assert_allclose(an.obs_cog(1e4, w, SIG, PSF_SIG, PSF_A), w.sum(-1) * PSF_A.sum(), rtol=1e-12)


def test_obs_sbp_of_round_gaussian_is_exact_convolution():
    # A round Gaussian (sig 3, flux 5) convolved with a round Gaussian PSF (sig 2) is a round
    # Gaussian of variance 13 and flux 5.
    r = np.array([0.0, 1.0, 4.0, 9.0])
    got = an.obs_sbp(r, np.array([5.0]), np.array([3.0]), 1.0, np.array([2.0]), np.array([1.0]))
    np.testing.assert_allclose(got, 5 / (2 * np.pi * 13) * np.exp(-(r**2) / 26), rtol=1e-14)


@pytest.mark.strict_rank
def test_radius_fraction_single_gaussian_closed_form():
    # One non-zero component (zero weights are allowed): r = sig sqrt(-2 ln(1 - frac)).
    fracs = np.array([0.2, 0.5, 0.9, 0.999])
    for k in (0, 4, 8):
        weights = np.where(np.arange(9) == k, 7.0, 0.0)
        got = an.radius_fraction(fracs, weights, SIG)
        np.testing.assert_allclose(got, SIG[k] * np.sqrt(-2 * np.log1p(-fracs)), rtol=1e-13)


def test_radius_fraction_solves_its_equation(batch):
    w, _ = batch
    fracs = np.array([0.2, 0.5, 0.8, 0.9])
    radii = np.asarray(an.radius_fraction(fracs, w, SIG))
    assert radii.shape == (N_SETS, 4)
    np.testing.assert_allclose(_cog_np(radii, w[:, None, :], SIG), fracs * w.sum(-1)[:, None], rtol=1e-13)
    assert np.all(np.diff(radii, axis=-1) > 0)
    # With a cutoff the target is a fraction of the flux inside the cutoff.
    r50 = np.asarray(an.radius_fraction(0.5, w, SIG, 20.0))
    np.testing.assert_allclose(_cog_np(r50, w, SIG), 0.5 * an.flux(w, SIG, 20.0), rtol=1e-13)
    assert np.all(r50 < radii[:, 1])


@pytest.mark.strict_rank
def test_radius_fraction_edge_cases():
    w = 10**LOG_W
    assert float(an.radius_fraction(0.0, w, SIG)) == 0.0
    assert float(an.radius_fraction(1.0, w, SIG)) == np.inf
    assert np.isnan(float(an.radius_fraction(0.5, w * np.r_[1, -1, np.ones(7)], SIG)))
    # Equal widths (the bracket's bounds coincide with the root).
    np.testing.assert_allclose(
        an.radius_fraction(0.5, np.ones(9), np.full(9, 2.0)), 2 * np.sqrt(2 * np.log(2)), rtol=1e-13
    )


@pytest.mark.strict_rank
def test_iso_radius(batch):
    w, q = batch
    # Closed form for one component: I0 exp(-r^2 / 2 s^2) = level.
    peak = 3.0 / (2 * np.pi * 0.5 * SIG[3] ** 2)
    got = an.iso_radius(peak / 10, np.where(np.arange(9) == 3, 3.0, 0.0), SIG, 0.5)
    np.testing.assert_allclose(got, SIG[3] * np.sqrt(2 * np.log(10)), rtol=1e-13)
    levels = np.array([1e-3, 0.05, 1.0])
    radii = np.asarray(an.iso_radius(levels, w, SIG, q))
    assert radii.shape == (N_SETS, 3)
    np.testing.assert_allclose(
        _sbp_np(radii, w[:, None, :], SIG, q[:, None]), np.broadcast_to(levels, radii.shape), rtol=1e-12
    )
    central = _sbp_np(0.0, w[0], SIG, q[0])
    assert np.isnan(float(an.iso_radius(2 * central, w[0], SIG, q[0])))


@pytest.mark.strict_rank
def test_iso_target_conversion():
    np.testing.assert_allclose(an.iso_target(25.0, 27.0, 0.2), 10 ** (2.0 / 2.5) * 0.04, rtol=1e-14)


def _petro_ratio(r, w, lo=0.8, hi=1.25):
    return (_cog_np(hi * r, w, SIG) - _cog_np(lo * r, w, SIG)) / _cog_np(r, w, SIG) / (hi**2 - lo**2)


@pytest.mark.strict_rank
def test_petrosian_radius(batch):
    w, _ = batch
    radii = np.asarray(an.petrosian_radius(w, SIG))
    assert radii.shape == (N_SETS,)
    np.testing.assert_allclose(_petro_ratio(radii, w), 0.2, rtol=1e-9)
    for ratio in (0.1, 0.5):
        radii = np.asarray(an.petrosian_radius(w, SIG, ratio, 0.7, 1.4))
        np.testing.assert_allclose(_petro_ratio(radii, w, 0.7, 1.4), ratio, rtol=1e-9)
    assert np.isnan(float(an.petrosian_radius(w[0], SIG, 1.5)))


@pytest.mark.strict_rank
def test_basic_analysis_and_summarize(batch):
    w, _ = batch
    out = an.basic_analysis(w, SIG, None, 27.0)
    assert list(out) == ["flux", "mag", "r20", "r50", "r80", "r90", "C80_20", "C90_50"]
    np.testing.assert_allclose(out["mag"], 27.0 - 2.5 * np.log10(w.sum(-1)), rtol=1e-14)
    np.testing.assert_allclose(out["r50"], an.radius_fraction(0.5, w, SIG), rtol=1e-14)
    np.testing.assert_allclose(out["C90_50"], out["r90"] / out["r50"], rtol=1e-14)
    assert "mag" not in an.basic_analysis(w, SIG)
    x = np.asarray(out["flux"])
    med, p5, p95 = np.percentile(x, [50, 5, 95])
    np.testing.assert_allclose(an.summarize(x, 5, 95), [med, med - p5, p95 - med], rtol=1e-13)


@pytest.mark.strict_rank
def test_vmap_jit_and_no_recompilation(batch):
    w, q = batch
    fn = jax.jit(jax.vmap(lambda ww, qq: an.iso_radius(0.05, ww, SIG, qq)))
    np.testing.assert_allclose(fn(w, q), an.iso_radius(0.05, w, SIG, q), rtol=1e-14)
    an.radius_fraction(0.5, w, SIG)
    size = radii._radius_fraction_kernel._cache_size()
    # Other values and other batch sizes padded to the same bucket reuse the compiled kernel.
    an.radius_fraction(0.3, w[:11] * 1.1, SIG)
    an.radius_fraction(np.array([0.6]), w[:5], SIG * 1.2)
    assert radii._radius_fraction_kernel._cache_size() == size


@pytest.mark.parametrize(
    "fn",
    [
        lambda w: an.radius_fraction(0.5, w, SIG),
        lambda w: an.radius_fraction(0.9, w, SIG, 20.0),
        lambda w: an.iso_radius(0.05, w, SIG, 0.7),
        lambda w: an.petrosian_radius(w, SIG),
        lambda w: an.obs_sbp(3.0, w, SIG, 0.7, PSF_SIG, PSF_A),
    ],
    ids=["r50", "r90-cutoff", "iso", "petrosian", "obs_sbp"],
)
def test_gradients_match_finite_differences(fn):
    # Radii are differentiated implicitly (through the root, not the iterations).
    w = jnp.asarray(10**LOG_W)
    grad = np.asarray(jax.grad(fn)(w))
    eps = 1e-6
    fd = [(fn(w.at[i].mul(1 + eps)) - fn(w.at[i].mul(1 - eps))) / (2 * eps * w[i]) for i in range(len(SIG))]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * np.max(np.abs(fd)))


@pytest.mark.strict_rank
def test_forward_mode_derivative():
    w = jnp.asarray(10**LOG_W)
    direction = jnp.linspace(-1.0, 1.0, len(SIG)) * w

    def fn(v):
        return an.radius_fraction(0.5, v, SIG)

    _, tangent = jax.jvp(fn, (w,), (direction,))
    eps = 1e-6
    fd = (fn(w + eps * direction) - fn(w - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(tangent, fd, rtol=1e-7)


def test_radius_fraction_of_a_reference_flux(batch):
    w, _ = batch
    # The flux inside a 30 px ellipse as the reference: the same radii as with cutoff = 30.
    ref = an.flux(w, SIG, 30.0)
    fracs = np.array([0.2, 0.5, 0.9])
    np.testing.assert_allclose(an.radius_fraction_of(fracs, w, SIG, ref),
                               an.radius_fraction(fracs, w, SIG, 30.0), rtol=1e-12)
    # One reference per parameter set: each radius solves F(<r) = frac * reference.
    refs = 0.6 * w.sum(-1) * np.linspace(0.5, 1.0, len(w))
    r = np.asarray(an.radius_fraction_of(0.5, w, SIG, refs))
    np.testing.assert_allclose(_cog_np(r, w, SIG), 0.5 * refs, rtol=1e-11)
