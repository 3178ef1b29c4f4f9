"""The least-squares core's statuses, input checks, unit-free answers and banded normal equations.

Every status asserted here is a consequence of the input: garbage fits (hot pixels of 1e30, a
galaxy that cannot reach the image, an all-zero PSF, a 3x3 image) must not be called
converged; impossible problems raise ``ValueError`` (concrete arrays) or come back as
``BAD_INPUT`` (traced); the same galaxy in other units gives the same answer in those units.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax import fit as core_fit
from imcascade_jax import normal_equations as normal_equations_module
from imcascade_jax.fitter import Fitter, LeastSquaresResult
from imcascade_jax.model import make_model
from imcascade_jax.normal_equations import (
    band_plan,
    banded_jacobian,
    normal_equations,
    pad_rows,
    residual_image,
)
from imcascade_jax.render import render
from imcascade_jax.status import FitStatus
from imcascade_jax.synthetic import make_galaxy, moffat_psf

SHAPE = (40, 40)
N = 6
SIG = np.logspace(np.log10(0.75), np.log10(12.0), N)
PSF_SIG, PSF_A = np.array([1.1, 2.4]), np.array([0.75, 0.25])
CENTRE = (20.3, 19.6)
NAMES = ["x0", "y0", "q", "phi"] + [f"a{i}" for i in range(N)] + ["sky0", "sky1", "sky2"]


@pytest.fixture(scope="module")
def galaxy():
    """Exponential galaxy, r_e 3 px, flux 100, q 0.6, phi 0.7, noise 0.005."""
    return make_galaxy(shape=SHAPE, n=1.0, re=3.0, flux=100.0, q=0.6, phi=0.7, centre=CENTRE,
                       psf=moffat_psf(size=21, core=2.0, power=3.0), seed=3)


@pytest.fixture(scope="module")
def model():
    return make_model(SHAPE, SIG, PSF_SIG, PSF_A)


# Start and bounds in log10 fluxes for unit s; scaled copies below.
X0 = np.r_[20.0, 20.0, 0.5, 1.0, np.full(N, 1.0), 0.0, 0.0, 0.0]
LB = np.r_[10.0, 10.0, 1e-3, 0.0, np.full(N, -4.0), -1.0, -0.1, -0.1]
UB = np.r_[30.0, 30.0, 1.0, np.pi, np.full(N, 3.0), 1.0, 0.1, 0.1]


def scaled(v, s):
    """A parameter vector (log10 fluxes) for the image multiplied by s."""
    v = v.copy()
    v[4:4 + N] += np.log10(s)
    v[4 + N:] *= s
    return v


def fit(model, data, weight, x0=X0, lb=LB, ub=UB, **opts):
    return core_fit.least_squares_jit(model, data, weight, x0, lb, ub,
                                      core_fit.SolverOptions(**opts))


@pytest.fixture(scope="module")
def reference(galaxy, model):
    res = fit(model, galaxy.img, 1.0 / galaxy.err**2)
    assert int(res.status) > 0, FitStatus(int(res.status)).message
    return res


# -- statuses of garbage fits -------------------------------------------------------------------

def test_reference_fit_recovers_truth(reference):
    x = np.asarray(reference.x)
    np.testing.assert_allclose(x[:2], CENTRE, atol=0.05)
    assert abs(x[2] - 0.6) < 0.05 and abs(x[3] - 0.7) < 0.05
    assert np.sum(10 ** x[4:4 + N]) == pytest.approx(100.0, rel=0.03)
    assert not np.any(np.asarray(reference.at_upper)[4:4 + N])


def test_hot_pixels_stall_and_are_not_converged(galaxy, model):
    """Five pixels of 1e30 make every trial step a round-off change of chi2: the damping
    blows up. 776c4b2 called that 'converged: relative step below xtol' (status 2)."""
    img = galaxy.img.copy()
    img[[3, 10, 30, 35, 38], [5, 20, 8, 36, 2]] = 1e30
    res = fit(model, img, 1.0 / galaxy.err**2)
    assert int(res.status) in (FitStatus.STALLED, FitStatus.NO_PROGRESS)
    np.testing.assert_array_equal(np.asarray(res.x), X0)  # no step was accepted


@pytest.mark.parametrize("case", ["unreachable", "psf_zero", "constant_1e30"])
def test_garbage_fits_are_not_success(galaxy, model, case):
    weight = 1.0 / galaxy.err**2
    img, x0, lb, ub, m = galaxy.img, X0.copy(), LB.copy(), UB.copy(), model
    if case == "unreachable":  # centre bounded far outside the image
        x0[:2], lb[:2], ub[:2] = (200.0, -50.0), (190.0, -60.0), (210.0, -40.0)
    elif case == "psf_zero":  # every PSF weight zero: the galaxy is invisible
        m = model.replace(psf_a=jnp.zeros_like(model.psf_a))
    else:  # no galaxy at all, a constant 1e30 at S/N 2e32 per pixel
        img = np.full(SHAPE, 1e30)
        x0, lb, ub = (scaled(v, 1e30) for v in (x0, lb, ub))
    res = fit(m, img, weight, x0, lb, ub)
    assert int(res.status) <= 0, FitStatus(int(res.status)).message
    if case != "constant_1e30":
        assert int(res.status) == FitStatus.NO_PROGRESS


def test_tiny_image_outside_centre_is_not_success(galaxy):
    """A 3x3 image whose centre bounds lie outside it."""
    m = make_model((3, 3), SIG, PSF_SIG, PSF_A)
    res = fit(m, galaxy.img[:3, :3], 1.0 / galaxy.err[:3, :3]**2)
    assert int(res.status) <= 0, FitStatus(int(res.status)).message


@pytest.fixture(scope="module")
def tiny():
    """A 16x16 two-component problem (cheap to compile): model, image, weight, x0, lb, ub."""
    m = make_model((16, 16), [1.0, 3.0], [1.5], [1.0], sky_type="flat")
    truth = jnp.array([7.6, 8.3, 0.7, 0.4, 1.0, 1.5, 0.01])
    img = np.asarray(render(m, truth)) + np.random.default_rng(1).normal(0, 0.01, (16, 16))
    x0 = np.array([8.0, 8.0, 0.5, 1.0, 0.5, 0.5, 0.0])
    lb = np.array([4.0, 4.0, 1e-3, 0.0, -3.0, -3.0, -1.0])
    ub = np.array([12.0, 12.0, 1.0, np.pi, 3.0, 3.0, 1.0])
    return m, img, np.full((16, 16), 1e4), x0, lb, ub


def test_max_steps_and_no_progress(tiny):
    m, img, weight, x0, lb, ub = tiny
    one = fit(m, img, weight, x0, lb, ub, max_steps=1)
    assert int(one.status) == FitStatus.NO_PROGRESS  # only the start was evaluated
    three = fit(m, img, weight, x0, lb, ub, max_steps=3)
    assert int(three.status) == FitStatus.MAX_STEPS


# -- bounds that decide the answer ---------------------------------------------------------------

def test_flux_upper_bound_too_low_is_at_bound(galaxy, model):
    ub = UB.copy()
    ub[4:4 + N] = 0.5  # every component at most 3.2: the galaxy has 100
    x0 = X0.copy()
    x0[4:4 + N] = 0.0
    res = fit(model, galaxy.img, 1.0 / galaxy.err**2, x0, LB, ub)
    assert int(res.status) == FitStatus.AT_BOUND
    at_upper = np.asarray(res.at_upper)
    assert at_upper[4:4 + N].sum() >= 3 and not at_upper[:4].any()


def test_run_ls_min_warns_naming_bound_fluxes(galaxy):
    f = Fitter(galaxy.img, SIG, PSF_SIG, PSF_A, weight=1.0 / galaxy.err**2, verbose=False,
               init_dict={"re": 3.0, "flux": 10.0},  # 1.1's bounds: each flux <= the guess
               bounds_dict={"sky0": [-1.0, 1.0], "sky1": [-1.0, 1.0], "sky2": [-1.0, 1.0]})
    with pytest.warns(UserWarning, match=r"a\d \(upper\)"):
        f.run_ls_min()
    res = f.min_res
    assert res.status == FitStatus.AT_BOUND and not res.success
    assert res.message == FitStatus.AT_BOUND.message
    assert res.at_bound and all(n.startswith("a") and n.endswith("(upper)") for n in res.at_bound)
    assert [n.split()[0] for n in res.at_bound] == [NAMES[i] for i in np.flatnonzero(res.at_upper)
                                                    if 4 <= i < 4 + N]


def test_flux_pushed_to_a_negligible_floor_is_switched_off_not_at_bound(reference, galaxy, model):
    """A component the data want below zero rests on a floor (1e-4) far below its flux error
    (~0.1): switched off, a legitimate answer."""
    unit = np.asarray(reference.x).copy()
    unit[4:4 + N], unit[4 + N - 1], unit[4 + N:] = -np.inf, 0.0, 0.0
    widest = np.asarray(render(model, unit))  # unit-flux image of the widest component
    data = galaxy.img - 2.0 * 10 ** float(reference.x[4 + N - 1]) * widest - 0.5 * widest
    res = fit(model, data, 1.0 / galaxy.err**2)
    assert bool(np.asarray(res.at_lower)[4 + N - 1])
    assert int(res.status) > 0, FitStatus(int(res.status)).message


def test_flux_floor_holding_measured_light_is_at_bound(reference, galaxy, model):
    """A floor at the second-faintest component's flux holds light the data measure: the
    component resting on it is held up by the bound, so the answer is the bound's."""
    lb = LB.copy()
    lb[4:4 + N] = np.log10(np.sort(10 ** np.asarray(reference.x[4:4 + N]))[1])  # above the faintest
    x0 = np.maximum(X0, lb)
    res = fit(model, galaxy.img, 1.0 / galaxy.err**2, x0, lb, UB)
    assert np.asarray(res.at_lower)[4:4 + N].any()
    assert int(res.status) == FitStatus.AT_BOUND


