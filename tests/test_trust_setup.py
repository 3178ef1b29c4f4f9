"""The automatic set-up on inputs real data bring: units, masks, deblended targets, faint
targets, far positions, narrow stamps, bad arguments; and the catalog fitter's rows equal to
the per-galaxy ``initialize_fitter(...).run_ls_min()`` with per-galaxy PSFs, in any order.

Synthetic images are small (32x32 - 64x64); the real-image checks are marked slow and read
``../shared/data/real`` (or ``$IMCASCADE_JAX_REAL_DATA``), skipping when it is absent.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from imcascade_jax.defaults import starting_point
from imcascade_jax.errors import NoSourceError
from imcascade_jax.prepare import FLUX_BOUND_FACTOR, WIDTH_FRACTION, prepare_inputs
from imcascade_jax.synthetic import make_galaxy, moffat_psf, sersic_image

# User-facing set-up code: no implicit rank promotion (tests/conftest.py).
pytestmark = pytest.mark.strict_rank

REAL = Path(os.environ.get("IMCASCADE_JAX_REAL_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"))
PSF = moffat_psf(15, core=1.5, power=3.0)


def _quiet_prepare(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_inputs(*args, **kwargs)


@pytest.fixture(scope="module")
def galaxy():
    """Sersic n = 1.5, r_e = 4 px, flux 300, on 48x48 with noise 0.02."""
    return make_galaxy(shape=(48, 48), n=1.5, re=4.0, flux=300.0, q=0.7, phi=0.4, psf=PSF, seed=1,
                       noise=0.02)


def _radius(shape, centre=None):
    c = (shape[0] / 2.0, shape[1] / 2.0) if centre is None else centre
    return np.hypot(*np.meshgrid(np.arange(shape[0]) - c[0], np.arange(shape[1]) - c[1],
                                 indexing="ij"))


# ---------------------------------------------------------------- units


@pytest.mark.parametrize("s", [1e-30, 1e-12, 1e-3, 1e12, 1e30])
def test_setup_does_not_depend_on_the_flux_unit(galaxy, s):
    """image * s, err * s: the same widths, mask and starting shape; fluxes s times.

    (1.1's recipe refused 1e-30 and 1e-12: sep and the absolute sky floors.)
    """
    ref = _quiet_prepare(galaxy.img, None, err=galaxy.err)
    got = _quiet_prepare(galaxy.img * s, None, err=galaxy.err * s)
    np.testing.assert_allclose(got.sig, ref.sig, rtol=1e-6)
    np.testing.assert_array_equal(got.mask, ref.mask)
    np.testing.assert_allclose(got.weight * s**2, ref.weight, rtol=1e-9)
    for key in ("flux", "sky0"):
        assert got.init_dict[key] == pytest.approx(ref.init_dict[key] * s, rel=1e-5)
    sp_ref = starting_point(ref.img, ref.mask, ref.sig, 3, True, ref.init_dict)
    sp_got = starting_point(got.img, got.mask, got.sig, 3, True, got.init_dict)
    np.testing.assert_allclose(sp_got.param_init[:4], sp_ref.param_init[:4], rtol=1e-6)
    np.testing.assert_allclose(sp_got.param_init[4:-3] - np.log10(s), sp_ref.param_init[4:-3],
                               atol=1e-6)
    np.testing.assert_allclose(sp_got.param_init[-3:] / s, sp_ref.param_init[-3:], rtol=1e-5)
    np.testing.assert_allclose(sp_got.ub[4:-3] - np.log10(s), sp_ref.ub[4:-3], atol=1e-6)


def test_faint_units_keep_the_default_starting_point(galaxy):
    """The Fitter's own guesses (no init_dict) on the galaxy in units 1e4 times smaller (total
    flux 0.03, 1e-5 per pixel at its centre): 1.1's absolute sky floor (1e-4 per pixel) made
    the flux guess negative and the Fitter refused the image."""
    from imcascade_jax.fitter import Fitter

    sig = np.geomspace(0.75, 12.0, 6)
    fits = [Fitter(galaxy.img * s, sig, None, None, weight=(galaxy.err * s) ** -2.0, verbose=False)
            for s in (1.0, 1e-4)]
    np.testing.assert_allclose(fits[1].param_init[:4], fits[0].param_init[:4], rtol=1e-9)
    np.testing.assert_allclose(fits[1].param_init[4:-3], fits[0].param_init[4:-3] - 4.0, atol=1e-9)
    np.testing.assert_allclose(fits[1].param_init[-3:], fits[0].param_init[-3:] * 1e-4, rtol=1e-6)


# ---------------------------------------------------------------- masks and targets


def test_deblended_target_is_never_masked():
    """A disk with five bright knots: sep deblends the knots into their own segments, which
    1.1's recipe masked (390 px within 12 px of the centre); they are the target's."""
    shape = (64, 64)
    g = make_galaxy(shape=shape, n=1.0, re=8.0, flux=2000.0, q=0.8, phi=0.3, psf=PSF, seed=3,
                    noise=0.02)
    img = g.img.copy()
    for r, t in [(6, 0.3), (8, 1.9), (10, 3.5), (7, 4.8), (9, 5.9)]:
        img += sersic_image(shape, 32 + r * np.cos(t), 32 + r * np.sin(t), 1.0, 0.8, 40.0, 1.0, 0.0,
                            oversample=4)
    neighbour = sersic_image(shape, 8.0, 54.0, 1.0, 2.0, 300.0, 1.0, 0.0, oversample=4)
    prep = _quiet_prepare(img + neighbour, None, err=g.err)
    assert not np.any(prep.mask[_radius(shape) < 14])
    assert prep.mask[8, 54] == 1.0  # the neighbour is still masked


def test_mask_255_masks_in_the_catalog():
    """uint8 masks of 255 over a bright neighbour mask it (1.1's rule: only 1 masks)."""
    from imcascade_jax.batch import fit_catalog

    g = make_galaxy(shape=(40, 40), n=1.0, re=3.0, flux=300.0, q=0.8, phi=0.3, psf=PSF, seed=2,
                    noise=0.02)
    neighbour = sersic_image((40, 40), 20.0, 33.0, 1.0, 1.0, 1000.0, 1.0, 0.0, oversample=4)
    img = g.img + neighbour
    cover = _radius((40, 40), (20.0, 33.0)) < 8
    mask255 = np.where(cover, 255, 0).astype(np.uint8)
    kw = dict(num_components=5, progress=False, sky_type="flat")
    t255 = fit_catalog([img], PSF, err=[g.err], mask=[mask255], **kw)
    tbool = fit_catalog([img], PSF, err=[g.err], mask=[cover], **kw)
    np.testing.assert_allclose(np.asarray(t255["params"]), np.asarray(tbool["params"]), rtol=1e-10)
    assert t255["status"][0] > 0 and not t255["flag"][0]
    assert t255["chi2_red"][0] < 1.5
    assert t255["flux"][0] == pytest.approx(300.0, rel=0.1)


def test_mask_from_fits_path(galaxy, tmp_path):
    from astropy.io import fits

    mask = np.zeros(galaxy.img.shape, np.uint8)
    mask[:5, :7] = 1
    path = tmp_path / "mask.fits"
    fits.PrimaryHDU(mask).writeto(path)
    from_path = _quiet_prepare(galaxy.img, None, err=galaxy.err, mask=str(path))
    from_array = _quiet_prepare(galaxy.img, None, err=galaxy.err, mask=mask.astype(bool))
    np.testing.assert_array_equal(from_path.mask, from_array.mask)
    assert np.all(from_path.mask[:5, :7] == 1)


# ---------------------------------------------------------------- faint targets, positions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faint_galaxy_is_set_up_without_a_flux(seed):
    """S/N ~ 8 (flux 1.5 in noise 0.02): nothing above 2.5 sigma per pixel; 1.1's recipe
    raised 'sep found no source'."""
    g = make_galaxy(shape=(48, 48), n=1.0, re=3.0, flux=1.5, q=0.8, phi=0.3, psf=PSF, seed=seed,
                    noise=0.02)
    prep = _quiet_prepare(g.img, None, err=g.err)
    assert 0.3 < prep.init_dict["flux"] / 1.5 < 3.0
    assert 1.0 < prep.init_dict["re"] < 6.0
    assert not np.any(prep.mask[_radius((48, 48)) < 5])


def test_far_position_raises_unless_forced(galaxy):
    with pytest.raises(NoSourceError, match="force_position"):
        _quiet_prepare(galaxy.img, None, err=galaxy.err, x0=8.0, y0=40.0)
    with pytest.raises(ValueError, match="x0"):  # NoSourceError is a ValueError
        _quiet_prepare(galaxy.img, None, err=galaxy.err, x0=8.0, y0=40.0)
    with pytest.warns(UserWarning, match="force"):
        prep = prepare_inputs(galaxy.img, None, err=galaxy.err, x0=8.0, y0=40.0,
                              force_position=True, flux=10.0)
    assert (prep.init_dict["x0"], prep.init_dict["y0"]) == (8.0, 40.0)
    near = _quiet_prepare(galaxy.img, None, err=galaxy.err, x0=25.0, y0=23.0)
    assert (near.init_dict["x0"], near.init_dict["y0"]) == (25.0, 23.0)


# ---------------------------------------------------------------- widths, bounds, sky


def test_widths_capped_by_the_image(galaxy):
    """8 x sep's size would reach past the stamp; the widest width is at most WIDTH_FRACTION of
    the half-size of the shorter side."""
    big = make_galaxy(shape=(40, 56), n=1.0, re=9.0, flux=3000.0, psf=PSF, seed=4, noise=0.02)
    prep = _quiet_prepare(big.img, None, err=big.err)
    assert prep.sig[-1] == pytest.approx(WIDTH_FRACTION * 40 / 2)
    assert prep.sig[0] == pytest.approx(0.75)


def test_flux_upper_bound_is_a_safety_net(galaxy):
    from imcascade_jax.fitter import initialize_fitter

    f = initialize_fitter(galaxy.img, None, err=galaxy.err, verbose=False)
    flux = f.init_dict["flux"]
    np.testing.assert_allclose(f.ub[4:4 + len(f.sig)], np.log10(FLUX_BOUND_FACTOR * flux))
    np.testing.assert_allclose(f.lb[4:4 + len(f.sig)], np.log10(flux) - 5.0)


def test_narrow_stamp_warns_about_the_tilted_plane():
    g = make_galaxy(shape=(96, 40), n=1.0, re=3.0, flux=300.0, psf=PSF, seed=5, noise=0.02)
    with pytest.warns(UserWarning, match="degenerate"):
        prepare_inputs(g.img, None, err=g.err)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_inputs(g.img, None, err=g.err, sky_type="flat")


# ---------------------------------------------------------------- clear errors


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"im": np.ones((1, 1))}, "'im'"),
    ({"im": np.ones((0, 0))}, "'im'"),
    ({"exp_time": 0.0, "gain": 2.0, "readnoise": 3.0}, "exp_time"),
    ({"exp_time": 10.0, "gain": -2.0, "readnoise": 3.0}, "gain"),
    ({"exp_time": 10.0, "gain": 2.0}, "readnoise"),
    ({"x0": np.nan}, "x0"),
    ({"y0": 1e4}, "y0"),
    ({"num_components": 3.7}, "num_components"),
    ({"num_components": 0}, "num_components"),
    ({"re": -1.0}, "'re'"),
    ({"mask": "missing-file.fits"}, "mask"),
])
def test_bad_arguments_name_themselves(galaxy, kwargs, match):
    args = {"im": galaxy.img, "psf": None, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        _quiet_prepare(**args)


@pytest.mark.parametrize(("init", "bounds", "match"), [
    (None, {"q": 0.5}, r"bounds_dict\['q'\]"),
    (None, {"q": [0.8, 0.2]}, r"bounds_dict\['q'\]"),
    (None, {"X0": [1.0, 2.0]}, "unknown key 'X0'"),
    ({"x0": None}, None, r"init_dict\['x0'\]"),
    ({"X0": 10.0}, None, "unknown key 'X0'"),
    ({"q": "half"}, None, r"init_dict\['q'\]"),
    ({"a9": 1.0}, None, "a9"),
])
def test_bad_init_and_bounds_dicts(galaxy, init, bounds, match):
    sig = np.geomspace(0.75, 10.0, 5)
    with pytest.raises(ValueError, match=match):
        starting_point(galaxy.img, np.zeros(galaxy.img.shape), sig, 3, True, init, bounds)


def test_image_paths_are_accepted(galaxy, tmp_path):
    from astropy.io import fits

    path = tmp_path / "img.fits"
    fits.PrimaryHDU(galaxy.img).writeto(path)
    err_path = tmp_path / "err.fits"
    fits.PrimaryHDU(galaxy.err).writeto(err_path)
    a = _quiet_prepare(str(path), None, err=str(err_path))
    b = _quiet_prepare(galaxy.img, None, err=galaxy.err)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.sig, b.sig)


# ---------------------------------------------------------------- real images


REAL_IMAGES = [
    ("imfit_ic3478/ic3478rss_256.fits", 30),
    ("petrofit_a2744/abell_2744_spiral_galaxy_f105w.fits.gz", 30),
    ("petrofit_a2744/abell_2744_dwarf_galaxy_f105w.fits.gz", 10),
    ("pysersic_gals/gal1_im.npy", 10),
    ("pysersic_gals/gal2_im.npy", 10),
    ("profit_gama/KiDS/G265940fitim.fits", 10),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "radius"), REAL_IMAGES,
                         ids=[n.split("/")[-1] for n, _ in REAL_IMAGES])
def test_real_target_not_masked(name, radius):
    """The automatic mask leaves the target's own footprint alone on real images (the whole
    central segment, and at least ``radius`` px about the centre)."""
    path = REAL / name
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    from astropy.io import fits

    img = np.load(path) if name.endswith(".npy") else fits.getdata(path)
    prep = _quiet_prepare(np.asarray(img, float), None)
    assert not np.any(prep.mask[_radius(img.shape) < radius])
    assert prep.sig[-1] <= WIDTH_FRACTION * min(img.shape) / 2 + 1e-9
