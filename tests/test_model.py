"""Tests for imcascade_jax.model and imcascade_jax.params: validation, pytree, parameter vectors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax.model import HYBRID_NSIGMA, SKY_NDOF, Model, make_model
from imcascade_jax.params import Params, check_length, pack, unpack
from imcascade_jax.render import render

SIG = np.array([0.5, 1.0, 2.0, 4.0])
PSF_SIG = np.array([1.0, 2.5])
PSF_A = np.array([0.7, 0.3])


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (41,)}, "'shape'"),
        ({"shape": (0, 41)}, "'shape'"),
        ({"sig": [1.0, 0.0]}, "'sig' must be > 0"),
        ({"sig": [1.0, -2.0]}, "'sig' must be > 0"),
        ({"sig": [1.0, np.nan]}, "'sig' contains non-finite"),
        ({"sig": [1.0, np.inf]}, "'sig' contains non-finite"),
        ({"sig": []}, "'sig' must be a non-empty"),
        ({"psf_sig": [1.0, 2.0, 3.0]}, "'psf_sig' and 'psf_a' must have the same length"),
        ({"psf_a": [1.0]}, "'psf_sig' and 'psf_a' must have the same length"),
        ({"psf_a": None}, "'psf_sig' and 'psf_a' must both be given"),
        ({"psf_sig": None}, "'psf_sig' and 'psf_a' must both be given"),
        ({"psf_sig": [1.0, 0.0]}, "'psf_sig' must be > 0"),
        ({"psf_sig": [1.0, np.nan]}, "'psf_sig' contains non-finite"),
        ({"psf_a": [0.5, np.inf]}, "'psf_a' contains non-finite"),
        ({"render_mode": "exact"}, "'render_mode' must be one of"),
        ({"render_mode": None}, "'render_mode' must be one of"),
        ({"sky_type": "plane"}, "'sky_type' must be one of"),
        ({"psf_shape": {"q": 0.5}}, "'psf_shape' must be a dict with keys 'q' and 'phi'"),
        ({"psf_shape": {"phi": 0.5}}, "'psf_shape' must be a dict with keys 'q' and 'phi'"),
        ({"psf_shape": (0.5, 0.1)}, "'psf_shape' must be a dict"),
        ({"psf_shape": {"q": 0.0, "phi": 0.1}}, "'psf_shape' needs 0 < q <= 1"),
        ({"psf_shape": {"q": 1.5, "phi": 0.1}}, "'psf_shape' needs 0 < q <= 1"),
        ({"psf_shape": {"q": 0.5, "phi": np.nan}}, "'psf_shape' needs 0 < q <= 1 and a finite"),
        ({"psf_sig": None, "psf_a": None, "psf_shape": {"q": 0.5, "phi": 0.1}},
         "'psf_shape' was given without 'psf_sig'"),
    ],
)
def test_make_model_rejects_bad_input(kwargs, message):
    args = {"shape": (41, 41), "sig": SIG, "psf_sig": PSF_SIG, "psf_a": PSF_A}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_model(**args)


def test_make_model_accepts_lists_numpy_and_jax_arrays():
    models = [make_model((41, 41), s, p, a) for s, p, a in (
        (list(SIG), list(PSF_SIG), list(PSF_A)), (SIG, PSF_SIG, PSF_A),
        (jnp.asarray(SIG), jnp.asarray(PSF_SIG), jnp.asarray(PSF_A)))]
    for m in models[1:]:
        assert jax.tree_util.tree_structure(m) == jax.tree_util.tree_structure(models[0])
        for a, b in zip(jax.tree_util.tree_leaves(m), jax.tree_util.tree_leaves(models[0]),
                        strict=True):
            np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------------------------- the Model


@pytest.mark.parametrize(("sky_type", "n_sky"), [("tilted-plane", 3), ("flat", 1), (None, 0)])
def test_sizes(sky_type, n_sky):
    m = make_model((41, 50), SIG, PSF_SIG, PSF_A, sky_type=sky_type)
    assert (m.n_gauss, m.n_psf, m.n_sky, m.n_params) == (4, 2, n_sky, 8 + n_sky)
    assert SKY_NDOF[sky_type] == n_sky
    assert m.shape == (41, 50)


def test_defaults_and_no_psf():
    m = make_model((41, 41), SIG)
    assert m.render_mode == "hybrid" and m.sky_type == "tilted-plane" and m.log_weight_scale
    assert not m.has_psf and not m.elliptical_psf
    np.testing.assert_array_equal(m.psf_sig, [0.0])
    np.testing.assert_array_equal(m.psf_a, [1.0])
    assert m.dtype == jnp.float64


def test_elliptical_psf_is_stored():
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A, psf_shape={"q": 0.6, "phi": 0.7})
    assert m.elliptical_psf
    assert float(m.psf_q) == 0.6 and float(m.psf_phi) == 0.7


def test_float32_model():
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A, dtype=jnp.float32)
    assert m.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(m))


def test_model_is_a_pytree_with_static_settings():
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A, psf_shape={"q": 0.6, "phi": 0.7})
    leaves, treedef = jax.tree_util.tree_flatten(m)
    assert len(leaves) == 6  # sig, psf_sig, psf_a, psf_q, psf_phi, sky_centre
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(rebuilt, Model) and rebuilt.shape == m.shape
    assert rebuilt.render_mode == m.render_mode and rebuilt.windows == m.windows
    # Static data is hashable (it keys jit's cache) and leaves can be traced.
    hash(treedef)
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, m)
    np.testing.assert_array_equal(doubled.sig, 2 * SIG)
    assert jax.jit(lambda model: model.sig.sum())(m) == pytest.approx(SIG.sum())


def test_replace():
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A)
    m2 = m.replace(render_mode="erf")
    assert m2.render_mode == "erf" and m.render_mode == "hybrid"


@pytest.mark.parametrize(("psf", "psf_shape", "exact"), [
    ((PSF_SIG, PSF_A), None, False),  # circular PSF with sig >= 1: never narrower than 1 px
    ((PSF_SIG, PSF_A), {"q": 0.6, "phi": 0.3}, True),  # minor PSF axis 0.6 px
    ((None, None), None, True),  # no PSF: q -> 0 can make any component narrow
])
def test_hybrid_plan(psf, psf_shape, exact):
    full = make_model((151, 151), SIG * 4, *psf, psf_shape=psf_shape)
    assert full.windows == (-1,) * 4  # full frame by default
    m = make_model((151, 151), SIG * 4, *psf, psf_shape=psf_shape, windowed=True)
    assert len(m.windows) == len(m.exact) == 4
    assert all(flag == exact for flag in m.exact)
    windowed = [h for h in m.windows if h >= 0]
    assert windowed and len(set(windowed)) == 1  # one shared window for the narrow ones
    assert 2 * windowed[0] + 1 < 151
    psf_max = 0.0 if psf[0] is None else psf[0].max()
    for half, s in zip(m.windows, SIG * 4, strict=True):
        # A window holds its component out to 5 sigma of its widest convolved component.
        assert half < 0 or half >= HYBRID_NSIGMA * np.hypot(s, psf_max)
    assert make_model((41, 41), SIG, render_mode="erf").windows is None


# ----------------------------------------------------------------------- parameter vectors


@pytest.mark.parametrize("log", [True, False])
def test_unpack_and_pack(log):
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A, log_weight_scale=log)
    flux = np.array([1.0, 20.0, 300.0, 0.5])
    param = np.concatenate([[20.3, 19.6, 0.4, 1.1], np.log10(flux) if log else flux,
                            [0.1, 0.01, -0.02]])
    p = unpack(m, param)
    assert isinstance(p, Params)
    assert (float(p.x0), float(p.y0), float(p.q), float(p.phi)) == (20.3, 19.6, 0.4, 1.1)
    np.testing.assert_allclose(p.flux, flux, rtol=1e-14)
    np.testing.assert_array_equal(p.sky, [0.1, 0.01, -0.02])
    np.testing.assert_allclose(pack(m, p), param, rtol=1e-14)


def test_unpack_batches():
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A, sky_type=None)
    batch = np.tile(np.array([20.0, 20.0, 0.5, 0.3, 0.0, 1.0, 2.0, 0.5]), (5, 1))
    p = unpack(m, batch)
    assert p.x0.shape == (5,) and p.flux.shape == (5, 4) and p.sky.shape == (5, 0)
    np.testing.assert_allclose(pack(m, p), batch, rtol=1e-14)


@pytest.mark.parametrize("n", [0, 10, 12])
def test_wrong_parameter_length(n):
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A)  # 4 + 4 + 3 = 11 parameters
    with pytest.raises(ValueError, match=rf"'param' must have 11 entries .* got {n}"):
        check_length(m, np.zeros(n))
    with pytest.raises(ValueError, match="'param' must have 11 entries"):
        unpack(m, np.zeros(n))


def test_scalar_parameter_is_rejected():
    m = make_model((41, 41), SIG, PSF_SIG, PSF_A)
    with pytest.raises(ValueError, match="'param'"):
        unpack(m, 1.0)


# ----------------------------------------------------------------------------- render plan


@pytest.mark.parametrize("mode", ["hybrid", "erf", "gauss"])
def test_models_of_one_shape_with_different_psfs_share_one_program(mode):
    """The plan depends on shapes and static settings: different PSF widths and weights (all
    wider than HYBRID_EXACT_BELOW, see the module's documentation) give one tree structure,
    one trace and one compiled program."""
    psfs = [(PSF_SIG, PSF_A), (PSF_SIG * [0.8, 1.3], [0.5, 0.5])]
    models = [make_model((41, 41), SIG * 1.7, s, a, render_mode=mode) for s, a in psfs]
    assert jax.tree_util.tree_structure(models[0]) == jax.tree_util.tree_structure(models[1])
    traces = []

    @jax.jit
    def image(model, param):
        traces.append(1)
        return render(model, param)

    param = np.array([20.3, 19.6, 0.6, 0.4, 0.0, 0.3, 0.5, 0.2, 0.01, 0.0, 0.0])
    images = [image(m, param) for m in models]
    assert len(traces) == 1 and image._cache_size() == 1
    assert not np.allclose(images[0], images[1])  # the PSFs did reach the program


def test_only_the_narrow_psf_switch_reads_psf_values():
    """The documented exception: the exact pixel integral is compiled in only when the PSF's
    narrowest minor width is below HYBRID_EXACT_BELOW (0.7 px)."""
    from imcascade_jax.model import HYBRID_EXACT_BELOW

    wide = make_model((41, 41), SIG, [0.75, 2.0], [0.5, 0.5])
    narrow = make_model((41, 41), SIG, [0.65, 2.0], [0.5, 0.5])
    assert 0.65 < HYBRID_EXACT_BELOW < 0.75
    assert wide.windows == narrow.windows == (-1,) * len(SIG)
    assert not any(wide.exact) and all(narrow.exact)


def test_sky_centre_defaults_to_the_image_centre():
    m = make_model((41, 60), SIG, PSF_SIG, PSF_A)
    np.testing.assert_array_equal(np.asarray(m.sky_centre), [20.5, 30.0])
