"""Tests of imcascade_jax.batch.fit_catalog: statuses, parity with the per-galaxy Fitter,
accuracy, compile reuse, per-galaxy PSFs, buckets, Dask and devices.

All fast tests share one small catalog (6 cutouts of 32x32, 5 components, batch size 4), so the
batched fit compiles once per module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from scipy.signal import fftconvolve

from imcascade_jax import fit as F
from imcascade_jax.batch import (
    STATUS_BAD_INPUT,
    batch_function,
    choose_batch_size,
    common_plan,
    default_strategy,
    fit_catalog,
)
from imcascade_jax.synthetic import moffat_psf, sersic_image

SHAPE = (32, 32)
N_GAL = 6
NAN_INDEX = 2
MASKED_INDEX = 4
KW = dict(num_components=5, batch_size=4, progress=False)


def make_small_catalog(n: int = N_GAL, shape=SHAPE, seed: int = 3):
    """Small synthetic catalog: images, errors, mask, PSF, truth; galaxy 2 all-NaN, 4 all-masked
    (when there are more than 4)."""
    rng = np.random.default_rng(seed)
    psf = moffat_psf(11, core=1.5, power=3.0)
    imgs = np.empty((n, *shape))
    truth = []
    for i in range(n):
        t = dict(n=rng.uniform(0.8, 2.0), re=rng.uniform(2.0, 3.0), q=rng.uniform(0.5, 1.0),
                 phi=rng.uniform(0, np.pi), flux=rng.uniform(200, 800))
        clean = sersic_image(shape, shape[0] / 2, shape[1] / 2, t["n"], t["re"], t["flux"], t["q"],
                             t["phi"], oversample=8)
        imgs[i] = fftconvolve(clean, psf, mode="same") + rng.normal(0, 0.02, shape)
        truth.append(t)
    mask = np.zeros(imgs.shape)
    if n > MASKED_INDEX:
        imgs[NAN_INDEX] = np.nan
        mask[MASKED_INDEX] = 1.0
    return imgs, np.full(imgs.shape, 0.02), mask, psf, truth


@pytest.fixture(scope="module")
def catalog():
    return make_small_catalog()


@pytest.fixture(scope="module")
def table(catalog):
    imgs, errs, mask, psf, _ = catalog
    return fit_catalog(imgs, psf, err=errs, mask=mask, **KW)


def test_table_rows_and_columns(table):
    assert len(table) == N_GAL
    assert list(table["id"]) == list(range(N_GAL))
    for col in ("id", "status", "message", "flag", "x0", "y0", "q", "phi", "flux", "mag", "r20", "r50",
                "r80", "r90", "C80_20", "C90_50", "chi2", "chi2_red", "n_iter", "params", "sig"):
        assert col in table.colnames, col
    assert table["params"].shape == (N_GAL, 4 + 5 + 3)
    assert table.meta["BATCHSZ"] == 4


def test_bad_cutouts_flagged_others_not(table):
    status = np.asarray(table["status"])
    assert status[NAN_INDEX] == STATUS_BAD_INPUT
    assert status[MASKED_INDEX] == STATUS_BAD_INPUT
    good = np.ones(N_GAL, bool)
    good[[NAN_INDEX, MASKED_INDEX]] = False
    assert np.all(status[good] > 0), table["status", "message"]
    assert list(np.flatnonzero(table["flag"])) == [NAN_INDEX, MASKED_INDEX]
    for col in ("flux", "r50", "x0", "chi2"):
        assert np.all(np.isnan(np.asarray(table[col])[~good]))
        assert np.all(np.isfinite(np.asarray(table[col])[good]))
    assert "no usable pixel" in table["message"][NAN_INDEX]


def test_accuracy_against_truth(table, catalog):
    truth = catalog[4]
    good = ~np.asarray(table["flag"])
    flux = np.array([t["flux"] for t in truth])[good]
    re = np.array([t["re"] for t in truth])[good]
    assert np.median(np.abs(np.asarray(table["flux"])[good] / flux - 1)) < 0.05
    assert np.median(np.abs(np.asarray(table["r50"])[good] / re - 1)) < 0.08
    np.testing.assert_allclose(np.asarray(table["x0"])[good], SHAPE[0] / 2, atol=0.1)
    np.testing.assert_allclose(table["mag"], -2.5 * np.log10(table["flux"]))


def test_matches_per_galaxy_fitter(table, catalog):
    """A batched fit is the fit initialize_fitter + run_ls_min gives (same recipe, same solver)."""
    from imcascade_jax.fitter import initialize_fitter
    from imcascade_jax.results import ImcascadeResults

    imgs, errs, mask, psf, _ = catalog
    i = 0
    fitter = initialize_fitter(imgs[i], psf, err=errs[i], mask=mask[i], num_components=5,
                               verbose=False)
    fitter.run_ls_min()
    row = table[i]
    np.testing.assert_allclose(row["sig"], fitter.sig, rtol=1e-12)
    np.testing.assert_allclose(row["psf_sig"], fitter.psf_sig, rtol=1e-10)
    np.testing.assert_allclose(row["params"], fitter.min_param, rtol=1e-6, atol=1e-7)
    assert row["n_iter"] == fitter.min_res.nfev
    ana = ImcascadeResults(fitter).run_basic_analysis()
    assert row["flux"] == pytest.approx(ana["flux"], rel=1e-6)
    assert row["r50"] == pytest.approx(ana["r50"], rel=1e-6)


def test_second_call_does_not_recompile(table, catalog):
    imgs, errs, mask, psf, _ = catalog
    fn = batch_function(F.SolverOptions(), True, default_strategy())
    before = fn._cache_size()
    again = fit_catalog(imgs, psf, err=errs, mask=mask, **KW)
    assert fn._cache_size() == before
    np.testing.assert_array_equal(np.asarray(again["params"]), np.asarray(table["params"]))


def test_vmap_and_map_strategies_agree(table, catalog):
    """The CPU default ('map': one galaxy after the other) and the accelerator default ('vmap')
    are the same fits: each galaxy's solver stops at its own convergence either way."""
    imgs, errs, mask, psf, _ = catalog
    assert default_strategy() == ("map" if jax.devices()[0].platform == "cpu" else "vmap")
    other = "vmap" if default_strategy() == "map" else "map"
    t_other = fit_catalog(imgs, psf, err=errs, mask=mask, strategy=other, **KW)
    np.testing.assert_array_equal(np.asarray(t_other["status"]), np.asarray(table["status"]))
    np.testing.assert_array_equal(np.asarray(t_other["n_iter"]), np.asarray(table["n_iter"]))
    np.testing.assert_allclose(np.asarray(t_other["params"]), np.asarray(table["params"]),
                               rtol=1e-9, atol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="strategy"):
        fit_catalog(imgs, psf, err=errs, strategy="pmap", **KW)


