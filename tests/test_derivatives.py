"""Closed-form structural derivatives against forward-mode autodiff of the renderer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax.derivatives import (
    basis_and_tangents,
    basis_and_tangents_autodiff,
    supports_closed_form,
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
