"""Tests for imcascade_jax.render: accuracy against an exact pixel integral, gradients, transforms.

The reference (``tests/reference.py``) averages the analytically rotated, PSF-convolved mixture
over 15x15 sub-pixels (the acceptance check), or extrapolates 15x and 30x oversampling
(Richardson, error ~1e-8 of the peak) for the tight checks. Measured values are in
``docs/accuracy.md``.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import (
    axis_aligned_image,
    gaussians_image,
    reference_image,
    rotated_covariance,
    second_moments,
)

from imcascade_jax import render as R
from imcascade_jax.model import make_model
from imcascade_jax.params import unpack

MODES = ("erf", "hybrid", "gauss")
# (x0, y0, q, phi): integer and fractional centres, q down to 0.3, phi far from 0.
CASES = (
    (20.0, 20.0, 1.0, 0.0),
    (20.3, 19.6, 0.3, 1.1),
    (20.45, 20.2, 0.5, 2.4),
    (19.7, 20.9, 0.8, -0.9),
    (20.1, 19.85, 0.3, 2.9),
)
ELLIPTICAL_PSF = {"q": 0.6, "phi": 0.7}
# Acceptance: max |ours - reference| / peak against the 15x-oversampled reference.
TOLERANCE_15X = {("erf", "circular"): 1e-3, ("hybrid", "circular"): 2e-3,
                 ("erf", "elliptical"): 2e-3, ("hybrid", "elliptical"): 2e-3}
FLUX_TOLERANCE = 1e-3

render_jit = jax.jit(R.render)


def _loss(model, param, data):
    return jnp.sum((data - R.render(model, param)) ** 2)


loss_grad_jit = jax.jit(jax.grad(_loss, argnums=1))
jacfwd_jit = jax.jit(jax.jacfwd(R.render, argnums=1))
jvp_jit = jax.jit(lambda model, param, tangent: jax.jvp(lambda p: R.render(model, p), (param,),
                                                        (tangent,))[1])
loss_jit = jax.jit(_loss)


@functools.cache
def _small_model(mode, psf="circular", sky="tilted-plane", log=True, dtype="float64",
                 shape=(41, 41), windowed=False):
    """The small test model. Defaults are shared by most tests so that each (mode, PSF) pair
    compiles its jitted functions once."""
    from conftest import SMALL

    psf_sig, psf_a = (None, None) if psf is None else (SMALL["psf_sig"], SMALL["psf_a"])
    extra = {"windowed": True} if windowed else {}
    return make_model(shape, SMALL["sig"], psf_sig, psf_a,
                      psf_shape=ELLIPTICAL_PSF if psf == "elliptical" else None, sky_type=sky,
                      render_mode=mode, log_weight_scale=log, dtype=getattr(jnp, dtype), **extra)


def _psf_kwargs(psf):
    from conftest import SMALL

    if psf is None:
        return {}
    out = {"psf_sig": SMALL["psf_sig"], "psf_a": SMALL["psf_a"]}
    if psf == "elliptical":
        out.update(psf_q=ELLIPTICAL_PSF["q"], psf_phi=ELLIPTICAL_PSF["phi"])
    return out


@functools.cache
def _reference(case, psf="circular", oversample=15, shape=(41, 41)):
    from conftest import SMALL

    return reference_image(shape, *case, SMALL["sig"], SMALL["flux"], oversample=oversample,
                           **_psf_kwargs(psf))


def _richardson(case, psf, shape):
    """Midpoint-rule error is O(1/n^2): combine n = 15 and 30 to cancel it."""
    r15 = _reference(case, psf, 15, shape)
    r30 = _reference(case, psf, 30, shape)
    return (4.0 * r30 - r15) / 3.0


def _param(case, flux=None, sky=(0.0, 0.0, 0.0)):
    """Flat parameter vector of the shared small model (log10 fluxes, tilted-plane sky)."""
    from conftest import SMALL

    flux = SMALL["flux"] if flux is None else np.asarray(flux, dtype=float)
    return np.concatenate([case, np.log10(flux), sky])


def _render_small(mode, case, psf="circular", dtype="float64", shape=(41, 41)):
    model = _small_model(mode, psf, dtype=dtype, shape=shape)
    return np.asarray(render_jit(model, _param(case)), dtype=float)


def _peak_error(img, ref):
    return float(np.max(np.abs(img - ref)) / np.max(ref))


# ------------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize("psf", ["circular", "elliptical"])
@pytest.mark.parametrize("mode", ["erf", "hybrid"])
@pytest.mark.parametrize("case", CASES)
def test_accuracy_against_15x_oversampled_reference(mode, psf, case):
    img = _render_small(mode, case, psf)
    ref = _reference(case, psf)
    err = _peak_error(img, ref)
    assert err <= TOLERANCE_15X[mode, psf]
    # What is left is the reference's own midpoint-rule error (~2e-4 of the peak).
    assert err < 4e-4


@pytest.mark.parametrize("psf", ["circular", "elliptical"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_total_flux_matches_reference(mode, psf, case):
    img = _render_small(mode, case, psf)
    ref = _reference(case, psf)
    assert abs(img.sum() - ref.sum()) / ref.sum() <= FLUX_TOLERANCE
    assert abs(img.sum() - ref.sum()) / ref.sum() < 5e-5


@pytest.mark.parametrize("psf", ["circular", "elliptical"])
def test_gauss_mode_is_biased_at_the_peak(psf):
    # Pixel-centre sampling of ~1 px components misses the pixel's own variance: a few percent.
    err = _peak_error(_render_small("gauss", CASES[1], psf), _reference(CASES[1], psf))
    assert 1e-2 < err < 1e-1


@pytest.mark.parametrize("case", [CASES[1], (20.0, 20.5, 1.0, 0.0)])
@pytest.mark.parametrize(("psf", "erf_tol"), [("circular", 1e-6), ("elliptical", 1e-6), (None, 1e-5)])
@pytest.mark.parametrize("mode", ["erf", "hybrid"])
def test_accuracy_against_extrapolated_reference(mode, psf, erf_tol, case):
    """15x and 30x oversampling, Richardson-extrapolated: accurate to ~1e-8 of the peak with a
    PSF, ~1e-6 without one (the reference's own limit at the 0.15 px minor axis of the 0.5 px
    component at q = 0.3). Without a PSF hybrid integrates such components exactly; wider ones
    (and all with a PSF) use the fourth-order pixel correction (~4e-5)."""
    tol = erf_tol if mode == "erf" else 1e-4
    if mode == "hybrid":
        assert all(_small_model(mode, psf).exact) == (psf != "circular")
    exact = _richardson(case, psf, (41, 41))
    img = _render_small(mode, case, psf)
    assert _peak_error(img, exact) < tol
    assert abs(img.sum() - exact.sum()) / exact.sum() < 1e-5


@pytest.mark.parametrize("minor, tol", [(0.7, 1e-4), (1.0, 8e-6), (2.0, 1e-7)])
def test_hybrid_pixel_correction_against_the_exact_integral(minor, tol):
    """The sixth-order box correction is within ``tol`` of the peak wherever the hybrid renderer
    uses it (minor width >= HYBRID_EXACT_BELOW = 0.7 px), at any angle, elongation and offset."""
    from imcascade_jax.model import HYBRID_EXACT_BELOW

    assert minor >= HYBRID_EXACT_BELOW
    d = jnp.arange(-14.0, 15.0)
    worst = 0.0
    for ratio, theta, off in itertools.product((1.0, 3.0, 10.0), np.linspace(0, np.pi / 2, 5),
                                               (0.0, 0.3)):
        a, b = (ratio * minor) ** 2, minor**2
        c, s = np.cos(theta), np.sin(theta)
        cov = tuple(jnp.array([v]) for v in (c * c * a + s * s * b, c * s * (a - b), s * s * a + c * c * b))
        approx = R._box_corrected_values(d + off, d - off / 2, *cov, cutoff=False)
        exact = R.exact_values(d + off, d - off / 2, *cov)
        worst = max(worst, float(jnp.max(jnp.abs(approx - exact)) / jnp.max(exact)))
    assert worst < tol
    assert worst > tol / 100  # an approximation, not the exact branch (else this checks nothing)


@pytest.mark.parametrize("mode", ["erf", "hybrid"])
@pytest.mark.parametrize("case", [(1.3, 39.6, 0.4, 0.5), (-3.2, 20.4, 0.6, 2.0),
                                  (40.6, 43.0, 0.9, 1.3)])
def test_centre_near_or_beyond_the_edge(mode, case):
    # Hybrid windows follow the centre and are clipped at the frame: values must not change.
    img = _render_small(mode, case)
    ref = _reference(case)
    assert np.max(np.abs(img - ref)) / _reference((20.0, 20.0, 1.0, 0.0)).max() < 4e-4


@pytest.mark.parametrize("psf", ["circular", None])
def test_windowed_hybrid_equals_full_frame(psf):
    # Narrow components in a shared window that follows the centre (clipped at the frame).
    windowed = _small_model("hybrid", psf, windowed=True)
    assert any(w > 0 for w in windowed.windows) and any(w < 0 for w in windowed.windows)
    full = _small_model("hybrid", psf)
    for case in CASES[1:3] + ((1.3, 39.6, 0.4, 0.5), (-3.2, 20.4, 0.6, 2.0), (40.6, 43.0, 0.9, 1.3)):
        param = _param(case)
        np.testing.assert_allclose(render_jit(windowed, param), render_jit(full, param),
                                   rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(21, 21), (21, 26)])
@pytest.mark.parametrize("mode", ["erf", "hybrid"])
def test_no_psf_line_like_components_axis_aligned(mode, shape):
    """Minor widths of 0.05 px (q = 0.1, no PSF) along either axis: exact (erf products).

    The exact integral is taken along whichever axis is narrower, so neither orientation leaves
    a sub-pixel marginal to the quadrature.
    """
    sig, flux = np.array([0.5, 1.0, 2.0]), np.array([3.0, 2.0, 1.0])
    model = make_model(shape, sig, sky_type=None, render_mode=mode, log_weight_scale=False)
    q, x0, y0 = 0.1, 10.3, 11.6
    for phi in (0.0, np.pi / 2):
        img = np.asarray(render_jit(model, np.concatenate([[x0, y0, q, phi], flux])))
        major, minor = sig, sig * q
        sx, sy = (major, minor) if phi == 0.0 else (minor, major)
        exact = axis_aligned_image(shape, x0, y0, sx, sy, flux)
        tol = 1e-7 if mode == "erf" else 1e-4  # hybrid: fourth-order form above 1 px
        assert _peak_error(img, exact) < tol


@pytest.mark.parametrize("mode", MODES)
def test_total_flux_when_nothing_falls_off_the_frame(mode):
    # Only the three narrowest components (<= 3.1 px after the PSF, 6.5 sigma from the edges).
    flux = np.array([2.0, 3.0, 5.0, 1e-30, 1e-30, 1e-30])
    img = np.asarray(render_jit(_small_model(mode), _param((20.2, 19.7, 0.4, 0.8), flux)))
    assert img.sum() == pytest.approx(flux.sum(), rel=1e-5)


@pytest.mark.parametrize("mode", ["erf", "hybrid"])
def test_float32_close_to_float64(mode):
    case = CASES[2]
    img64 = _render_small(mode, case, dtype="float64")
    img32 = _render_small(mode, case, dtype="float32")
    assert _peak_error(img32, img64) < 2e-6
    assert render_jit(_small_model(mode, dtype="float32"), _param(case)).dtype == jnp.float32


def test_render_gaussians_matches_reference():
    model = _small_model("erf")
    cxx, cxy, cyy = (np.array(v) for v in ([0.5, 4.0, 9.0], [0.2, -1.5, 3.0], [0.4, 2.0, 16.0]))
    ref = gaussians_image(model.shape, 20.3, 19.6, cxx, cxy, cyy, np.ones(3))
    for mode, tol in (("erf", 1e-3), ("hybrid", 1e-3)):
        imgs = np.asarray(jax.jit(R.render_gaussians, static_argnames="mode")(
            model, 20.3, 19.6, cxx, cxy, cyy, mode=mode))
        assert imgs.shape == (3, 41, 41)
        assert _peak_error(imgs.sum(0), ref) < tol


# ---------------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("mode", MODES)
def test_rotated_second_moments_match_the_convention(mode):
    """Image covariance is R diag(var, var q^2) R^T + PSF (+ 1/12 for pixel integration),
    with R = [[cos, -sin], [sin, cos]]: axis-0/axis-1 covariance > 0 for 0 < phi < pi/2."""
    shape, sig, q, psf_sig = (61, 61), 4.0, 0.5, 1.5
    model = make_model(shape, [sig], [psf_sig], [1.0], sky_type=None, render_mode=mode)
    x0, y0 = 30.3, 29.6
    phis = np.array([0.3, 1.2, 2.0, -0.5])
    batch = np.array([[x0, y0, q, phi, 0.0] for phi in phis])
    images = np.asarray(jax.vmap(render_jit, in_axes=(None, 0))(model, batch))
    pix = 0.0 if mode == "gauss" else 1.0 / 12.0
    # Hybrid drops the flux beyond 5 sigma (5e-5 of the variance, 3e-6 px of centroid).
    rtol, atol = (2e-4, 1e-5) if mode == "hybrid" else (1e-7, 1e-9)
    for img, phi in zip(images, phis, strict=True):
        (mx, my), (mxx, mxy, myy) = second_moments(img)
        cxx, cxy, cyy = rotated_covariance(sig**2, q, phi)
        expected = np.array([cxx + psf_sig**2 + pix, cxy, cyy + psf_sig**2 + pix])
        np.testing.assert_allclose([mxx, mxy, myy], expected, rtol=rtol)
        assert np.sign(mxy) == np.sign(np.sin(2 * phi))
        np.testing.assert_allclose([mx, my], [x0, y0], atol=atol)


# ---------------------------------------------------------------------- structure of the image


@jax.jit
def _structure(model, param):
    p = unpack(model, param)
    return (R.render_components(model, p.x0, p.y0, p.q, p.phi),
            R.render_basis(model, p.x0, p.y0, p.q, p.phi), R.render_sky(model, p.sky),
            R.render_params(model, p), p.flux)


@pytest.mark.parametrize("mode", MODES)
def test_components_basis_and_image_agree(mode):
    model = _small_model(mode)
    param = _param(CASES[1], np.arange(1.0, 7.0), [0.1, 0.01, -0.02])
    comps, basis, sky, image, flux = (np.asarray(v) for v in _structure(model, param))
    assert comps.shape == (6, 2, 41, 41) and basis.shape == (6, 41, 41)
    np.testing.assert_allclose(np.einsum("j,kjxy->kxy", model.psf_a, comps), basis,
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(image, np.tensordot(flux, basis, 1) + sky, rtol=0, atol=1e-12)
    np.testing.assert_allclose(render_jit(model, param), image, rtol=0, atol=1e-12)


def test_sky_models():
    flat = _small_model("erf", sky="flat")
    tilted = _small_model("erf", sky="tilted-plane")
    none = _small_model("erf", sky=None)
    np.testing.assert_array_equal(R.render_sky(flat, np.array([0.25])), np.full((41, 41), 0.25))
    sky = np.asarray(R.render_sky(tilted, np.array([0.1, 0.01, -0.02])))
    x, y = np.meshgrid(np.arange(41), np.arange(41), indexing="ij")
    np.testing.assert_allclose(sky, 0.1 + (x - 20.5) * 0.01 - (y - 20.5) * 0.02, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(R.render_sky(none, np.zeros(0)), np.zeros((41, 41)))


# ------------------------------------------------------------------------------- derivatives


def _central_differences(fn, param, h=1e-5):
    cols = []
    for i in range(param.size):
        e = np.zeros_like(param)
        e[i] = h
        cols.append((np.asarray(fn(param + e)) - np.asarray(fn(param - e))) / (2 * h))
    return np.stack(cols, axis=-1)


# How each configuration's derivatives are checked. Every (mode, PSF) pair is covered; reverse
# mode (jax.grad) compiles slowest, so it runs where it matters most, forward mode elsewhere.
DERIVATIVES = {
    ("erf", "circular"): "grad", ("gauss", "circular"): "grad",
    ("hybrid", "circular"): "grad+jacfwd", ("hybrid-windowed", "circular"): "jvp",
    ("hybrid", None): "grad", ("erf", None): "jvp", ("gauss", None): "jvp",
    ("erf", "elliptical"): "jvp", ("hybrid", "elliptical"): "jvp",
    ("gauss", "elliptical"): "jvp",
}


def _model_for(mode, psf, dtype="float64"):
    base, _, variant = mode.partition("-")
    return _small_model(base, psf, dtype=dtype, windowed=variant == "windowed")


def _jvp_jacobian(model, param):
    return np.stack([jvp_jit(model, param, e) for e in np.eye(param.size)], axis=-1)


@pytest.mark.parametrize(("mode", "psf"), list(DERIVATIVES))
def test_derivatives_match_central_differences(mode, psf):
    """Derivatives against central differences (h = 1e-5), relative 1e-4: jax.grad of a chi2,
    jax.jacfwd of the image column by column, or jax.jvp along every parameter direction."""
    model = _model_for(mode, psf)
    kind = DERIVATIVES[mode, psf]
    data = np.random.default_rng(1).normal(size=model.shape)
    for case in (CASES[1], CASES[2]):
        param = _param(case, np.arange(1.0, 7.0), [0.1, 0.01, -0.02])
        fd_jac = _central_differences(lambda p: render_jit(model, p), param)  # (nx, ny, Ndof)
        if "grad" in kind:
            resid = data - np.asarray(render_jit(model, param))
            fd_grad = -2.0 * np.einsum("xy,xyi->i", resid, fd_jac)
            np.testing.assert_allclose(loss_grad_jit(model, param, data), fd_grad, rtol=1e-4)
        if kind == "grad":
            continue
        jac = np.asarray(jacfwd_jit(model, param)) if "jacfwd" in kind else _jvp_jacobian(
            model, param)
        col_err = np.linalg.norm((jac - fd_jac).reshape(-1, param.size), axis=0)
        col_norm = np.linalg.norm(fd_jac.reshape(-1, param.size), axis=0)
        assert np.all(col_err < 1e-4 * col_norm)


def test_gradient_with_respect_to_model_widths():
    # Model leaves (widths, PSF mixture and shape) are differentiable too; hybrid windows stay.
    model = _small_model("hybrid", "elliptical")
    param = _param(CASES[2], np.arange(1.0, 7.0))
    data = np.random.default_rng(2).normal(size=model.shape)
    grad = jax.jit(jax.grad(lambda m: _loss(m, param, data)))(model)

    def loss(name, value):
        leaf = jnp.asarray(value).reshape(jnp.shape(getattr(model, name)))
        return float(jnp.sum((data - render_jit(model.replace(**{name: leaf}), param)) ** 2))

    for name in ("sig", "psf_sig", "psf_a", "psf_q", "psf_phi"):
        leaf = np.atleast_1d(np.asarray(getattr(model, name)))
        fd = _central_differences(lambda v, n=name: loss(n, v), leaf, h=1e-6)
        np.testing.assert_allclose(np.atleast_1d(getattr(grad, name)), fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("mode", "psf", "dtype"),
                         [(m, p, "float64") for m in MODES for p in ("circular", None)]
                         + [("hybrid", "circular", "float32")])
def test_gradients_finite_inside_the_bounds(mode, psf, dtype):
    """Finite derivatives for q in (0, 1], widths down to 0.5 px, any phi, sub-pixel centres.

    With a PSF even q = 0 is a proper Gaussian. Without one, the covariance of a q < 1e-3
    Gaussian loses its determinant to cancellation in float32 (not tested here; 1e-4 works in
    float64). jax.grad where the configuration compiles it anyway, jax.jvp otherwise.
    """
    model = _model_for(mode, psf, dtype)
    assert float(model.sig.min()) == 0.5
    data = np.random.default_rng(3).normal(size=model.shape).astype(model.dtype)
    q_min = 0.0 if psf else 1e-4
    use_grad = "grad" in DERIVATIVES[mode, psf]
    for q, phi, x0 in itertools.product([q_min, 1e-3, 0.05, 0.3, 1.0],
                                        [0.0, 0.7, np.pi / 2, np.pi], [20.0, 20.5, 20.37]):
        param = _param((x0, 19.8, q, phi), np.arange(1.0, 7.0), [0.1, 0.01, -0.02])
        deriv = loss_grad_jit(model, param, data) if use_grad else _jvp_jacobian(model, param)
        assert bool(np.all(np.isfinite(deriv))), (q, phi, x0)


# ------------------------------------------------------------------------ jit, vmap, retracing


@pytest.mark.parametrize("mode", MODES)
def test_vmap_over_parameter_vectors(mode):
    model = _small_model(mode)
    batch = np.array([_param(c, np.arange(1.0, 7.0), [0.01, 0.0, 0.0]) for c in CASES])
    images = jax.vmap(render_jit, in_axes=(None, 0))(model, batch)
    assert images.shape == (len(CASES), 41, 41)
    for img, param in zip(images, batch, strict=True):
        np.testing.assert_allclose(img, render_jit(model, param), rtol=0, atol=1e-13)


def test_vmap_over_images_of_one_shape():
    model = _small_model("hybrid")
    param = _param(CASES[1], np.arange(1.0, 7.0), [0.01, 0.0, 0.0])
    data = np.random.default_rng(4).normal(size=(3, *model.shape))
    losses = jax.vmap(loss_jit, in_axes=(None, None, 0))(model, param, data)
    for i in range(3):
        assert float(losses[i]) == pytest.approx(float(loss_jit(model, param, data[i])), rel=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_vmap_over_models_with_different_psfs(mode):
    from conftest import SMALL

    psfs = [np.array([1.0, 2.5]), np.array([1.1, 2.4]), np.array([1.05, 2.55])]
    models = [make_model((41, 41), SMALL["sig"], s, SMALL["psf_a"], render_mode=mode)
              for s in psfs]
    # Stacking needs equal static data (in hybrid mode the window plan depends on the PSF).
    assert len({jax.tree_util.tree_structure(m) for m in models}) == 1
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *models)
    assert stacked.psf_sig.shape == (3, 2)
    param = _param(CASES[3])
    images = jax.vmap(render_jit, in_axes=(0, None))(stacked, param)
    for img, m in zip(images, models, strict=True):
        np.testing.assert_allclose(img, render_jit(m, param), rtol=0, atol=1e-13)
    assert not np.allclose(images[0], images[1])


def test_no_retracing_for_new_values():
    traces = []

    @jax.jit
    def f(model, param):
        traces.append(1)
        return R.render(model, param)

    from conftest import SMALL

    m1 = _small_model("erf")
    m2 = make_model((41, 41), SMALL["sig"] * 1.01, SMALL["psf_sig"] * 0.99, SMALL["psf_a"],
                    render_mode="erf")
    assert jax.tree_util.tree_structure(m1) == jax.tree_util.tree_structure(m2)
    for model, case in ((m1, CASES[0]), (m1, CASES[1]), (m2, CASES[2])):
        f(model, _param(case)).block_until_ready()
    assert len(traces) == 1


def test_wrong_parameter_length_raises():
    model = _small_model("erf")
    with pytest.raises(ValueError, match="'param' must have 13 entries"):
        R.render(model, np.zeros(12))
