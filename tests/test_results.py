"""Tests for imcascade_jax.results against imcascade 1.1's ImcascadeResults on the same inputs.

Inputs: 9 widths log-spaced 0.75..50 px, log10 fluxes around a galaxy-like profile, a 500-sample
posterior scattered around them, a 4-component PSF and a tilted-plane sky. Fluxes, profiles and
curves of growth must agree to 1e-9 (relative); radii to 2e-3 with 1.1's grid interpolation,
and to 1e-9 with exact roots (1.1's own ``_min_calc_rX`` root finder, or scipy's brentq on 1.1's
profiles): ours are the exact ones, 1.1's grid interpolation is off by up to ~2e-3 at small radii.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from scipy.optimize import brentq

from imcascade_jax import analysis as an
from imcascade_jax.results import ImcascadeResults, MultiResults, calc_flux_input, r_root_func

matplotlib.use("Agg")

SIG = np.logspace(np.log10(0.75), np.log10(50.0), 9)
LOG_W = np.array([1.2, 1.5, 1.8, 2.0, 1.9, 1.6, 1.2, 0.8, 0.3])
PSF_SIG = np.array([1.2, 1.81, 2.93, 5.28])
PSF_A = np.array([0.27, 0.51, 0.19, 0.03])
N_POST = 500
RADII = np.linspace(0.0, 60.0, 25)


def make_inputs(n_post: int = N_POST, seed: int = 0) -> dict:
    """Results dicts for a least-squares fit ('min') and a posterior ('post')."""
    rng = np.random.default_rng(seed)
    min_param = np.concatenate([[40.2, 39.7, 0.7, 1.1], LOG_W, [1e-3, 2e-5, -1e-5]])
    post = (
        min_param
        + rng.normal(0.0, 1.0, (n_post, len(min_param)))
        * np.r_[[0.05, 0.05, 0.01, 0.02], np.full(9, 0.05), [1e-4, 1e-6, 1e-6]]
    )
    base = {
        "sig": SIG,
        "Ndof": len(min_param),
        "Ndof_sky": 3,
        "Ndof_gauss": 9,
        "log_weight_scale": True,
        "sky_model": True,
        "has_psf": True,
        "psf_sig": PSF_SIG,
        "psf_a": PSF_A,
    }
    return {
        "min": dict(base, min_param=min_param),
        "post": dict(base, posterior=post, logz=-10.0, logz_err=0.1),
    }


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def ref_cls():
    pytest.importorskip("imcascade")
    from imcascade.results import ImcascadeResults as Ref

    return Ref


@pytest.fixture(scope="module", params=["min", "post"])
def pair(request, inputs, ref_cls):
    """(ours, 1.1's) results for the same dict."""
    return ImcascadeResults(inputs[request.param]), ref_cls(inputs[request.param])


def _close(ours, ref, rtol=1e-9):
    assert np.shape(ours) == np.shape(ref)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=0)


# -- construction -------------------------------------------------------------------------------
def test_parameters_are_split_as_11(pair):
    ours, ref = pair
    for name in ("x0", "y0", "q", "pa", "weights", "sky_params"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(ref, name))


