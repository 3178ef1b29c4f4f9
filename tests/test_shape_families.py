"""Fitting many cutouts: a galaxy whose family's fit is compiled compiles nothing, end to end.

``initialize_fitter(...).run_ls_min()`` on a new image shape must not compile any program when
the tiled fit of its model structure is already compiled: no eager image-shaped JAX operation
in the set-up (the likelihood normalisation, the sky of the flux guess) nor in reassembling
the result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import imcascade_jax
from imcascade_jax import defaults, likelihood, tiles
from imcascade_jax.synthetic import make_galaxy, moffat_psf

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _galaxy(shape, seed):
    return make_galaxy(shape=shape, n=1.5, re=4.0, flux=200.0, q=0.7, phi=0.6,
                       centre=(shape[0] / 2 + 0.3, shape[1] / 2 - 0.2),
                       psf=moffat_psf(size=15, core=2.0), seed=seed)


def test_a_galaxy_of_a_compiled_family_compiles_nothing():
    first, second = _galaxy((48, 52), 1), _galaxy((57, 55), 2)
    assert tiles.tile_grid((48, 52)).capacity == tiles.tile_grid((57, 55)).capacity == 256
    imcascade_jax.initialize_fitter(first.img, first.psf, err=first.err, verbose=False).run_ls_min()
    compiles = []

    def listen(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            compiles.append(kwargs)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        fitter = imcascade_jax.initialize_fitter(second.img, second.psf, err=second.err,
                                                 verbose=False)
        x = fitter.run_ls_min()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
    assert fitter.min_res.success
    assert fitter.min_res.fun.shape == (57 * 55,)
    assert abs(x[0] - second.truth["x0"]) < 0.05 and abs(x[1] - second.truth["y0"]) < 0.05


def test_log_weight_constant_in_numpy_equals_the_likelihoods():
    rng = np.random.default_rng(3)
    weight = rng.uniform(0.5, 400.0, size=(23, 31))
    weight[2:5, 7:9] = 0.0
    expected = 0.5 * np.sum(np.log(weight[weight > 0]) - np.log(2 * np.pi))
    assert likelihood.log_weight_constant(weight) == pytest.approx(expected, rel=1e-14)
    assert likelihood.log_weight_constant(weight) == pytest.approx(
        float(likelihood.log_weight_constant(jnp.asarray(weight))), rel=1e-12)


def test_starting_point_renders_no_sky_when_the_flux_is_given():
    img = np.full((20, 24), 0.1)
    img[8:12, 10:14] += 5.0
    mask = np.zeros(img.shape)

    def no_sky(params):
        raise AssertionError("the sky image is only needed for a flux guess")

    start = defaults.starting_point(img, mask, np.array([1.0, 2.0, 4.0]), 3, True,
                                    init_dict={"flux": 80.0}, sky_image=no_sky)
    assert start.init_dict["flux"] == 80.0
    # Without a flux the sky image is used: the flux above the initial sky.
    calls = []

    def flat_sky(params):
        calls.append(list(params))
        return np.full(img.shape, params[0])

    start = defaults.starting_point(img, mask, np.array([1.0, 2.0, 4.0]), 3, True,
                                    sky_image=flat_sky)
    assert len(calls) == 1
    assert start.init_dict["flux"] == pytest.approx(float(np.sum(img - calls[0][0])), rel=1e-12)
