"""The renderer gives the same image under ``jax.jit`` as eagerly, and the right one.

The exact (erf) pixel integral integrates each component exactly along its narrower axis. At
``q = 1``, or at ``phi = pi/4`` with a circular PSF, both axes are equally narrow and the choice
is decided by rounding: computed twice in two XLA fusions it once came out differently for the
inputs and the output of a component, transposing it under ``jit`` (34% of the peak off).
Checked here at the degenerate angles, with the centre off the diagonal (``x0 != y0``) so that a
transposed component is visible, with and without PSF, in every render mode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import gaussians_image, reference_image

from imcascade_jax.model import make_model
from imcascade_jax.render import render

SHAPE = (31, 31)
# Widths that are not powers of two: with those the two roundings agreed and hid the bug.
SIG = np.array([0.6, 1.1, 2.1, 3.7, 6.6])
FLUX = np.array([3.0, 5.0, 8.0, 6.0, 4.0])
CENTRE = (15.3, 13.6)
PSFS = {
    None: {},
    "narrow": {"psf_sig": [0.3], "psf_a": [1.0]},
    "0.7px": {"psf_sig": [0.7], "psf_a": [1.0]},
    "normal": {"psf_sig": [1.0, 2.5], "psf_a": [0.7, 0.3]},
    "elliptical": {"psf_sig": [1.0, 2.5], "psf_a": [0.7, 0.3], "psf_shape": {"q": 0.7, "phi": 0.4}},
}
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
# Max |ours - reference| / peak. The reference is exact to ~1e-6 (Richardson-extrapolated
# midpoint rule); erf is exact up to its quadrature, hybrid carries its pixel correction,
# gauss is compared with pixel-centre values.
TOLERANCE = {"erf": 1e-5, "hybrid": 1e-4, "gauss": 1e-12}

render_jit = jax.jit(render)


@functools.cache
def _model(mode, psf):
    return make_model(SHAPE, SIG, render_mode=mode, sky_type=None, **PSFS[psf])


def _psf_reference_kwargs(psf):
    kw = PSFS[psf]
    if not kw:
        return {}
    out = {"psf_sig": np.asarray(kw["psf_sig"]), "psf_a": np.asarray(kw["psf_a"])}
    if "psf_shape" in kw:
        out.update(psf_q=kw["psf_shape"]["q"], psf_phi=kw["psf_shape"]["phi"])
    return out


def _reference(mode, psf, q, phi):
    kw = _psf_reference_kwargs(psf)
    if mode == "gauss":
        return _centre_reference(q, phi, kw)
    r15 = reference_image(SHAPE, *CENTRE, q, phi, SIG, FLUX, oversample=15, **kw)
    r30 = reference_image(SHAPE, *CENTRE, q, phi, SIG, FLUX, oversample=30, **kw)
    return (4.0 * r30 - r15) / 3.0


def _centre_reference(q, phi, kw):
    """Pixel-centre values: the one-sub-pixel midpoint rule of the reference."""
    from reference import convolved_covariances

    cov = convolved_covariances(SIG, q, phi, kw.get("psf_sig"), kw.get("psf_q", 1.0),
                                kw.get("psf_phi", 0.0))
    weights = FLUX if "psf_a" not in kw else (FLUX[:, None] * kw["psf_a"][None, :]).ravel()
    return gaussians_image(SHAPE, *CENTRE, *cov, weights, oversample=1)


@pytest.mark.parametrize("psf", list(PSFS))
@pytest.mark.parametrize("mode", ["erf", "hybrid", "gauss"])
def test_jit_equals_eager_equals_reference_at_degenerate_angles(mode, psf):
    model = _model(mode, psf)
    for q in (1.0, 0.5):
        for phi in ANGLES:
            param = jnp.asarray([*CENTRE, q, phi, *np.log10(FLUX)])
            eager = np.asarray(render(model, param))
            jitted = np.asarray(render_jit(model, param))
            ref = _reference(mode, psf, q, phi)
            peak = ref.max()
            assert np.max(np.abs(jitted - eager)) / peak < 1e-12, (q, phi)
            assert np.max(np.abs(jitted - ref)) / peak < TOLERANCE[mode], (q, phi)


def test_exact_integral_is_symmetric_in_the_axes_under_jit():
    """A component with ``cxx == cyy`` rendered at (x0, y0) is the transpose of the same one at
    (y0, x0): both axis choices are right (to the quadrature's ~1e-8), a mixed one is not."""
    model = _model("erf", None)
    for phi in ANGLES:
        param = jnp.asarray([*CENTRE, 1.0, phi, *np.log10(FLUX)])
        swapped = jnp.asarray([CENTRE[1], CENTRE[0], 1.0, phi, *np.log10(FLUX)])
        img = np.asarray(render_jit(model, param))
        np.testing.assert_allclose(img, np.asarray(render_jit(model, swapped)).T, rtol=0,
                                   atol=1e-7 * img.max())


@pytest.mark.parametrize("mode", ["erf", "hybrid", "gauss"])
def test_batched_parameter_vectors(mode):
    """Leading axes of ``param`` are a batch (``Params`` allows them): one image per vector."""
    model = _model(mode, "normal")
    base = np.array([*CENTRE, 0.6, 0.3, *np.log10(FLUX)])
    batch = np.stack([base + [0.1 * i, -0.05 * i, 0.05 * i, 0.2 * i, 0, 0, 0, 0, 0]
                      for i in range(6)]).reshape(2, 3, -1)
    images = render_jit(model, batch)
    assert images.shape == (2, 3, *SHAPE)
    for i, j in np.ndindex(2, 3):
        np.testing.assert_allclose(images[i, j], render_jit(model, batch[i, j]), rtol=0,
                                   atol=1e-14)
    with pytest.raises(ValueError, match="'param' must have 9 entries"):
        render(model, batch[..., :-1])
