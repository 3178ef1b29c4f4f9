"""Tests for imcascade_jax.utils: known values, validation, and parity with imcascade 1.1."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from imcascade_jax import utils

SIG = np.array([0.75, 1.5, 3.0, 6.0, 12.0, 24.0])


@pytest.fixture(scope="module")
def imc_utils():
    pytest.importorskip("imcascade")
    from imcascade import utils as ref

    return ref


def _mask(shape=(40, 50)):
    mask = np.zeros(shape)
    mask[10, 12] = 1
    mask[30:33, 40:44] = 1
    mask[0, 0] = 1
    return mask


# ---------------------------------------------------------------- own behaviour


def test_vars_to_use_entries():
    assert utils.vars_to_use[:4] == ["img", "weight", "mask", "sig"]
    assert utils.vars_to_use[-2:] == ["logz", "logz_err"]
    assert len(utils.vars_to_use) == 19


def test_guess_weights_sum_and_shape():
    a = utils.guess_weights(SIG, 4.0, 250.0)
    assert a.shape == SIG.shape
    assert np.all(a > 0)
    assert a.sum() == pytest.approx(250.0, rel=1e-12)
    # Scale-free: only sig / re matters.
    np.testing.assert_allclose(utils.guess_weights(2 * SIG, 8.0, 250.0), a, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"re": 0.0}, "re"),
        ({"re": -1.0}, "re"),
        ({"sig": np.array([1.0, -2.0])}, "sig"),
        ({"sig": []}, "sig"),
    ],
)
def test_guess_weights_rejects(kwargs, name):
    args = {"sig": SIG, "re": 3.0, "flux": 1.0} | kwargs
    with pytest.raises(ValueError, match=name):
        utils.guess_weights(**args)


def test_expand_mask_grows_and_is_binary():
    mask = _mask()
    new = utils.expand_mask(mask, radius=2, threshold=0.01)
    assert new.shape == mask.shape
    assert set(np.unique(new)) == {0.0, 1.0}
    assert np.all(new[mask == 1] == 1)
    assert new.sum() > mask.sum()
    # A lower threshold masks at least as much.
    assert utils.expand_mask(mask, radius=2, threshold=1e-4).sum() >= new.sum()
    # Bool masks are accepted.
    np.testing.assert_array_equal(utils.expand_mask(mask.astype(bool), radius=2, threshold=0.01), new)


def test_expand_mask_rejects():
    with pytest.raises(ValueError, match="mask"):
        utils.expand_mask(np.zeros(5))
    with pytest.raises(ValueError, match="radius"):
        utils.expand_mask(np.zeros((5, 5)), radius=0)


def test_scales_values():
    np.testing.assert_allclose(utils.log_scale(1, 100, 3), [1, 10, 100], rtol=1e-12)
    x = utils.asinh_scale(-2.0, 30.0, 7)
    assert x[0] == pytest.approx(-2.0) and x[-1] == pytest.approx(30.0)
    np.testing.assert_allclose(np.diff(np.arcsinh(x)), np.diff(np.arcsinh(x))[0], rtol=1e-12)
    assert utils.log_scale(2.0, 2.0, 1.0).tolist() == [2.0]


@pytest.mark.parametrize(
    ("func", "args", "name"),
    [
        (utils.log_scale, (0.0, 10.0, 5), "start"),
        (utils.log_scale, (-1.0, 10.0, 5), "start"),
        (utils.log_scale, (1.0, 0.0, 5), "end"),
        (utils.log_scale, (1.0, 10.0, 0), "num"),
        (utils.log_scale, (1.0, 10.0, 2.5), "num"),
        (utils.asinh_scale, (0.0, 10.0, 0), "num"),
        (utils.asinh_scale, (0.0, 10.0, -3), "num"),
    ],
)
def test_scales_reject(func, args, name):
    with pytest.raises(ValueError, match=name):
        func(*args)


def test_dict_add_does_not_override_or_mutate():
    base = {"a": 1}
    out = utils.dict_add(base, "b", 2)
    assert out == {"a": 1, "b": 2}
    assert base == {"a": 1}
    assert utils.dict_add(out, "a", 5)["a"] == 1


def test_get_med_errors_values_and_axis():
    arr = np.arange(101.0)
    np.testing.assert_allclose(utils.get_med_errors(arr), [50.0, 34.0, 34.0])
    np.testing.assert_allclose(utils.get_med_errors(arr, lo=5, hi=95), [50.0, 45.0, 45.0])
    cols = np.stack([arr, 2 * arr + 1], axis=1)
    res = utils.get_med_errors(cols, axis=0)
    assert res.shape == (3, 2)
    np.testing.assert_allclose(res[:, 0], [50.0, 34.0, 34.0])
    np.testing.assert_allclose(res[:, 1], [101.0, 68.0, 68.0])
    with pytest.raises(ValueError, match="hi"):
        utils.get_med_errors(arr, hi=120)
    with pytest.raises(ValueError, match="arr"):
        utils.get_med_errors([])


def test_sersic_total_flux_and_half_light():
    n, re, ltot = 1.5, 6.0, 250.0
    total = quad(lambda r: 2 * np.pi * r * utils.sersic(r, n, re, ltot), 0, np.inf)[0]
    half = quad(lambda r: 2 * np.pi * r * utils.sersic(r, n, re, ltot), 0, re)[0]
    assert total == pytest.approx(ltot, rel=1e-6)
    # b(n) is an approximation: re holds half the light to ~0.1%.
    assert half / total == pytest.approx(0.5, abs=2e-3)
    assert utils.b(4.0) == pytest.approx(7.6697)


def test_sersic_jax_matches_numpy_and_differentiates():
    r = np.linspace(0.1, 20, 30)
    ref = utils.sersic(r, 2.0, 5.0, 10.0)
    out = jax.jit(utils.sersic)(jnp.asarray(r), 2.0, 5.0, 10.0)
    assert isinstance(out, jax.Array)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-10)
    # d/dLtot of a profile linear in Ltot is the profile per unit flux.
    grad = jax.grad(lambda lt: utils.sersic(jnp.asarray(3.0), 2.0, 5.0, lt))(10.0)
    assert float(grad) == pytest.approx(utils.sersic(3.0, 2.0, 5.0, 1.0), rel=1e-10)


@pytest.mark.parametrize(("kwargs", "name"), [({"n": 0.0}, "n"), ({"re": -2.0}, "re")])
def test_sersic_rejects(kwargs, name):
    args = {"r": np.arange(3.0), "n": 1.0, "re": 2.0, "Ltot": 1.0} | kwargs
    with pytest.raises(ValueError, match=name):
        utils.sersic(**args)


def test_min_diff_array():
    assert utils.min_diff_array([5.0, 1.0, 3.5, 9.0]) == pytest.approx(1.5)
    assert utils.min_diff_array([2.0]) == 1e6
    assert utils.min_diff_array([]) == 1e6
    assert utils.min_diff_array([1.0, 1.0, 7.0]) == 0.0
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    brute = min(abs(p - q) for p, q in itertools.combinations(x, 2))
    assert utils.min_diff_array(x) == pytest.approx(brute, rel=1e-14)


# ---------------------------------------------------------------- parity with imcascade 1.1


@pytest.mark.reference
def test_ref_vars_to_use(imc_utils):
    assert utils.vars_to_use == imc_utils.vars_to_use


@pytest.mark.reference
@pytest.mark.parametrize(("re", "flux"), [(3.0, 100.0), (10.0, 1.0), (0.8, 5e4)])
def test_ref_guess_weights(imc_utils, re, flux):
    np.testing.assert_allclose(
        utils.guess_weights(SIG, re, flux), imc_utils.guess_weights(SIG, re, flux), rtol=1e-12
    )


@pytest.mark.reference
@pytest.mark.parametrize(("radius", "threshold"), [(5, 0.001), (2, 0.05), (1.5, 1e-5)])
def test_ref_expand_mask(imc_utils, radius, threshold):
    mask = _mask()
    np.testing.assert_array_equal(
        utils.expand_mask(mask, radius, threshold), imc_utils.expand_mask(mask.copy(), radius, threshold)
    )


@pytest.mark.reference
@pytest.mark.parametrize(("start", "end", "num"), [(0.5, 40.0, 9), (1.0, 1e3, 2), (3.0, 3.0, 1)])
def test_ref_scales(imc_utils, start, end, num):
    np.testing.assert_allclose(
        utils.log_scale(start, end, num), imc_utils.log_scale(start, end, num), rtol=1e-14
    )
    np.testing.assert_allclose(
        utils.asinh_scale(start - 1, end, num), imc_utils.asinh_scale(start - 1, end, num), rtol=1e-14
    )


@pytest.mark.reference
def test_ref_dict_add(imc_utils):
    base = {"x0": 3.0}
    for key in ("x0", "q"):
        assert utils.dict_add(base, key, 0.5) == imc_utils.dict_add(base, key, 0.5)


@pytest.mark.reference
@pytest.mark.parametrize(("lo", "hi"), [(16, 84), (2.5, 97.5)])
def test_ref_get_med_errors(imc_utils, lo, hi):
    samples = np.random.default_rng(0).lognormal(size=(500, 3))
    np.testing.assert_allclose(
        utils.get_med_errors(samples, lo, hi), imc_utils.get_med_errors(samples, lo, hi)
    )
    by_col = utils.get_med_errors(samples, lo, hi, axis=0)
    for j in range(samples.shape[1]):
        np.testing.assert_allclose(by_col[:, j], imc_utils.get_med_errors(samples[:, j], lo, hi))


@pytest.mark.reference
def test_ref_b_and_sersic(imc_utils):
    n = np.array([0.6, 1.0, 2.5, 4.0, 8.0])
    np.testing.assert_allclose(utils.b(n), imc_utils.b(n), rtol=1e-15)
    r = np.linspace(0.0, 50.0, 101)
    for ni in n:
        np.testing.assert_allclose(
            utils.sersic(r, ni, 7.0, 123.0), imc_utils.sersic(r, ni, 7.0, 123.0), rtol=1e-12
        )


@pytest.mark.reference
def test_ref_min_diff_array(imc_utils):
    rng = np.random.default_rng(7)
    for arr in (
        rng.uniform(0, 10, 12),
        np.array([1.2, 1.8, 2.9, 5.3]),
        np.array([4.0]),
        np.array([0.0, 3e6]),
    ):
        assert utils.min_diff_array(arr) == pytest.approx(imc_utils.min_diff_array(arr), rel=1e-14)


def test_utils_is_a_shim_over_the_core():
    """Every 1.1 name of ``utils`` is the core's object (no second implementation)."""
    from imcascade_jax import result_keys, setup_maths

    for name in utils.__all__:
        home = result_keys if name == "vars_to_use" else setup_maths
        assert getattr(utils, name) is getattr(home, name), name


