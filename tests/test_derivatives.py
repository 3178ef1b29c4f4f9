"""Closed-form structural derivatives against forward-mode autodiff of the renderer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax.derivatives import (
    basis_and_tangents,
    basis_and_tangents_autodiff,
    structural_vjp,
    supports_closed_form,
    tangent_windows,
)
from imcascade_jax.model import make_model

FLUX = jnp.array([1.0, 2.0, 3.0, 2.0, 1.0])
SIG = [0.8, 1.5, 3.0, 6.0, 12.0]


@pytest.mark.parametrize("mode, psf_shape, point", [
    ("hybrid", None, (20.3, 21.6, 0.45, 1.1)),
    ("gauss", None, (20.3, 21.6, 0.45, 1.1)),
    ("hybrid", {"q": 0.9, "phi": 0.4}, (19.7, 22.2, 0.3, 2.6)),
    ("hybrid", None, (20.0, 21.0, 1.0, 0.0)),  # round: the phi column vanishes
])
def test_closed_form_matches_autodiff(mode, psf_shape, point):
    model = make_model((41, 43), SIG, [1.2, 2.5], [0.7, 0.3], psf_shape=psf_shape,
                       render_mode=mode)
    assert supports_closed_form(model)
    b1, d1 = jax.jit(basis_and_tangents)(model, *point, FLUX)
    b2, d2 = jax.jit(basis_and_tangents_autodiff)(model, *point, FLUX)
    np.testing.assert_allclose(b1, b2, rtol=0, atol=1e-14)
    for i in range(4):
        scale = float(jnp.abs(d2).max())
        np.testing.assert_allclose(d1[i], d2[i], rtol=0, atol=1e-12 * scale)


def test_exact_modes_fall_back_to_autodiff():
    assert not supports_closed_form(make_model((9, 9), SIG, [1.2], [1.0], render_mode="erf"))
    # no PSF: narrow components may need the exact pixel integral
    assert not supports_closed_form(make_model((9, 9), SIG, None, None))


@pytest.mark.parametrize("log_weight_scale, sky_type, mode", [
    (True, "tilted-plane", "hybrid"),  # closed-form structural columns
    (False, "flat", "hybrid"),
    (True, "tilted-plane", "erf"),  # autodiff structural columns
])
def test_model_and_jacobian_is_the_renderers_jacobian(log_weight_scale, sky_type, mode):
    # The assembled Jacobian (structural, flux and sky columns) and image against jacfwd of
    # the renderer: the solver and full-mode NUTS use nothing else.
    from imcascade_jax.fit import model_and_jacobian
    from imcascade_jax.render import render

    model = make_model((23, 25), SIG, [1.2, 2.5], [0.7, 0.3], sky_type=sky_type,
                       render_mode=mode, log_weight_scale=log_weight_scale)
    flux = jnp.log10(FLUX) if log_weight_scale else FLUX
    sky = jnp.array([0.01, 1e-3, -2e-3])[:model.n_sky]
    param = jnp.concatenate([jnp.array([11.3, 12.6, 0.55, 2.1]), flux, sky])
    image, jac = jax.jit(model_and_jacobian)(model, param)
    np.testing.assert_allclose(image, render(model, param), rtol=0, atol=1e-13)
    expected = jnp.moveaxis(jax.jacfwd(render, argnums=1)(model, param), -1, 0)
    assert jac.shape == expected.shape == (param.size, 23, 25)
    for column, want in zip(jac, expected, strict=True):
        np.testing.assert_allclose(column, want, rtol=0, atol=1e-12 * float(jnp.abs(want).max()))


def test_tangent_windows_cover_each_component_once():
    # Widths 0.8 .. 12 px with a 1.2 / 2.5 px PSF on 61x63: the narrow components get windows
    # (half-size at least 5 sigma of the widest convolved major axis, plus the pixel), the
    # widest the full frame; 'gauss' mode has no cutoff, so no windows.
    model = make_model((61, 63), SIG, [1.2, 2.5], [0.7, 0.3])
    plan = tangent_windows(model)
    assert plan is not None
    members = sorted(i for _, idx in plan for i in idx)
    assert members == list(range(len(SIG) * 2))
    major = np.sqrt(np.add.outer(np.square(SIG), np.square([1.2, 2.5])) + 1 / 12).ravel()
    for half, idx in plan:
        if half >= 0:
            assert half - 0.5 >= 5.0 * major[list(idx)].max()
            assert 2 * half + 1 < 61
    assert tangent_windows(make_model((61, 63), SIG, [1.2, 2.5], [0.7, 0.3],
                                      render_mode="gauss")) is None


@pytest.mark.parametrize("centre", [(30.4, 31.7), (2.2, 60.6), (-3.5, 20.0)])
def test_structural_vjp_in_windows_is_the_full_frame_contraction(centre):
    # J^T v from windows against contracting the full-frame derivative images with v: the
    # same sums (components are exactly zero beyond 5 sigma), also with the centre near an
    # edge or outside the image.
    model = make_model((61, 63), SIG, [1.2, 2.5], [0.7, 0.3])
    plan = tangent_windows(model)
    assert any(half >= 0 for half, _ in plan)
    v = jnp.asarray(np.random.default_rng(3).normal(size=model.shape))
    point = (*centre, 0.45, 1.1)
    _, d_image = basis_and_tangents(model, *point, FLUX)
    ref = jnp.tensordot(d_image, v, axes=2)
    got = jax.jit(structural_vjp, static_argnums=7)(model, *point, FLUX, v, plan)
    full = structural_vjp(model, *point, FLUX, v)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * float(jnp.abs(ref).max()))
    np.testing.assert_allclose(full, ref, rtol=1e-12, atol=1e-12 * float(jnp.abs(ref).max()))


def test_full_log_like_gradient_with_windows_is_the_jacobians():
    # The custom derivative's J^T dlogL/dimage (windows) against the assembled Jacobian.
    from imcascade_jax.fit import model_and_jacobian
    from imcascade_jax.likelihood import full_log_like

    model = make_model((61, 63), SIG, [1.2, 2.5], [0.7, 0.3], sky_type="tilted-plane")
    rng = np.random.default_rng(4)
    param = jnp.concatenate([jnp.array([30.4, 31.7, 0.55, 2.1]), jnp.log10(FLUX),
                             jnp.array([0.01, 1e-3, -2e-3])])
    img = jnp.asarray(rng.normal(0.0, 0.05, model.shape)) + 0.02
    weight = jnp.full(model.shape, 400.0)
    image, jac = model_and_jacobian(model, param)
    ref = jnp.tensordot(jac, weight * (img - image), axes=2)
    grad = jax.grad(lambda p: full_log_like(model, img, weight, p,
                                            windows=tangent_windows(model)))(param)
    np.testing.assert_allclose(grad, ref, rtol=1e-10, atol=1e-10 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize("hybrid", [True, False])
def test_component_constants_are_the_matrix_algebra(hybrid):
    # Rows against NumPy's 2x2 algebra: P = (C + pixel variance)^-1, 1 / (2 pi sqrt(det)),
    # N = P dC P and tr(P dC) along both directions; and the values they give (row 0 of
    # tangents_from_constants) against the renderer's own formula at pixel centres.
    from imcascade_jax.derivatives import component_constants, tangents_from_constants
    from imcascade_jax.render import PIXEL_VAR, box_correction

    rng = np.random.default_rng(11)
    cov = np.array([[4.0, 0.9, 2.5], [1.3, -0.4, 6.0], [9.0, 2.0, 1.2]])  # rows (cxx, cxy, cyy)
    dirs = [rng.normal(size=(3, 3)) for _ in range(2)]
    k = np.asarray(component_constants(tuple(jnp.asarray(cov[:, i]) for i in range(3)),
                                       *(tuple(jnp.asarray(d[:, i]) for i in range(3))
                                         for d in dirs), hybrid))
    assert k.shape == (26, 3)
    pix = PIXEL_VAR if hybrid else 0.0
    dx, dy = jnp.arange(-3.0, 4.0) + 0.3, jnp.arange(-2.0, 3.0) - 0.2
    values = np.asarray(tangents_from_constants(jnp.asarray(k), dx, dy, hybrid)[0])
    for c in range(3):
        mat = np.array([[cov[c, 0] + pix, cov[c, 1]], [cov[c, 1], cov[c, 2] + pix]])
        prec = np.linalg.inv(mat)
        np.testing.assert_allclose(k[:3, c], [prec[0, 0], prec[0, 1], prec[1, 1]], rtol=1e-14)
        assert k[3, c] == pytest.approx(1 / (2 * np.pi * np.sqrt(np.linalg.det(mat))), rel=1e-14)
        for row, d in zip((18, 22), dirs, strict=True):
            dmat = np.array([[d[c, 0], d[c, 1]], [d[c, 1], d[c, 2]]])
            n = prec @ dmat @ prec
            np.testing.assert_allclose(k[row:row + 4, c],
                                       [n[0, 0], n[0, 1], n[1, 1], np.trace(prec @ dmat)],
                                       rtol=1e-13, atol=1e-15)
        x, y = np.meshgrid(np.asarray(dx), np.asarray(dy), indexing="ij")
        wx, wy = prec[0, 0] * x + prec[0, 1] * y, prec[0, 1] * x + prec[1, 1] * y
        quad = wx * x + wy * y
        want = np.exp(-0.5 * quad) * k[3, c]
        if hybrid:
            want = np.where(quad > 25.0, 0.0,
                            want * np.asarray(box_correction(wx, wy, prec[0, 0], prec[1, 1])))
        np.testing.assert_allclose(values[c], want, rtol=1e-13, atol=1e-16)