def test_variance_and_weight_inputs_agree(table, catalog):
    imgs, errs, mask, psf, _ = catalog
    t_var = fit_catalog(imgs, psf, var=errs**2, mask=mask, **KW)
    t_w = fit_catalog(imgs, psf, weight=errs**-2, mask=mask, **KW)
    for t in (t_var, t_w):
        np.testing.assert_allclose(np.asarray(t["params"]), np.asarray(table["params"]),
                                   rtol=1e-9, atol=1e-9, equal_nan=True)


def test_list_input_and_ids(table, catalog):
    imgs, errs, mask, psf, _ = catalog
    ids = [f"g{i}" for i in range(N_GAL)]
    t = fit_catalog(list(imgs), psf, err=list(errs), mask=list(mask), ids=ids, **KW)
    assert list(t["id"]) == ids
    np.testing.assert_allclose(np.asarray(t["flux"]), np.asarray(table["flux"]), equal_nan=True)


def test_input_validation(catalog):
    imgs, errs, mask, psf, _ = catalog
    with pytest.raises(ValueError, match="at most one of"):
        fit_catalog(imgs, psf, err=errs, var=errs**2)
    with pytest.raises(ValueError, match="'err'"):
        fit_catalog(imgs, psf, err=errs[:3])
    with pytest.raises(ValueError, match="'mask\\[0\\]'"):
        fit_catalog(imgs, psf, mask=mask[:, :10])
    with pytest.raises(ValueError, match="'psf'"):
        fit_catalog(imgs, np.stack([psf] * 3))
    with pytest.raises(ValueError, match="'images'"):
        fit_catalog(np.zeros((4, 4)), psf)
    with pytest.raises(ValueError, match="sky_type"):
        fit_catalog(imgs, psf, sky_type="curved")
    with pytest.raises(ValueError, match="ids"):
        fit_catalog(imgs, psf, ids=[1, 2])
    with pytest.raises(ValueError, match="unknown least-squares option 'loss' in 'options'"):
        fit_catalog(imgs, psf, err=errs, options={"loss": "soft_l1"})