def test_decisive_flux_floors_compare_the_floor_with_the_flux_error(model):
    """Exact: a floor decides when floor / sigma(flux) > 1, sigma from diag(J^T W J)."""
    from imcascade_jax.fit_inputs import decisive_bounds

    n_par = 4 + N + 3
    ln10 = np.log(10.0)
    # log10 fluxes: flux / sigma = sqrt(info) / ln 10, whatever the floor.
    jtj = np.diag(np.r_[np.ones(4), (ln10 * np.array([0.5, 0.99, 1.01, 2.0, 10.0, 0.0])) ** 2,
                        np.ones(3)])
    lower, _ = decisive_bounds(model, UB, True, LB, jtj)
    np.testing.assert_array_equal(lower[4:4 + N], [False, False, True, True, True, False])
    # Linear fluxes: floor^2 * info > 1.
    linear = model.replace(log_weight_scale=False)
    lb = np.r_[LB[:4], [0.0, 0.5, 0.5, -2.0, 1e-3, 3.0], LB[4 + N:]]
    jtj = np.diag(np.r_[np.ones(4), [1e6, 3.0, 5.0, 1.0, 1e5, 0.1], np.ones(3)])
    lower, _ = decisive_bounds(linear, UB, True, lb, jtj)
    np.testing.assert_array_equal(lower[4:4 + N], [False, False, True, True, False, False])
    # Without J^T W J no floor decides; the centre always does.
    lower, _ = decisive_bounds(model, UB, True)
    assert not lower[4:n_par].any() and lower[:3].all()