CORE = ("psf_decompose", "setup_maths", "result_keys", "defaults", "model", "render", "fit",
        "params", "likelihood", "derivatives", "analysis", "status", "errors")
NOT_IN_CORE = ("batch", "catalog_", "io", "cli", "inputs", "prepare", "detect", "fitter", "mgm",
               "psf_fitter", "results", "utils", "psf_figure")


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_shim_or_application_module(module):
    import ast
    from pathlib import Path

    import imcascade_jax

    path = Path(imcascade_jax.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imcascade_jax"):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.startswith("imcascade_jax")}
    for name in imported:
        parts = name.split(".")[1:]
        assert not any(p.startswith(NOT_IN_CORE) for p in parts), f"{module} imports {name}"


def test_psf_and_setup_modules_depend_on_the_core_only():
    """The set-up (prepare, detect, defaults) and the catalog modules do not import the 1.1 shims."""
    import ast
    from pathlib import Path

    import imcascade_jax

    shims = {"imcascade_jax.psf_fitter", "imcascade_jax.utils", "imcascade_jax.fitter",
             "imcascade_jax.mgm", "imcascade_jax.results"}
    root = Path(imcascade_jax.__file__).parent
    for module in ("prepare", "detect", "defaults", "batch", "catalog_inputs", "catalog_setup",
                   "catalog_batches", "catalog_schedule", "catalog_table"):
        tree = ast.parse((root / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                assert not names & shims, f"{module} imports {names & shims}"


@pytest.mark.parametrize("radius", [1.5, 2.0, 1.5625, 3.3, 5.0])
def test_expand_mask_is_astropys_gaussian_convolution(radius):
    """The separable filter equals astropy's 2-D convolution with Gaussian2DKernel (the
    kernel 1.1's expand_mask uses), edges included."""
    from astropy.convolution import Gaussian2DKernel, convolve

    rng = np.random.default_rng(int(radius * 10))
    mask = (rng.random((67, 53)) < 0.03).astype(float)
    mask[0, :5] = 1.0  # sources on the edge
    reference = convolve(mask, Gaussian2DKernel(radius))
    for threshold in (1e-3, 1e-2, 1e-4):
        np.testing.assert_array_equal(utils.expand_mask(mask, radius, threshold),
                                      np.where(reference > threshold, 1.0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        utils.expand_mask(np.where(mask > 0, np.nan, 0.0), radius)