def test_common_plan_covers_every_galaxy():
    rng = np.random.default_rng(0)
    sig = np.sort(rng.uniform(0.5, 30, (5, 6)), axis=1)
    psf_sig = rng.uniform(1.0, 3.0, (5, 3))
    windows, exact = common_plan(sig, psf_sig, 1.0, (80, 80), True)
    # Full frame for every component: the closed-form Jacobian needs it.
    assert windows == (-1,) * 6 and len(exact) == 6
    assert not any(exact)  # every PSF component is >= 1 px wide: no exact integrals
    psf_sig[2, 1] = 0.71  # above HYBRID_EXACT_BELOW = 0.7 for every galaxy: still none
    assert not any(common_plan(sig, psf_sig, 1.0, (80, 80), True)[1])
    psf_sig[2, 1] = 0.69  # one galaxy's PSF can make a component narrower: exact for all
    assert all(common_plan(sig, psf_sig, 1.0, (80, 80), True)[1])
    assert all(common_plan(sig, psf_sig, 1.0, (80, 80), False)[1])


def test_choose_batch_size():
    import jax

    from imcascade_jax import catalog_batches

    small = choose_batch_size((32, 32), 5, 2, 12, n_galaxies=1000)
    big = choose_batch_size((512, 512), 9, 4, 16, n_galaxies=1000, max_batch=10**6)
    # Small cutouts: the CPU cap; large ones: what the memory budget (less one compilation)
    # holds of one fit's estimated peak memory, the estimate tests/test_fit_memory.py checks
    # against a measured peak.
    from imcascade_jax import fit as core_fit
    from imcascade_jax.model import make_model

    assert small == 16
    budget = catalog_batches._memory_budget(jax.devices()[0]) - core_fit.COMPILE_BYTES
    model = make_model((512, 512), np.geomspace(1, 40, 9), np.ones(4), np.full(4, 0.25))
    per_galaxy = core_fit.fit_memory_bytes(model, compile=False)
    assert per_galaxy > 512 * 512 * 80  # at least the solver's per-pixel copies
    assert big == max(1, budget // per_galaxy)
    assert choose_batch_size((32, 32), 5, 2, 12, n_galaxies=3) <= 3


def test_psf_decomposition_per_galaxy():
    """Distinct PSFs decomposed once each, with a fixed number of Gaussians; bad PSFs reported
    as a PSFError (a ValueError), no PSF as None."""
    from imcascade_jax.catalog_setup import decompose_psfs
    from imcascade_jax.errors import PSFError

    a, b = moffat_psf(11, core=1.5, power=3.0), moffat_psf(11, core=2.0, power=3.0)
    bad = np.full((11, 11), np.nan)
    out = decompose_psfs([a, b, a, bad, None], 2, 1.0)
    assert [len(o[0]) for o in out[:3]] == [2, 2, 2]
    np.testing.assert_array_equal(out[0][0], out[2][0])
    assert not np.allclose(out[0][0], out[1][0])
    np.testing.assert_allclose([o[1].sum() for o in out[:3]], 1.0)
    assert isinstance(out[3], PSFError) and "non-finite" in str(out[3])
    assert out[4] is None


def test_bad_psf_flags_only_its_galaxy(table, catalog):
    imgs, errs, mask, psf, _ = catalog
    psfs = np.stack([psf] * N_GAL)
    psfs[5] = np.nan
    # Same number of PSF components (auto_fit's choice for the first PSF) and widths: one compile.
    t = fit_catalog(imgs, psfs, err=errs, mask=mask, **KW)
    assert t["status"][5] == STATUS_BAD_INPUT and "PSF" in t["message"][5]
    np.testing.assert_allclose(np.asarray(t["params"])[[0, 1, 3]],
                               np.asarray(table["params"])[[0, 1, 3]], rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_per_galaxy_psfs(catalog):
    """A (B, h, w) PSF cube: each distinct PSF decomposed with a fixed number of Gaussians."""
    imgs, errs, mask, psf, _ = catalog
    psfs = np.stack([psf if i % 2 == 0 else moffat_psf(11, core=1.7, power=3.0)
                     for i in range(N_GAL)])
    t = fit_catalog(imgs, psfs, err=errs, mask=mask, psf_components=2, **KW)
    assert t["psf_sig"].shape == (N_GAL, 2)
    assert not np.allclose(t["psf_sig"][0], t["psf_sig"][1])
    np.testing.assert_allclose(t["psf_sig"][0], t["psf_sig"][2])
    np.testing.assert_allclose(np.sum(np.asarray(t["psf_a"]), axis=1), 1.0)
    assert list(np.flatnonzero(t["flag"])) == [NAN_INDEX, MASKED_INDEX]


def test_dask_local_cluster_same_table(catalog):
    distributed = pytest.importorskip("dask.distributed")
    imgs, errs, mask, psf, _ = catalog
    # Two copies of the catalog: 8 good cutouts, two batches of 4, the compiled shape and plan of
    # the module's table (duplicates do not change the bucket's common plan).
    imgs, errs, mask = (np.concatenate([a, a]) for a in (imgs, errs, mask))
    kw = KW
    local = fit_catalog(imgs, psf, err=errs, mask=mask, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = fit_catalog(imgs, psf, err=errs, mask=mask, client=client, **kw)
    assert remote.colnames == local.colnames
    for col in local.colnames:
        a, b = np.asarray(local[col]), np.asarray(remote[col])
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=0, equal_nan=True, err_msg=col)
        else:
            np.testing.assert_array_equal(b, a, err_msg=col)


@pytest.mark.slow
def test_dask_local_cluster_processes(catalog):
    """Two worker processes (each compiles once), the table equal to the local one."""
    distributed = pytest.importorskip("dask.distributed")
    imgs, errs, mask, psf, _ = catalog
    kw = dict(KW, batch_size=2)
    local = fit_catalog(imgs, psf, err=errs, mask=mask, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = fit_catalog(imgs, psf, err=errs, mask=mask, client=client, **kw)
    np.testing.assert_allclose(np.asarray(remote["params"]), np.asarray(local["params"]),
                               rtol=1e-10, equal_nan=True)
    np.testing.assert_array_equal(np.asarray(remote["status"]), np.asarray(local["status"]))


@pytest.mark.slow
def test_mixed_sizes_are_bucketed(catalog):
    imgs, errs, mask, psf, _ = catalog
    small, s_err, _, _, _ = make_small_catalog(3, shape=(24, 24), seed=5)
    cutouts = [imgs[0], small[0], imgs[1], small[1]]
    errors = [errs[0], s_err[0], errs[1], s_err[1]]
    t = fit_catalog(cutouts, psf, err=errors, num_components=5, progress=False)
    assert list(t["id"]) == [0, 1, 2, 3]
    assert np.all(np.asarray(t["status"]) > 0)
    one = fit_catalog(imgs[:2], psf, err=errs[:2], num_components=5, progress=False)
    np.testing.assert_allclose(np.asarray(t["params"])[[0, 2]], np.asarray(one["params"]), rtol=1e-6)


@pytest.mark.slow
def test_float32_close_to_float64(table, catalog):
    imgs, errs, mask, psf, _ = catalog
    t32 = fit_catalog(imgs, psf, err=errs, mask=mask, dtype="float32", **KW)
    assert t32.meta["DTYPE"] == "float32"
    good = ~np.asarray(table["flag"])
    assert np.all(np.asarray(t32["status"])[good] > 0)
    # The same optimum: chi2 within 0.05 (float32 sums 1000 pixels to ~1e-2; a statistically
    # distinguishable fit differs by ~1). Along the flat direction where the widest component
    # trades light with the sky, fluxes may still differ by a few 1e-3 (galaxy 1: 0.2% at
    # delta chi2 = 0.002), far inside their statistical errors.
    np.testing.assert_allclose(np.asarray(t32["chi2"])[good], np.asarray(table["chi2"])[good],
                               rtol=0, atol=0.05)
    np.testing.assert_allclose(np.asarray(t32["flux"])[good], np.asarray(table["flux"])[good],
                               rtol=5e-3)
    np.testing.assert_allclose(np.asarray(t32["r50"])[good], np.asarray(table["r50"])[good],
                               rtol=5e-3)


@pytest.mark.slow
def test_sharded_across_two_cpu_devices(tmp_path):
    """With two (forced) CPU devices the batches are sharded and the table is unchanged."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import jax, numpy as np
        from test_batch import make_small_catalog, KW
        from imcascade_jax.batch import fit_catalog
        assert len(jax.devices()) == 2
        imgs, errs, mask, psf, _ = make_small_catalog()
        two = fit_catalog(imgs, psf, err=errs, mask=mask, **KW)
        one = fit_catalog(imgs, psf, err=errs, mask=mask, devices=jax.devices()[:1], **KW)
        np.testing.assert_allclose(np.asarray(two["params"]), np.asarray(one["params"]),
                                   rtol=1e-10, equal_nan=True)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


# ---------------------------------------------------------------- per-galaxy set-up, arguments


def _two_gaussian_psf(size: int, sig=(1.0, 3.0), frac=(0.7, 0.3)) -> np.ndarray:
    r2 = np.add.outer((np.arange(size) - size // 2) ** 2, (np.arange(size) - size // 2) ** 2)
    psf = sum(f * np.exp(-0.5 * r2 / s**2) / s**2 for s, f in zip(sig, frac, strict=True))
    return psf / psf.sum()


@pytest.fixture(scope="module")
def mixed_catalog():
    """Three cutouts of different shapes, each with its own PSF (different stamp sizes and
    numbers of Gaussians), one with a given position."""
    shapes = [(32, 32), (36, 30), (30, 34)]
    psfs = [moffat_psf(11, core=1.5, power=3.0), _two_gaussian_psf(15), moffat_psf(13, core=2.2, power=2.5)]
    rng = np.random.default_rng(11)
    imgs, errs = [], []
    for k, (shape, psf) in enumerate(zip(shapes, psfs, strict=True)):
        centre = (shape[0] / 2 + (2.0 if k == 2 else 0.0), shape[1] / 2)
        clean = sersic_image(shape, *centre, 1.2, 2.5, 400.0, 0.6, 0.5 + k, oversample=8)
        imgs.append(fftconvolve(clean, psf, mode="same") + rng.normal(0, 0.02, shape))
        errs.append(np.full(shape, 0.02))
    return imgs, errs, psfs, [None, None, shapes[2][0] / 2 + 2.0], [None, None, shapes[2][1] / 2]


@pytest.mark.slow
def test_per_galaxy_psfs_and_shapes_match_initialize_fitter_in_any_order(mixed_catalog):
    """Every row is initialize_fitter(...).run_ls_min() of that galaxy (to 1e-6), with PSFs of
    different component counts and cutouts of different shapes, whatever the catalog's order."""
    from imcascade_jax.fitter import initialize_fitter

    imgs, errs, psfs, x0, y0 = mixed_catalog
    table = fit_catalog(imgs, psfs, err=errs, x0=x0, y0=y0, progress=False)
    n_psf = [int(np.sum(np.isfinite(row))) for row in np.asarray(table["psf_sig"])]
    assert len(set(n_psf)) > 1  # the PSFs really differ in their number of Gaussians
    for i in range(3):
        f = initialize_fitter(imgs[i], psfs[i], err=errs[i], x0=x0[i], y0=y0[i], verbose=False)
        f.run_ls_min()
        assert table["status"][i] == f.min_res.status
        np.testing.assert_allclose(np.asarray(table["psf_sig"][i])[:n_psf[i]], f.psf_sig, rtol=1e-12)
        n = len(f.sig)
        params = np.asarray(table["params"][i])
        np.testing.assert_allclose(params[:4 + n], f.min_param[:4 + n], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(params[-3:], f.min_param[-3:], rtol=1e-6, atol=1e-9)
    order = [2, 0, 1]
    shuffled = fit_catalog([imgs[k] for k in order], [psfs[k] for k in order],
                           err=[errs[k] for k in order], x0=[x0[k] for k in order],
                           y0=[y0[k] for k in order], ids=order, progress=False)
    for j, k in enumerate(order):
        np.testing.assert_allclose(np.asarray(shuffled["params"][j]), np.asarray(table["params"][k]),
                                   rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": -3}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"num_components": 3.7}, "num_components"),
    ({"psf_components": 0}, "psf_components"),
    ({"psf_oversamp": 0.0}, "psf_oversamp"),
    ({"zpt": np.nan}, "zpt"),
    ({"render_mode": "fast"}, "render_mode"),
    ({"dtype": "int32"}, "dtype"),
    ({"devices": []}, "devices"),
    ({"x0": [1.0, 2.0]}, "x0"),
    ({"options": 3}, "options"),
])
def test_bad_arguments_raise_before_any_setup(catalog, kwargs, match):
    imgs, errs, mask, psf, _ = catalog
    with pytest.raises((ValueError, TypeError), match=match):
        fit_catalog(imgs, psf, err=errs, progress=False, **kwargs)


def test_table_flags_every_non_success_with_its_message():
    """Solver codes the table has never seen (STALLED, NO_PROGRESS, AT_BOUND) are flagged and
    described by imcascade_jax.status.describe."""
    from imcascade_jax.catalog_setup import Galaxy
    from imcascade_jax.catalog_table import make_table
    from imcascade_jax.status import FitStatus, describe

    codes = [FitStatus.CONVERGED_FTOL, FitStatus.STALLED, FitStatus.NO_PROGRESS, FitStatus.AT_BOUND,
             FitStatus.MAX_STEPS]
    sig = np.array([1.0, 2.0])
    gals = [Galaxy(i, sig=sig, n_good=100) for i in range(len(codes))]
    gals.append(Galaxy(len(codes), int(FitStatus.NO_SOURCE), "bad input: no source found: none"))
    x = np.array([10.0, 10.0, 0.5, 1.0, 1.0, 1.5, 0.0, 0.0, 0.0])
    res = {i: {"x": x, "chi2": np.array(90.0), "n_steps": np.array(5), "status": np.array(int(c)),
               **{k: np.array(1.0) for k in ("flux", "r20", "r50", "r80", "r90", "C80_20", "C90_50")}}
           for i, c in enumerate(codes)}
    t = make_table(gals, res, list(range(len(gals))), 0.0, "tilted-plane")
    assert list(t["flag"]) == [False, True, True, True, True, True]
    assert list(t["message"][:5]) == [describe(int(c)) for c in codes]
    assert t["status"][5] == FitStatus.NO_SOURCE and "no source" in t["message"][5]
    assert t["chi2_red"][0] == pytest.approx(90.0 / (100 - 9))


def test_setup_errors_classified_by_type():
    from imcascade_jax.catalog_setup import status_of
    from imcascade_jax.errors import NoSourceError, NoUsablePixelsError, PSFError, SetupError
    from imcascade_jax.status import FitStatus

    assert status_of(NoUsablePixelsError("x")) == FitStatus.BAD_INPUT
    assert status_of(PSFError("x")) == FitStatus.BAD_INPUT
    assert status_of(NoSourceError("no source, said the message")) == FitStatus.NO_SOURCE
    assert status_of(SetupError("no source")) == FitStatus.SETUP_FAILED  # the type decides
    assert status_of(ValueError("no source")) == FitStatus.SETUP_FAILED


def test_cutout_inputs_accept_masked_arrays_and_paths(tmp_path):
    from astropy.io import fits

    from imcascade_jax.catalog_inputs import as_cutouts, positions

    a = np.ma.masked_array(np.ones((8, 9)), mask=np.eye(8, 9, dtype=bool))
    path = tmp_path / "b.fits"
    fits.PrimaryHDU(np.full((10, 7), 2.0)).writeto(path)
    imgs = as_cutouts("images", [a, str(path)], None)
    assert isinstance(imgs[0], np.ma.MaskedArray) and imgs[1].shape == (10, 7)
    shapes = [im.shape for im in imgs]
    with pytest.raises(ValueError, match=r"'mask\[1\]'"):
        as_cutouts("mask", [np.zeros((8, 9)), np.zeros((7, 10))], shapes)
    with pytest.raises(TypeError, match="'err'"):
        as_cutouts("err", "errors.fits", shapes)
    assert positions([3.0, None], None, 2) == [(3.0, None), (None, None)]