def test_flux_guess_far_too_high_is_not_converged(galaxy):
    """1.1's flux floors are the guess / 1e5: a guess 1e4 times too high puts them above the
    components' errors, and the fit that rests on them must say so."""
    from imcascade_jax.fitter import initialize_fitter

    f = initialize_fitter(galaxy.img, galaxy.psf, err=galaxy.err, flux=1e6, verbose=False)
    with pytest.warns(UserWarning, match=r"a\d \(lower\)"):
        f.run_ls_min()
    assert f.min_res.status == FitStatus.AT_BOUND and not f.min_res.success
    assert all(name.endswith("(lower)") for name in f.min_res.at_bound)


# -- impossible input ----------------------------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    (lambda a: a.update(lb=UB, ub=LB), "'lb' > 'ub'"),
    (lambda a: a.update(weight=np.zeros(SHAPE)), "'weight' is zero everywhere"),
    (lambda a: a["weight"].__setitem__((3, 4), -1.0), "'weight' must be finite and >= 0"),
    (lambda a: a["weight"].__setitem__((3, 4), np.nan), "'weight' must be finite and >= 0"),
    (lambda a: a["data"].__setitem__((3, 4), np.inf), "'data' is non-finite"),
    (lambda a: a["x0"].__setitem__(0, 35.0), "'x0' lies outside"),
    (lambda a: a["x0"].__setitem__(2, np.nan), "'x0' has non-finite"),
    (lambda a: a.update(weight=np.ones((5, 5))), "'weight' must have the model's shape"),
    (lambda a: a.update(x0=X0[:-1]), "'x0' must have shape"),
])
def test_impossible_input_raises_and_is_bad_input_when_traced(galaxy, model, change, match):
    args = dict(data=galaxy.img.copy(), weight=1.0 / galaxy.err**2, x0=X0.copy(), lb=LB, ub=UB)
    change(args)
    for solver in (core_fit.least_squares, core_fit.least_squares_jit):
        with pytest.raises(ValueError, match=match):
            solver(model, **args)
    if "shape" in match:
        return
    traced = jax.jit(core_fit.least_squares)(model, **args)
    assert int(traced.status) == FitStatus.BAD_INPUT
    np.testing.assert_array_equal(np.asarray(traced.x), args["x0"])


