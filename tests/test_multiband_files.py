"""ASDF files of joint multi-band fits: one file with every band, read back by ImcascadeResults."""

from __future__ import annotations

import os
import sys

import asdf
import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from multiband_cases import BANDS, SIG, TRUE_FLUX, truth_fitter  # noqa: E402

from imcascade_jax import ImcascadeResults  # noqa: E402
from imcascade_jax.io import ResultsFileError  # noqa: E402
from imcascade_jax.multiband.files import fitter_from_file  # noqa: E402
from imcascade_jax.multiband.model import render_bands  # noqa: E402
from imcascade_jax.multiband.results import MultiBandResults  # noqa: E402

ZPT = {"g": 22.5, "r": 22.4, "z": 22.1}


@pytest.fixture(scope="module", params=[False, True], ids=["least-squares", "posterior"])
def saved(request, tmp_path_factory):
    fitter = truth_fitter(posterior=request.param, zpt=ZPT)
    path = tmp_path_factory.mktemp("mb") / "joint.asdf"
    fitter.save_results(path)
    return fitter, path


def test_file_holds_every_band(saved):
    fitter, path = saved
    with asdf.open(path) as af:
        tree = af.tree
        assert list(tree["bands"]) == ["g", "r", "z"] and tree["ref_band"] == "g"
        assert tree["imcascade_jax"]["kind"] == "multiband"
        np.testing.assert_array_equal(tree["sig"], SIG)
        for name, band in BANDS.items():
            entry = tree["band"][name]
            np.testing.assert_array_equal(entry["img"], fitter.img[name])
            np.testing.assert_array_equal(entry["weight"], fitter.weight[name])
            np.testing.assert_array_equal(entry["flux"], TRUE_FLUX[name])
            np.testing.assert_allclose(entry["A"], band.A, rtol=0, atol=1e-15)
            np.testing.assert_allclose(entry["t"], band.t, rtol=0, atol=1e-15)
            np.testing.assert_array_equal(entry["psf_sig"], band.psf_sig)
            assert entry["psf_q"] == band.psf_q
        assert tree["zpt"] == ZPT
        assert float(tree["geometry"]["q"]) == 0.6
        assert ("posterior" in tree) == (fitter.posterior is not None)
        if fitter.posterior is not None:
            np.testing.assert_array_equal(tree["posterior"]["flux"], fitter.posterior.flux)
            assert tree["posterior"]["kind"] == "ExpressSamples"
    # No top-level single-band keys: imcascade 1.1 cannot take the file for a single-band fit.
    assert "min_param" not in tree and "img" not in tree


def test_results_from_file_equal_results_from_fitter(saved):
    fitter, path = saved
    res = ImcascadeResults(path)
    assert isinstance(res, MultiBandResults)
    direct, read = ImcascadeResults(fitter).run_basic_analysis(), res.run_basic_analysis()
    assert direct.keys() == read.keys() and "mag" in read
    for key in direct:
        for band in BANDS:
            np.testing.assert_array_equal(read[key][band], direct[key][band])
    r = np.array([1.0, 4.0, 10.0])
    np.testing.assert_array_equal(res.calc_color_profile("g", "z", r),
                                  ImcascadeResults(fitter).calc_color_profile("g", "z", r))
    # The truth's g-band flux: the sum of its components.
    total = read["flux"]["g"] if fitter.posterior is None else read["flux"]["g"][0]
    assert total == pytest.approx(sum(TRUE_FLUX["g"]), rel=0.01 if fitter.posterior else 1e-12)


def test_rebuilt_fitter_renders_the_same_models(saved):
    fitter, path = saved
    again = fitter_from_file(path)
    assert again.names == fitter.names and again.ref_band == "g" and again.zpt == ZPT
    render = jax.jit(render_bands)  # one compilation for both (same structure)
    params = again.ls_result.params
    for name in ("x0", "y0", "q", "phi", "flux"):
        np.testing.assert_array_equal(getattr(params, name), getattr(fitter.ls_result.params, name))
    for a, b in zip(render(again.model, params), render(fitter.model, params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(again.lb, fitter.lb)
    np.testing.assert_array_equal(again.ub, fitter.ub)
    # every field of the least-squares result, by name (not by position)
    for key in ("chi2", "chi2_bands", "hessian", "n_steps", "status"):
        np.testing.assert_array_equal(np.asarray(getattr(again.ls_result, key)),
                                      np.asarray(getattr(fitter.ls_result, key)), err_msg=key)


def test_overwrite_is_refused_before_any_work(saved, monkeypatch):
    fitter, path = saved
    before = path.read_bytes()
    from imcascade_jax.multiband import files

    def fail(_):
        raise AssertionError("the tree was built before the check")

    monkeypatch.setattr(files, "multiband_tree", fail)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitter.save_results(path)
    assert path.read_bytes() == before


def test_overwrite_replaces_atomically(saved, tmp_path):
    fitter, _ = saved
    path = tmp_path / "again.asdf"
    fitter.save_results(path)
    fitter.save_results(path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["again.asdf"]  # no temporary file left


def test_corrupted_and_incomplete_files_are_named(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    broken = tmp_path / "broken.asdf"
    broken.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ResultsFileError, match="broken.asdf"):
        fitter_from_file(broken)
    with asdf.open(path) as af:
        tree = {k: v for k, v in af.tree.items() if k not in ("asdf_library", "history")}
        tree = asdf.treeutil.walk_and_modify(tree, lambda x: np.array(x) if hasattr(x, "__array__") else x)
    del tree["band"]["z"]["weight"]
    incomplete = tmp_path / "incomplete.asdf"
    asdf.AsdfFile(tree).write_to(incomplete)
    with pytest.raises(ResultsFileError, match="'band/z/weight'"):
        ImcascadeResults(incomplete)


def test_single_band_file_is_not_taken_for_multiband(tmp_path):
    from imcascade_jax.multiband.files import is_multiband_file

    single = tmp_path / "single.asdf"
    asdf.AsdfFile({"sig": np.ones(3), "min_param": np.zeros(7)}).write_to(single)
    assert not is_multiband_file(single)
    with pytest.raises(ResultsFileError, match="not a multi-band results file"):
        fitter_from_file(single)
