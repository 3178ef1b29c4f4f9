"""ASDF files: ours and imcascade 1.1's are interchangeable.

A file written by 1.1's own ``Fitter.save_results`` (a small 1.1 Fitter on a 40x40 image, with
``min_param`` / ``posterior`` set directly rather than fitted) opens in our results class, our
``load_results`` and our ``fitter_from_ASDF``; a file we write opens in 1.1's ImcascadeResults and
gives the same fluxes.
"""

from __future__ import annotations

import asdf
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax import io
from imcascade_jax.results import ImcascadeResults
from imcascade_jax.utils import vars_to_use

SIG = np.logspace(np.log10(0.75), np.log10(12.0), 5)
PSF_SIG, PSF_A = np.array([1.2, 2.5]), np.array([0.7, 0.3])


def _image():
    rng = np.random.default_rng(1)
    img = rng.normal(0.0, 0.01, (40, 40))
    img[17:23, 17:23] += 0.5
    mask = np.zeros((40, 40))
    mask[2:5, 30:34] = 1
    return img, mask


def _params(n_sky: int = 3):
    sky = [1e-3, 1e-5, -1e-5][:n_sky]
    return np.concatenate([[20.0, 20.0, 0.7, 1.0], np.log10([5, 10, 8, 3, 1]), sky])


@pytest.fixture(scope="module")
def file_11(tmp_path_factory):
    """A results file written by imcascade 1.1's Fitter.save_results."""
    pytest.importorskip("imcascade")
    from imcascade.fitter import Fitter as RefFitter

    img, mask = _image()
    fit = RefFitter(img, SIG, PSF_SIG, PSF_A, weight=np.full((40, 40), 1e4), mask=mask, verbose=False)
    fit.min_param = _params()
    fit.posterior = fit.min_param + np.random.default_rng(2).normal(0, 0.01, (200, fit.Ndof))
    fit.post_method, fit.logz, fit.logz_err = "dynesty-express", -100.5, 0.1
    path = tmp_path_factory.mktemp("io") / "from_11.asdf"
    fit.save_results(str(path))
    return path, fit


@pytest.fixture(scope="module")
def ref_results():
    pytest.importorskip("imcascade")
    from imcascade.results import ImcascadeResults as Ref

    return Ref


def test_load_11_file(file_11):
    path, fit = file_11
    tree = io.load_results(path)
    for key in ("img", "weight", "mask", "sig", "psf_sig", "psf_a", "min_param", "posterior"):
        np.testing.assert_array_equal(tree[key], getattr(fit, key))
        assert isinstance(tree[key], np.ndarray)
    assert (tree["Ndof"], tree["Ndof_sky"], tree["Ndof_gauss"]) == (12, 3, 5)
    assert tree["has_psf"] is True and tree["sky_model"] is True and tree["log_weight_scale"] is True
    assert (tree["post_method"], tree["logz"], tree["logz_err"]) == ("dynesty-express", -100.5, 0.1)
    # 1.1 does not record these: implied by Ndof_sky and 1.1's default.
    assert (tree["sky_type"], tree["render_mode"], tree[io.EXTRA_KEY]) == ("tilted-plane", "hybrid", {})
    assert "asdf_library" not in tree and "history" not in tree


def test_results_from_11_file_match_11(file_11, ref_results):
    path, _ = file_11
    ours, ref = ImcascadeResults(str(path)), ref_results(str(path))
    assert ours.obj_type == "file"
    np.testing.assert_allclose(ours.calc_flux(), ref.calc_flux(), rtol=1e-12)
    # 1.1 does not keep its file open: with asdf >= 3 its lazy 'sig' then fails to read, so the
    # profiles are compared with 1.1 working on the same values in memory.
    ref = ref_results(io.load_results(path))
    radii = np.arange(1.0, 20.0)
    np.testing.assert_allclose(ours.calc_cog(radii), ref.calc_cog(radii), rtol=1e-12)
    np.testing.assert_allclose(ours.calc_flux(cutoff=15.0), ref.calc_flux(cutoff=15.0), rtol=1e-12)