def test_minimal_dict_and_thinning(inputs):
    minimal = {"sig": SIG, "posterior": inputs["post"]["posterior"]}
    res = ImcascadeResults(minimal, thin_posterior=5)
    assert (res.Ndof_gauss, res.Ndof_sky, res.sky_model, res.has_psf) == (9, 3, True, False)
    assert res.weights.shape == (N_POST // 5, 9)
    np.testing.assert_array_equal(res.weights, 10 ** inputs["post"]["posterior"][::5, 4:13])
    with pytest.raises(ValueError, match="min_param"):
        ImcascadeResults({"sig": SIG})
    linear = ImcascadeResults(dict(inputs["min"], log_weight_scale=False))
    np.testing.assert_array_equal(linear.weights, inputs["min"]["min_param"][4:13])


def test_from_fitter_like_object(inputs):
    class FitterLike:
        pass

    obj = FitterLike()
    for key, value in inputs["post"].items():
        setattr(obj, key, value)
    res = ImcascadeResults(obj)
    assert res.obj_type == "class" and res.input is obj
    _close(res.calc_flux(), ImcascadeResults(inputs["post"]).calc_flux(), rtol=0)


# -- fluxes and profiles: 1e-9 ------------------------------------------------------------------
@pytest.mark.parametrize("cutoff", [None, 30.0])
def test_flux_matches_11(pair, cutoff):
    ours, ref = pair
    _close(ours.calc_flux(cutoff=cutoff), ref.calc_flux(cutoff=cutoff))
    assert type(ours.flux) is type(ref.flux)


@pytest.mark.parametrize("method", ["calc_sbp", "calc_cog"])
@pytest.mark.parametrize("return_ind", [False, True])
def test_profiles_match_11(pair, method, return_ind):
    ours, ref = pair
    _close(
        getattr(ours, method)(RADII, return_ind=return_ind),
        getattr(ref, method)(RADII, return_ind=return_ind),
    )
    # A scalar radius squeezes the radius axis, as 1.1.
    _close(
        getattr(ours, method)(7.5, return_ind=return_ind), getattr(ref, method)(7.5, return_ind=return_ind)
    )


@pytest.mark.parametrize("cutoff", [None, 30.0])
def test_normalised_cog_matches_11(pair, cutoff):
    ours, ref = pair
    _close(ours.calc_cog(RADII, norm=True, cutoff=cutoff), ref.calc_cog(RADII, norm=True, cutoff=cutoff))


@pytest.mark.parametrize("method", ["calc_obs_sbp", "calc_obs_cog"])
@pytest.mark.parametrize("return_ind", [False, True])
def test_observed_profiles_match_11_for_posteriors(inputs, ref_cls, method, return_ind):
    ours, ref = ImcascadeResults(inputs["post"]), ref_cls(inputs["post"])
    _close(
        getattr(ours, method)(RADII, return_ind=return_ind),
        getattr(ref, method)(RADII, return_ind=return_ind),
    )
    _close(ours.calc_obs_cog(RADII, norm=True), ref.calc_obs_cog(RADII, norm=True))


@pytest.mark.parametrize("method", ["calc_obs_sbp", "calc_obs_cog"])
def test_observed_profiles_fixed_for_least_squares(inputs, ref_cls, method):
    # 1.1 raises IndexError for a single parameter set; ours returns what 1.1 returns for a
    # one-sample posterior holding the same parameters.
    with pytest.raises(IndexError):
        getattr(ref_cls(inputs["min"]), method)(RADII)
    one_sample = dict(inputs["min"], posterior=inputs["min"]["min_param"][None, :])
    got = getattr(ImcascadeResults(inputs["min"]), method)(RADII, return_ind=True)
    _close(got, getattr(ref_cls(one_sample), method)(RADII, return_ind=True))
    assert got.shape == (len(RADII), 36)


def test_observed_profiles_without_psf_are_intrinsic(inputs):
    res = ImcascadeResults(dict(inputs["min"], has_psf=False, psf_sig=None, psf_a=None))
    _close(res.calc_obs_sbp(RADII), res.calc_sbp(RADII), rtol=0)
    _close(res.calc_obs_cog(RADII), res.calc_cog(RADII), rtol=0)


def test_module_functions_match_11(inputs):
    ref = pytest.importorskip("imcascade.results")
    w = 10 ** inputs["post"]["posterior"][:, 4:13]
    _close(calc_flux_input(w, SIG, 25.0), ref.calc_flux_input(w, SIG, cutoff=25.0))
    _close(r_root_func(4.0, 0.5, w, SIG, None), ref.r_root_func(4.0, 0.5, w, SIG, None))


# -- radii: exact, and within 1.1's grid error of 1.1 ---------------------------------------------
@pytest.mark.parametrize("cutoff", [None, 30.0])
def test_radii_are_exact_and_match_11(pair, cutoff):
    ours, ref = pair
    for frac in (20, 50, 80, 90):
        got = getattr(ours, f"calc_r{frac}")(cutoff=cutoff)
        assert np.all(got == getattr(ours, f"r{frac}"))
        exact = ref._min_calc_rX(frac, cutoff=cutoff)  # 1.1's brentq on its own r_root_func
        _assert_exact_and_near_11(got, ref.calc_rX(frac, cutoff=cutoff), np.ravel(exact)[::EVERY])
    _close(ours.calc_rX(0.35, cutoff=cutoff), ours.calc_rX(35, cutoff=cutoff), rtol=0)


def _exact_root(fn, lo, hi):
    return brentq(fn, lo, hi, xtol=1e-14, rtol=1e-15)


#: Every 25th sample is checked against brentq (1.1's profiles evaluated one radius at a time).
EVERY = 25


def _assert_exact_and_near_11(got, grid, exact):
    """Ours equals the exact root; it differs from 1.1 by 1.1's grid-interpolation error only.

    1.1 interpolates a 150-point grid (0.5 px steps for these widths): up to ~2e-3 relative at
    radii of 2-3 px, ~1e-4 beyond 5 px.
    """
    got, grid = np.ravel(got), np.ravel(grid)
    np.testing.assert_allclose(got[::EVERY], exact, rtol=1e-9)
    np.testing.assert_allclose(got, grid, rtol=3e-3)
    np.testing.assert_allclose(
        grid[::EVERY] - got[::EVERY], grid[::EVERY] - exact, rtol=0, atol=1e-9 * got.max()
    )


def _exact_iso(ref, level, index):
    """brentq on 1.1's own surface-brightness profile of sample ``index``."""

    def resid(r):
        return np.ravel(ref.calc_sbp(np.array([r, r]))[0])[index] - level

    return _exact_root(resid, 0.0, 100.0)


@pytest.mark.parametrize("mu", [24.0, 26.0])
def test_isophotal_radius_is_exact_and_matches_11(pair, mu):
    ours, ref = pair
    got = ours.calc_iso_r(mu, zpt=27.0, pix_scale=0.4)
    level = 10 ** ((mu - 27.0) / -2.5) * 0.4**2
    exact = [_exact_iso(ref, level, i) for i in range(0, np.size(got), EVERY)]
    _assert_exact_and_near_11(got, ref.calc_iso_r(mu, zpt=27.0, pix_scale=0.4), exact)
    np.testing.assert_allclose(got, ours.calc_iso_r(level), rtol=1e-14)


def test_isophotal_radius_arguments(inputs):
    ours = ImcascadeResults(inputs["min"])
    with pytest.raises(ValueError, match="pix_scale"):
        ours.calc_iso_r(23.0, zpt=27.0)
    assert np.isnan(ours.calc_iso_r(1e6))  # brighter than the centre: no isophote


@pytest.mark.parametrize("args", [(), (0.5, 0.7, 1.4)])
def test_petrosian_radius_is_exact_and_matches_11(pair, args):
    ours, ref = pair
    p_ratio, lo, hi = args or (0.2, 0.8, 1.25)
    got = ours.calc_petro_r(*args)

    def exact(i):
        def ratio(r):
            cog = ref.calc_cog(np.array([lo * r, r, hi * r])).reshape(3, -1)[:, i]
            return (cog[2] - cog[0]) / cog[1] / (hi**2 - lo**2) - p_ratio

        return _exact_root(ratio, 0.5, 100.0)

    _assert_exact_and_near_11(got, ref.calc_petro_r(*args), [exact(i) for i in range(0, np.size(got), EVERY)])


# -- run_basic_analysis ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"zpt": 27.0, "cutoff": 30.0, "errp_lo": 5, "errp_hi": 95}])
def test_run_basic_analysis_matches_11(pair, kwargs):
    ours, ref = pair
    got, expected = ours.run_basic_analysis(**kwargs), ref.run_basic_analysis(**kwargs)
    assert list(got) == list(expected)
    for key in expected:
        assert np.shape(got[key]) == np.shape(expected[key])
        # Fluxes exactly; radii (and error bars on them) within 1.1's grid error.
        rtol = 1e-9 if key in ("flux", "mag") else 2e-3
        atol = 0 if key in ("flux", "mag") else 2e-3 * np.abs(np.ravel(expected[key])[0])
        np.testing.assert_allclose(got[key], expected[key], rtol=rtol, atol=atol)
    if np.ndim(got["flux"]) == 0:
        assert isinstance(got["r50"], np.float64)


def test_run_basic_analysis_saves(inputs, tmp_path):
    import asdf

    res = ImcascadeResults(inputs["post"])
    out = res.run_basic_analysis(zpt=27.0, save_results=True, save_file=tmp_path / "a.asdf")
    with asdf.open(tmp_path / "a.asdf") as af:
        np.testing.assert_allclose(af.tree["r50"], out["r50"])
        np.testing.assert_allclose(af.tree["flux_post"], res.flux)
        np.testing.assert_array_equal(af.tree["posterior"], inputs["post"]["posterior"])
    # From a file: the results are added to the file's tree.
    res = ImcascadeResults(str(tmp_path / "a.asdf"))
    out = res.run_basic_analysis(cutoff=30.0, save_results=True, save_file=tmp_path / "b.asdf")
    with asdf.open(tmp_path / "b.asdf") as af:
        np.testing.assert_allclose(af.tree["flux"], out["flux"])
        assert "flux_post" in af.tree and "mag" in af.tree
    # Another existing file is refused before any work unless overwrite=True; the file the
    # results were read from is updated in place, as imcascade 1.1 does.
    with pytest.raises(FileExistsError, match="overwrite"):
        res.run_basic_analysis(save_results=True, save_file=tmp_path / "b.asdf")
    res.run_basic_analysis(save_results=True, save_file=tmp_path / "b.asdf", overwrite=True)
    again = ImcascadeResults(str(tmp_path / "b.asdf"))
    again.run_basic_analysis(zpt=25.0, save_results=True, save_file=tmp_path / "b.asdf")
    with asdf.open(tmp_path / "b.asdf") as af:
        np.testing.assert_allclose(af.tree["mag"][0], -2.5 * np.log10(af.tree["flux"][0]) + 25.0)


# -- MultiResults ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_inputs():
    a, b = make_inputs(300, seed=1)["post"], make_inputs(200, seed=2)["post"]
    b = dict(b, posterior=b["posterior"] + np.r_[np.zeros(4), np.full(9, 0.1), np.zeros(3)], logz=-11.0)
    return a, b


def test_multiresults_weights_and_seed(multi_inputs):
    a, b = (ImcascadeResults(d) for d in multi_inputs)
    multi = MultiResults([a, b], seed=42)
    np.testing.assert_allclose(multi.rel_weight, [np.exp(0.0) * 200 / 300, np.exp(-1.0)])
    draws = multi.calc_flux(num=20000)
    # Model b's fluxes are ~26% higher: the share of its draws is its evidence share.
    share_b = np.exp(-1.0) / (1 + np.exp(-1.0))
    frac_b = np.mean(draws > 0.5 * (a.calc_flux().max() + b.calc_flux().min()))
    assert abs(frac_b - share_b) < 0.02
    np.testing.assert_array_equal(MultiResults([a, b], seed=42).calc_flux(num=20000), draws)
    assert multi.calc_cog(RADII, num=50).shape == (len(RADII), 50)
    assert multi.calc_obs_sbp(RADII, num=50).shape == (len(RADII), 50)
    assert multi.calc_rX(50, num=10).shape == (10,)
    with pytest.raises(ValueError, match="lofr\\[0\\]"):
        MultiResults([ImcascadeResults(make_inputs()["min"])])


def test_multiresults_draws_match_11_with_the_same_generator(multi_inputs, ref_cls):
    from imcascade.results import MultiResults as RefMulti

    ours = MultiResults([ImcascadeResults(d) for d in multi_inputs], seed=7)
    ref = RefMulti([ref_cls(d) for d in multi_inputs])
    ref.rng = np.random.default_rng(7)
    _close(ours.calc_sbp(RADII, num=100), ref.calc_sbp(RADII, num=100), rtol=1e-9)
    _close(ours.calc_flux(cutoff=30.0, num=100), ref.calc_flux(cutoff=30.0, num=100), rtol=1e-9)


def test_multiresults_with_thinned_posteriors(multi_inputs):
    # 1.1 counts the unthinned posterior and fails; the weights follow the analysed samples.
    multi = MultiResults([ImcascadeResults(d, thin_posterior=3) for d in multi_inputs], seed=0)
    np.testing.assert_array_equal(multi.len_post, [100, 67])
    assert multi.calc_sbp(RADII, num=10).shape == (len(RADII), 10)


# The diagnostic figure is tested in tests/test_figure.py.


def test_analysis_core_is_what_the_class_uses(inputs):
    res = ImcascadeResults(inputs["post"])
    np.testing.assert_array_equal(res.calc_r50(), an.radius_fraction(0.5, res.weights, SIG))


@pytest.mark.parametrize("call, error, match", [
    (lambda r: r.calc_rX(1.5e2), ValueError, r"X must be .*\(1, 100\], got 150"),
    (lambda r: r.calc_rX(-0.1), ValueError, "X must be"),
    (lambda r: r.calc_rX(0.0), ValueError, "X must be"),
    (lambda r: r.calc_rX(np.nan), ValueError, "X must be"),
    (lambda r: r.calc_rX(np.array([0.2, 0.5])), TypeError, "X must be a real number"),
    (lambda r: r.calc_rX("50"), TypeError, "X must be a real number"),
    (lambda r: r.calc_flux(cutoff=-1.0), ValueError, "cutoff must be a radius > 0"),
    (lambda r: r.calc_rX(0.5, cutoff=0.0), ValueError, "cutoff must be a radius > 0"),
    (lambda r: r.run_basic_analysis(zpt="abc"), TypeError, "zpt must be a real number"),
    (lambda r: r.run_basic_analysis(zpt=np.inf), ValueError, "zpt must be finite"),
    (lambda r: r.run_basic_analysis(cutoff=np.nan), ValueError, "cutoff must be"),
])
def test_impossible_analysis_arguments_raise_naming_them(inputs, call, error, match):
    with pytest.raises(error, match=match):
        call(ImcascadeResults(inputs["min"]))


def test_fraction_and_percentage_and_numpy_scalars_agree(inputs):
    res = ImcascadeResults(inputs["min"])
    r50 = float(res.calc_rX(0.5))
    assert float(res.calc_rX(50)) == r50 and float(res.calc_rX(np.float32(0.5))) == r50
    assert float(res.calc_rX(np.array(50.0))) == r50
    # All of the light: the whole plane, or the whole aperture.
    assert float(res.calc_rX(100)) == float(res.calc_rX(1.0)) == np.inf
    assert float(res.calc_rX(100, cutoff=7.5)) == pytest.approx(7.5, rel=1e-9)