def test_one_bad_galaxy_of_a_vmapped_batch(tiny):
    m, img, weight, x0, lb, ub = tiny
    weights = np.stack([weight, np.zeros_like(weight), weight])
    x0s = np.stack([x0, x0, np.r_[x0[:-1], 5.0]])  # the third starts outside its sky bounds
    res = jax.vmap(core_fit.least_squares, in_axes=(None, None, 0, 0, None, None))(
        m, img, weights, x0s, lb, ub)
    assert [int(s) for s in res.status][1:] == [FitStatus.BAD_INPUT, FitStatus.BAD_INPUT]
    assert int(res.status[0]) > 0
    np.testing.assert_allclose(np.asarray(res.x[0, :2]), [7.6, 8.3], atol=0.02)


def test_status_messages_alias():
    assert core_fit.STATUS_MESSAGES[int(FitStatus.STALLED)] == FitStatus.STALLED.message


# -- the Fitter's result -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted(galaxy):
    f = Fitter(galaxy.img, SIG, PSF_SIG, PSF_A, weight=1.0 / galaxy.err**2, verbose=False,
               init_dict={"re": 3.0, "flux": 100.0},
               bounds_dict={"sky1": [-1e-3, 1e-3], "sky2": [-1e-3, 1e-3]})
    f.run_ls_min()
    return f


def test_result_attribute_typo_raises(fitted):
    res = fitted.min_res
    assert isinstance(res, LeastSquaresResult) and res.success, res.message
    with pytest.raises(AttributeError, match="sucess"):
        _ = res.sucess
    with pytest.raises(KeyError):
        _ = res["sucess"]
    for key in ("x", "jac", "fun", "cost", "chi2", "jtj", "nfev", "njev", "status", "success",
                "message", "at_bound", "at_lower", "at_upper"):
        assert key in dir(res)
        assert getattr(res, key) is res[key]