def test_11_fitter_from_asdf_fails_with_asdf_3_and_ours_works(file_11):
    # 1.1 calls asdf.open(..., copy_arrays=True), an argument asdf 3 removed.
    from imcascade.fitter import fitter_from_ASDF as ref_fitter_from_asdf

    path, fit = file_11
    if int(asdf.__version__.split(".")[0]) >= 3:
        with pytest.raises(TypeError, match="copy_arrays"):
            ref_fitter_from_asdf(str(path))
    from imcascade_jax import fitter as fitter_mod
    ours = fitter_mod.fitter_from_ASDF(str(path))
    np.testing.assert_array_equal(ours.img, fit.img)
    np.testing.assert_array_equal(ours.mask, fit.mask)
    np.testing.assert_array_equal(ours.posterior, fit.posterior)
    assert (ours.Ndof, ours.sky_type, ours.render_mode) == (12, "tilted-plane", "hybrid")


class _FitterLike:
    """The attributes a Fitter carries, with JAX arrays and NumPy scalars as ours may hold."""

    def __init__(self, n_sky: int = 3, sky_type: str = "tilted-plane"):
        img, mask = _image()
        self.img, self.mask = jnp.asarray(img), mask
        self.weight = np.where(mask > 0, 0.0, 1e4)
        self.sig, self.psf_sig, self.psf_a = SIG, PSF_SIG, jnp.asarray(PSF_A)
        self.Ndof, self.Ndof_sky, self.Ndof_gauss = np.int64(9 + n_sky), n_sky, np.int64(5)
        self.has_psf, self.sky_model, self.log_weight_scale = np.bool_(True), n_sky > 0, True
        self.psf_shape, self.log_file = None, None
        self.min_param = jnp.asarray(_params(n_sky))
        self.posterior = np.asarray(self.min_param) + np.random.default_rng(3).normal(
            0, 0.01, (150, 9 + n_sky)
        )
        self.post_method, self.logz, self.logz_err = "nuts-express", np.float64(-99.0), None
        self.sky_type, self.render_mode, self.likelihood = sky_type, "erf", "poisson"
        self.nuts_diagnostics = {"rhat": jnp.ones(3), "num_divergent": np.int64(0), "backend": "blackjax"}


def test_our_file_opens_in_11(tmp_path, ref_results):
    obj = _FitterLike()
    written = io.save_results(obj, tmp_path / "ours.asdf")
    assert set(written) - {io.EXTRA_KEY} <= set(vars_to_use)
    assert "logz_err" not in written and "psf_shape" not in written  # None: not written
    ref = ref_results(str(tmp_path / "ours.asdf"))
    ours = ImcascadeResults(str(tmp_path / "ours.asdf"))
    np.testing.assert_allclose(ref.calc_flux(), ours.calc_flux(), rtol=1e-12)
    # Small arrays are inline, so 1.1 can still read 'sig' after closing the file.
    np.testing.assert_allclose(ref.calc_flux(cutoff=15.0), ours.calc_flux(cutoff=15.0), rtol=1e-12)
    np.testing.assert_allclose(
        ref.calc_cog(np.arange(1.0, 9.0)), ours.calc_cog(np.arange(1.0, 9.0)), rtol=1e-12
    )
    np.testing.assert_allclose(ours.calc_flux(), (10 ** obj.posterior[:, 4:9]).sum(-1), rtol=1e-14)
    # 1.1 reads our values with the types it writes itself.
    assert isinstance(ref.Ndof, int) and ref.has_psf is True and isinstance(ref.logz, float)


def test_round_trip_with_extras(tmp_path):
    obj = _FitterLike(n_sky=1, sky_type="flat")
    io.save_results(obj, tmp_path / "r.asdf", extras={"note": "test", "render_mode": "gauss"})
    tree = io.load_results(tmp_path / "r.asdf")
    np.testing.assert_array_equal(tree["img"], np.asarray(obj.img))
    np.testing.assert_array_equal(tree["min_param"], np.asarray(obj.min_param))
    assert (tree["Ndof"], tree["Ndof_sky"]) == (10, 1) and type(tree["Ndof"]) is int
    assert tree["has_psf"] is True and type(tree["logz"]) is float
    extra = tree[io.EXTRA_KEY]
    assert extra["version"] and extra["likelihood"] == "poisson" and extra["note"] == "test"
    np.testing.assert_array_equal(extra["nuts_diagnostics"]["rhat"], np.ones(3))
    assert extra["nuts_diagnostics"]["num_divergent"] == 0
    # Extras override attributes; sky type and render mode come back at top level.
    assert (tree["sky_type"], tree["render_mode"]) == ("flat", "gauss")


def test_save_from_dict_and_posterier_spelling(tmp_path):
    params = _params()
    io.save_results(
        {"sig": SIG, "Ndof": 12, "posterier": params[None, :], "min_param": params}, tmp_path / "d.asdf"
    )
    with asdf.open(tmp_path / "d.asdf") as af:
        assert "posterier" not in af.tree  # only 1.1's keys and ours are written
    # Early 1.x files spelled the posterior 'posterier'.
    asdf.AsdfFile({"sig": SIG, "Ndof": 12, "Ndof_gauss": 5, "posterier": params[None, :]}).write_to(
        tmp_path / "old.asdf"
    )
    tree = io.load_results(tmp_path / "old.asdf")
    np.testing.assert_array_equal(tree["posterior"], params[None, :])
    assert (tree["Ndof_sky"], tree["sky_model"]) == (3, True)
    assert ImcascadeResults(str(tmp_path / "old.asdf")).weights.shape == (1, 5)


def test_fitter_save_results_round_trip(tmp_path, ref_results):
    from imcascade_jax import fitter as fitter_mod
    img, mask = _image()
    fit = fitter_mod.Fitter(
        img, SIG, PSF_SIG, PSF_A, weight=np.full((40, 40), 1e4), mask=mask, sky_type="flat", verbose=False
    )
    fit.min_param = _params(1)
    fit.save_results(str(tmp_path / "fit.asdf"))
    back = fitter_mod.fitter_from_ASDF(str(tmp_path / "fit.asdf"))
    assert (back.sky_type, back.Ndof) == ("flat", 10)
    np.testing.assert_array_equal(back.min_param, fit.min_param)
    np.testing.assert_allclose(
        ref_results(str(tmp_path / "fit.asdf")).calc_flux(), ImcascadeResults(fit).calc_flux(), rtol=1e-12
    )


def test_sky_type_for():
    assert [io.sky_type_for(n) for n in (0, 1, 3)] == [None, "flat", "tilted-plane"]


def test_written_files_follow_the_umask_and_write_tree_refuses_existing_files(tmp_path):
    """Files go through a temporary file (created owner-only) renamed into place: the result has
    the permissions of an ordinary new file."""
    import os

    path = tmp_path / "tree.asdf"
    io.write_tree({"sig": SIG}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(FileExistsError, match="overwrite=True"):
        io.write_tree({"sig": 2 * SIG}, path)
    np.testing.assert_array_equal(io.read_tree(path)["sig"], SIG)
    io.write_tree({"sig": 2 * SIG}, path, overwrite=True)
    np.testing.assert_array_equal(io.read_tree(path)["sig"], 2 * SIG)
    assert os.listdir(tmp_path) == ["tree.asdf"]
    with pytest.raises(FileNotFoundError, match="no such results file"):
        io.read_tree(tmp_path / "missing.asdf")
    with pytest.raises(io.ResultsFileError, match="directory"):
        io.read_tree(tmp_path)