def test_result_jacobian_is_computed_on_request(fitted):
    res = fitted.min_res
    want = np.asarray(core_fit.jacobian_at(fitted.model, res.x, fitted.weight))
    np.testing.assert_allclose(res.jac, want.reshape(fitted.Ndof, -1).T, rtol=0, atol=0)
    # J^T J from the banded accumulation equals the Jacobian's own product
    np.testing.assert_allclose(res.jtj, res.jac.T @ res.jac, rtol=1e-9,
                               atol=1e-12 * np.abs(res.jtj).max())


# -- unit-free answers -----------------------------------------------------------------------------

SCALES = [1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e20, 1e30]


def _assert_same_answer(x, ref, s):
    """x fitted to (image s, errors s) against ref fitted to (image, errors)."""
    np.testing.assert_allclose(x[:4], ref[:4], rtol=1e-8, atol=0)
    flux, flux_ref = 10 ** (x[4:4 + N] - np.log10(s)), 10 ** ref[4:4 + N]
    total = flux_ref.sum()
    assert flux.sum() == pytest.approx(total, rel=1e-8)
    # Single components to 1e-8 of the total (the faintest, 0.1% of the total, is set by the
    # data only to ~1e-6 of itself: round-off of the inputs moves it that much).
    np.testing.assert_allclose(flux, flux_ref, rtol=0, atol=1e-8 * total)
    np.testing.assert_allclose(x[4 + N:] / s, ref[4 + N:], rtol=0, atol=1e-8 * total / 100)


@pytest.mark.parametrize("s", SCALES)
def test_scale_invariance_least_squares(galaxy, model, reference, s):
    res = fit(model, galaxy.img * s, 1.0 / (galaxy.err * s) ** 2, scaled(X0, s), scaled(LB, s),
              scaled(UB, s))
    assert int(res.status) == int(reference.status)
    assert float(res.chi2) == pytest.approx(float(reference.chi2), rel=1e-10)
    _assert_same_answer(np.asarray(res.x), np.asarray(reference.x), s)


def _fitter_for_scale(galaxy, s):
    init = {k: v for k, v in zip(NAMES, scaled(X0, s), strict=True)}
    bounds = {k: [lo, hi] for k, lo, hi in zip(NAMES, scaled(LB, s), scaled(UB, s), strict=True)}
    return Fitter(galaxy.img * s, SIG, PSF_SIG, PSF_A, weight=1.0 / (galaxy.err * s) ** 2,
                  verbose=False, init_dict=init, bounds_dict=bounds)


@pytest.mark.parametrize("s", [1e-30, 1e-10, 1e20, 1e30])
def test_scale_invariance_fitter(galaxy, reference, s):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a success: no warning
        f = _fitter_for_scale(galaxy, s)
        f.run_ls_min()
    assert f.min_res.success and f.min_res.status == int(reference.status)
    _assert_same_answer(f.min_param, np.asarray(reference.x), s)


# -- banded normal equations ---------------------------------------------------------------------

@pytest.mark.parametrize("sky_type", ["tilted-plane", "flat", None])
def test_bands_sum_to_the_whole(galaxy, sky_type):
    """Cost, J^T J, J^T r and residuals over 3 bands (the last padded by 2 rows) equal the whole's."""
    m = make_model(SHAPE, SIG, PSF_SIG, PSF_A, sky_type=sky_type, log_weight_scale=False)
    n_sky = m.n_sky
    x = jnp.asarray(np.r_[20.3, 19.6, 0.6, 0.7, np.linspace(1.0, 20.0, N), [0.01, 1e-3, -2e-3][:n_sky]])
    sqrt_w = jnp.asarray(1.0 / galaxy.err)
    data = jnp.asarray(galaxy.img)
    whole = band_plan(SHAPE)
    bands = band_plan(SHAPE, 14 * SHAPE[1])
    assert whole.n_bands == 1 and bands.rows * bands.n_bands == 42 and bands.n_bands == 3
    ref = normal_equations(m, core_fit.model_and_jacobian, x, data, sqrt_w, whole)
    got = normal_equations(m, core_fit.model_and_jacobian, x, pad_rows(data, bands),
                           pad_rows(sqrt_w, bands), bands)
    jac = core_fit.jacobian_at(m, x, galaxy.err**-2).reshape(x.size, -1)
    np.testing.assert_allclose(ref.jtj, jac @ jac.T, rtol=1e-12, atol=1e-12 * float(ref.jtj.max()))
    for a, b in ((got.cost, ref.cost), (got.jtj, ref.jtj), (got.grad, ref.grad)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11 * float(jnp.abs(b).max()))
    r_ref = residual_image(m, x, data, sqrt_w, whole)
    r_got = residual_image(m, x, pad_rows(data, bands), pad_rows(sqrt_w, bands), bands)
    assert r_got.shape == SHAPE
    np.testing.assert_allclose(r_got, r_ref, rtol=0, atol=1e-12)
    assert float(ref.cost) == pytest.approx(0.5 * float(jnp.sum(r_ref**2)), rel=1e-12)


def test_banded_jacobian_is_the_whole_images(monkeypatch):
    """The image and Jacobian in bands of rows (last band padded) equal one piece's."""
    m = make_model(SHAPE, SIG, PSF_SIG, PSF_A)
    x = jnp.asarray(np.r_[20.3, 19.6, 0.6, 0.7, np.linspace(0.0, 1.3, N), 0.01, 1e-3, -2e-3])
    assert band_plan(SHAPE, 15 * SHAPE[1]) == (14, 3)  # 42 rows: the last band padded by 2
    piece = core_fit.piece_model_and_jacobian
    # The public function bands by bytes: this budget gives 4 bands of 10 rows.
    per_pixel = 8 * (5 * N * PSF_SIG.size + m.n_params)
    monkeypatch.setattr(normal_equations_module, "JACOBIAN_BAND_BYTES", 10 * SHAPE[1] * per_pixel)
    assert band_plan(SHAPE, normal_equations_module.jacobian_band_pixels(m)) == (10, 4)

    @jax.jit
    def all_three(m, x):
        return (piece(m, x), banded_jacobian(m, piece, x, 15 * SHAPE[1]),
                core_fit.model_and_jacobian(m, x))

    (image, jac), *banded = all_three(m, x)
    assert float(jnp.abs(jac[:4]).max()) > 0.1  # the structural columns are in the check
    for got_image, got_jac in banded:
        assert got_jac.shape == jac.shape
        np.testing.assert_allclose(got_image, image, rtol=0, atol=1e-13 * float(image.max()))
        np.testing.assert_allclose(got_jac, jac, rtol=0, atol=1e-13 * float(jnp.abs(jac).max()))


def test_banded_fit_equals_single_band_fit(galaxy, model, reference):
    res = fit(model, galaxy.img, 1.0 / galaxy.err**2, band_pixels=7 * SHAPE[1])
    assert int(res.status) == int(reference.status)
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(reference.x), rtol=1e-7, atol=1e-9)


def test_fit_at_the_models_precision_floor_is_converged_not_stalled():
    # This galaxy's fit reaches a point where the quadratic model promises a gain of ~1e-9 of
    # chi2 that the rendered model cannot deliver (rejected steps). With ftol = 1e-10 compared
    # to that promise alone the damping blew up and the fit, at its minimum, was reported
    # STALLED; a rejected step's promise is compared with REJECTED_FTOL_FACTOR * ftol.
    g = make_galaxy(shape=(40, 40), re=2.5, flux=80.0, noise=0.01,
                    psf=moffat_psf(size=15, core=1.5), seed=11)
    sig = np.array([0.7, 1.4, 2.8, 5.6, 11.0])
    f = Fitter(g.img, sig, np.array([1.0, 2.5]), np.array([0.7, 0.3]), weight=1 / g.err**2,
               verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a success: no warning
        f.run_ls_min()
    assert f.min_res.status == FitStatus.CONVERGED_FTOL, f.min_res.message
    assert f.min_res.nfev < 40
