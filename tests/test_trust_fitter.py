"""The Fitter's inputs, files and logs: every mask convention honoured, clear errors instead of
crashes or silent acceptance, files never overwritten or left half-written, corrupted files
refused, one logger per fitter."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import asdf
import numpy as np
import pytest

from imcascade_jax import io
from imcascade_jax.fitter import Fitter, fitter_from_ASDF, initialize_fitter
from imcascade_jax.mgm import MultiGaussModel
from imcascade_jax.synthetic import make_galaxy, moffat_psf

SHAPE = (24, 24)
SIG = np.array([0.8, 2.0, 5.0])
PSF_SIG = np.array([1.1, 2.4])
PSF_A = np.array([0.75, 0.25])


@pytest.fixture(scope="module")
def small():
    """A 24x24 exponential galaxy (flux 50, r_e 2.5) with noise 0.01."""
    return make_galaxy(shape=SHAPE, n=1.0, re=2.5, flux=50.0, q=0.7, phi=0.4,
                       centre=(12.2, 11.7), noise=0.01, psf=moffat_psf(size=11, core=1.5), seed=5)


def quick_fitter(img, **kwargs):
    """A Fitter without PSF (fast to build); keyword arguments override the defaults."""
    kwargs.setdefault("verbose", False)
    kwargs.setdefault("init_dict", {"re": 2.5, "flux": 50.0})
    return Fitter(img, SIG, kwargs.pop("psf_sig", None), kwargs.pop("psf_a", None), **kwargs)


def neighbour_mask():
    """Pixels within 5 px of (4, 19), as a boolean image."""
    x, y = np.indices(SHAPE)
    return (x - 4) ** 2 + (y - 19) ** 2 <= 25


# -- masks: one rule (nonzero / True = masked), np.ma and FITS paths ---------------------------

@pytest.mark.parametrize("kind", ["bool", "0/1 float", "0/255 uint8", "np.ma mask", "np.ma image",
                                  "FITS path"])
def test_every_mask_convention_masks_the_same_pixels(small, kind, tmp_path):
    bad = neighbour_mask()
    img, mask = small.img, None
    if kind == "bool":
        mask = bad
    elif kind == "0/1 float":
        mask = bad.astype(float)
    elif kind == "0/255 uint8":
        mask = bad.astype(np.uint8) * 255
    elif kind == "np.ma mask":
        mask = np.ma.masked_array(np.zeros(SHAPE), mask=bad)
    elif kind == "np.ma image":
        img = np.ma.masked_array(small.img, mask=bad)
    else:
        from astropy.io import fits

        fits.writeto(tmp_path / "mask.fits", bad.astype(np.uint8) * 255)
        mask = str(tmp_path / "mask.fits")
    f = quick_fitter(img, weight=1.0 / small.err**2, mask=mask)
    # 1.1's convention for the attribute: a float array, 1 = masked.
    assert f.mask.dtype == np.float64
    np.testing.assert_array_equal(f.mask, bad.astype(float))
    assert np.all(f.weight[bad] == 0) and np.all(f.weight[~bad] == 1.0 / 0.01**2)


def test_uint8_255_mask_over_a_bright_neighbour_is_honoured_by_the_fit(small):
    """A compact neighbour of flux 200 (4x the galaxy) masked with 255s: the fit is the one of
    the galaxy alone under the same mask (less than 0.1% of the neighbour's light falls outside
    the mask), and recovers make_galaxy's truth."""
    x, y = np.indices((11, 11)) - 5.0
    gaussian_psf = np.exp(-0.5 * (x**2 + y**2))
    neighbour = make_galaxy(shape=SHAPE, n=0.5, re=1.0, flux=200.0, centre=(4.0, 19.0),
                            noise=0.0, psf=gaussian_psf / gaussian_psf.sum()).img
    assert neighbour[~neighbour_mask()].sum() < 0.2
    mask = neighbour_mask().astype(np.uint8) * 255
    fits = []
    for img in (small.img, small.img + neighbour):
        f = Fitter(img, SIG, PSF_SIG, PSF_A, weight=1.0 / small.err**2, mask=mask,
                   verbose=False, init_dict={"re": 2.5, "flux": 50.0})
        f.run_ls_min()
        assert f.min_res.success, f.min_res.message
        fits.append(f.min_param)
    alone, x = fits
    np.testing.assert_allclose(x[:3], alone[:3], atol=0.03)
    assert np.sum(10 ** x[4:7]) == pytest.approx(np.sum(10 ** alone[4:7]), rel=0.02)
    assert abs(x[0] - 12.2) < 0.1 and abs(x[1] - 11.7) < 0.1
    # q is biased low by the 3-width model on an r_e = 2.5 px galaxy under a 3 px PSF
    assert abs(x[2] - 0.7) < 0.15
    assert np.sum(10 ** x[4:7]) == pytest.approx(50.0, rel=0.08)


def test_initialize_fitter_honours_255_masks_masked_images_and_checks_errors(small):
    bad = neighbour_mask()
    f = initialize_fitter(small.img, None, mask=bad.astype(np.uint8) * 255, err=small.err,
                          re=2.5, flux=50.0, verbose=False)
    np.testing.assert_array_equal(f.mask, bad.astype(float))
    assert np.all(f.weight[bad] == 0)
    g = initialize_fitter(np.ma.masked_array(small.img, mask=bad), None, err=small.err, re=2.5,
                          flux=50.0, verbose=False)
    assert np.all(g.mask[bad] == 1) and np.all(g.weight[bad] == 0)
    err = small.err.copy()
    err[3, 3] = -0.01
    with pytest.raises(ValueError, match="'err'"):
        initialize_fitter(small.img, None, err=err, re=2.5, flux=50.0, verbose=False)


# -- clear errors instead of crashes and silent acceptance -------------------------------------

def test_too_small_image_is_a_clear_error():
    with pytest.raises(ValueError, match="'img' must be at least 3x3"):
        Fitter(np.ones((1, 1)), SIG, None, None, verbose=False)
    with pytest.raises(ValueError, match="'im' must be at least 3x3"):
        initialize_fitter(np.ones((1, 1)), None, verbose=False)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "int64", np.complex64])
def test_only_float32_and_float64_dtypes(small, dtype):
    with pytest.raises(TypeError, match="'dtype' must be float32 or float64"):
        quick_fitter(small.img, dtype=dtype)
    with pytest.raises(TypeError, match="'dtype'"):
        MultiGaussModel(SHAPE, SIG, None, None, dtype=dtype)


def test_psf_a_not_summing_to_one_is_normalised_with_a_warning(small):
    with pytest.warns(UserWarning, match=r"'psf_a' sums to 0\.5, not 1") as record:
        half = quick_fitter(small.img, psf_sig=PSF_SIG, psf_a=0.5 * PSF_A)
    assert record[0].filename == __file__  # points at the caller, not into the package
    unit = quick_fitter(small.img, psf_sig=PSF_SIG, psf_a=PSF_A)
    np.testing.assert_allclose(half.psf_a, PSF_A, rtol=1e-15)
    p = unit.param_init
    np.testing.assert_array_equal(half.make_model(p), unit.make_model(p))
    # within 1% of 1 (a 3-Gaussian fit of a PSF may leave out 0.1% in its wings): normalised without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        near = MultiGaussModel(SHAPE, SIG, PSF_SIG, PSF_A * 0.995)
    np.testing.assert_allclose(near.psf_a.sum(), 1.0, rtol=1e-15)


@pytest.mark.parametrize("psf_sig, psf_a, name", [
    (PSF_SIG, np.zeros(2), "'psf_a' must sum to a positive number"),
    (PSF_SIG, np.array([0.5, -0.5]), "'psf_a' must sum to a positive number"),
    (PSF_SIG, np.array([np.nan, 1.0]), "'psf_a' contains non-finite"),
    (np.array([np.inf, 1.0]), PSF_A, "'psf_sig' contains non-finite"),
    (np.array([-1.0, 1.0]), PSF_A, "'psf_sig' must be > 0"),
])
def test_bad_psf_mixture_is_refused(small, psf_sig, psf_a, name):
    with pytest.raises(ValueError, match=name):
        quick_fitter(small.img, psf_sig=psf_sig, psf_a=psf_a)


def test_non_finite_pixels_are_reported_once(small, caplog):
    img = small.img.copy()
    img[2, 3] = np.nan
    img[5, 5] = np.inf
    with caplog.at_level(logging.WARNING, logger="imcascade_jax"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            f = quick_fitter(img)
            g = initialize_fitter(img, None, re=2.5, flux=50.0, verbose=False)
    reports = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    reports += [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage().lower()]
    assert reports == ["masking 2 non-finite pixels of 'img'", "masking 2 non-finite pixels of 'im'"]
    for fitter in (f, g):
        assert fitter.mask[2, 3] == 1 and fitter.mask[5, 5] == 1 and fitter.weight[2, 3] == 0


def test_negative_weights_are_refused(small):
    weight = np.ones(SHAPE)
    weight[0, 0] = -1.0
    with pytest.raises(ValueError, match="'weight'"):
        quick_fitter(small.img, weight=weight)


# -- files ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    """A fitter (no PSF) with a best fit set, and the path of its saved results."""
    f = quick_fitter(small.img, weight=1.0 / small.err**2)
    f.min_param = f.param_init.copy()
    path = tmp_path_factory.mktemp("files") / "fit.asdf"
    f.save_results(str(path))
    return f, path


def test_existing_files_are_never_overwritten_without_overwrite(saved, tmp_path, monkeypatch):
    f, _ = saved
    target = tmp_path / "notes.txt"
    target.write_text("keep me")

    def no_work(*args, **kwargs):
        raise AssertionError("the existence check must come before any work")

    with monkeypatch.context() as patch:
        patch.setattr(io, "write_tree", no_work)
        with pytest.raises(FileExistsError, match=r"notes\.txt.*overwrite=True"):
            f.save_results(str(target))
        with pytest.raises(FileExistsError, match="overwrite=True"):
            io.save_results(f, target)
    assert target.read_text() == "keep me"
    f.save_results(str(target), overwrite=True)
    np.testing.assert_array_equal(io.load_results(target)["min_param"], f.min_param)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_directory_is_not_a_file_name(saved, tmp_path):
    f, _ = saved
    with pytest.raises(ValueError, match="'file_name' is a directory"):
        f.save_results(str(tmp_path))
    with pytest.raises(ValueError, match="directory"):
        io.save_results(f, tmp_path, overwrite=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_a_failing_write_leaves_no_file_behind(saved, tmp_path, monkeypatch, existing):
    f, good = saved
    target = tmp_path / "fit.asdf"
    if existing:
        target.write_bytes(good.read_bytes())

    def fail_midway(self, fd, *args, **kwargs):
        if isinstance(fd, (str, os.PathLike)):
            with open(fd, "wb") as handle:
                handle.write(b"#ASDF partial")
        else:
            fd.write(b"#ASDF partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(asdf.AsdfFile, "write_to", fail_midway)
    with pytest.raises(OSError, match="no space left"):
        f.save_results(str(target), overwrite=True)
    assert os.listdir(tmp_path) == (["fit.asdf"] if existing else [])
    if existing:
        assert target.read_bytes() == good.read_bytes()


def _first_block_data_offset(raw: bytes) -> int:
    start = raw.index(b"\xd3BLK")
    header_size = int.from_bytes(raw[start + 4:start + 6], "big")
    return start + 6 + header_size


def test_corrupted_data_bytes_are_detected(saved, tmp_path):
    _, good = saved
    raw = bytearray(good.read_bytes())
    raw[_first_block_data_offset(raw) + 8] ^= 0xFF  # one byte of the image's data
    bad = tmp_path / "corrupted.asdf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"corrupted\.asdf.*checksum"):
        io.load_results(bad)
    with pytest.raises(ValueError, match=r"corrupted\.asdf"):
        fitter_from_ASDF(str(bad))


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_files_are_a_clear_error(saved, tmp_path, keep):
    _, good = saved
    raw = good.read_bytes()
    bad = tmp_path / "truncated.asdf"
    bad.write_bytes(raw[:int(keep * len(raw))])
    with pytest.raises(ValueError, match=r"cannot read .*truncated\.asdf"):
        io.load_results(bad)
    with pytest.raises(ValueError, match=r"truncated\.asdf"):
        fitter_from_ASDF(str(bad))


def test_incomplete_file_names_the_missing_key(tmp_path):
    path = tmp_path / "no_img.asdf"
    io.save_results({"sig": SIG, "Ndof": 7, "min_param": np.zeros(7)}, path)
    with pytest.raises(ValueError, match=r"no_img\.asdf has no 'img'"):
        fitter_from_ASDF(str(path))
    assert io.load_results(path)["Ndof"] == 7  # other readers may need less


# -- logs: one logger per fitter ------------------------------------------------------------------

def test_package_logger_has_a_null_handler_only(small, tmp_path):
    quick_fitter(small.img, verbose=True, log_file=str(tmp_path / "a.log"))
    gc.collect()
    package = logging.getLogger("imcascade_jax")
    assert [type(h) for h in package.handlers] == [logging.NullHandler]
    assert package.level == logging.NOTSET


def test_each_fitter_writes_its_own_log_file(small, tmp_path):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    f1 = quick_fitter(small.img, verbose=True, log_file=str(first))
    f2 = quick_fitter(small.img, verbose=True, log_file=str(second))
    f1.min_param = f2.min_param = f1.param_init
    f1.save_results(str(tmp_path / "one.asdf"))
    f2.save_results(str(tmp_path / "two.asdf"))
    lines1, lines2 = first.read_text().splitlines(), second.read_text().splitlines()
    assert [line.split(" - ", 1)[1] for line in lines1] == [
        "No PSF input, running in non-psf mode", f"Saving results to: {tmp_path / 'one.asdf'}"]
    assert [line.split(" - ", 1)[1] for line in lines2] == [
        "No PSF input, running in non-psf mode", f"Saving results to: {tmp_path / 'two.asdf'}"]
    f1.close()
    f2.close()


def test_verbose_belongs_to_each_fitter(small, caplog, tmp_path):
    caplog.set_level(logging.INFO)  # the application wants INFO records
    loud = quick_fitter(small.img, verbose=True)
    quiet = quick_fitter(small.img, verbose=False)  # must not silence the first
    loud.min_param = quiet.min_param = loud.param_init
    caplog.clear()
    loud.save_results(str(tmp_path / "loud.asdf"))
    quiet.save_results(str(tmp_path / "quiet.asdf"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"Saving results to: {tmp_path / 'loud.asdf'}"]
    assert caplog.records[0].name.startswith("imcascade_jax.fitter.")


def test_initialize_fitter_logs_its_set_up_in_the_fitters_file(small, tmp_path):
    """sep's and the weights' set-up lines, logged before the fitter exists, go to its file too;
    the package logger's level is left as it was."""
    path = tmp_path / "setup.log"
    f = initialize_fitter(small.img, None, err=small.err, re=2.5, flux=50.0, verbose=True,
                          log_file=str(path))
    f.close()
    text = path.read_text()
    for line in ("No PSF given", "Using given errors to calculate pixel weights",
                 "No PSF input, running in non-psf mode"):
        assert text.count(line) == 1, line
    assert logging.getLogger("imcascade_jax").level == logging.NOTSET


def test_log_files_are_closed_by_close_with_and_garbage_collection(small, tmp_path):
    path = tmp_path / "with.log"
    with quick_fitter(small.img, verbose=True, log_file=str(path)) as f:
        handler = next(h for h in f.logger.handlers if isinstance(h, logging.FileHandler))
        f.logger.info("inside")
    assert handler.stream is None and handler not in f.logger.handlers
    f.logger.warning("after close")
    assert "inside" in path.read_text() and "after close" not in path.read_text()
    f.close()  # idempotent

    g = quick_fitter(small.img, log_file=str(tmp_path / "gc.log"))
    handler = next(h for h in g.logger.handlers if isinstance(h, logging.FileHandler))
    assert handler.stream is not None
    del g
    gc.collect()
    assert handler.stream is None


def test_console_fallback_prints_once_and_only_when_nothing_else_would(small, capsys, monkeypatch):
    package = logging.getLogger("imcascade_jax")
    # the state after import (earlier fitters must leave nothing behind), then an application
    # that configured nothing
    monkeypatch.setattr(package, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(logging.root, "handlers", [])
    f = quick_fitter(small.img, verbose=True)
    f.logger.info("progress line")
    quick_fitter(small.img, verbose=False).logger.info("hidden line")
    err = capsys.readouterr().err
    assert err.count("No PSF input") == 1 and err.count("progress line") == 1
    assert "hidden line" not in err
    # the application configures logging (as logging.basicConfig does): still once each
    monkeypatch.setattr(logging.root, "handlers", [logging.StreamHandler(sys.stderr)])
    f.logger.info("configured line")
    quick_fitter(small.img, verbose=True)
    err = capsys.readouterr().err
    assert err.count("configured line") == 1 and err.count("No PSF input") == 1


_SCRIPT = textwrap.dedent("""
    import logging, sys
    import numpy as np
    from imcascade_jax.fitter import Fitter

    img = np.random.default_rng(0).normal(size=(12, 12)) + 1.0
    def fitter(verbose):
        Fitter(img, [1.0, 2.0], None, None, verbose=verbose, sky_model=False,
               init_dict={"re": 2.0, "flux": 100.0})
    print("MARK unconfigured verbose", file=sys.stderr, flush=True)
    fitter(True)
    print("MARK unconfigured quiet", file=sys.stderr, flush=True)
    fitter(False)
    logging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")
    print("MARK configured verbose", file=sys.stderr, flush=True)
    fitter(True)
""")


@pytest.mark.slow
def test_no_duplicate_lines_when_the_application_configures_logging():
    """In a fresh interpreter: a verbose fitter prints its INFO line once on stderr whether or
    not the application called ``logging.basicConfig``; a quiet one prints nothing."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         env=env, check=True)
    sections = {}
    for part in out.stderr.split("MARK ")[1:]:
        title, _, body = part.partition("\n")
        sections[title] = [line for line in body.splitlines() if "No PSF input" in line]
    assert len(sections["unconfigured verbose"]) == 1
    assert sections["unconfigured quiet"] == []
    assert len(sections["configured verbose"]) == 1
    assert sections["configured verbose"][0].startswith("APP imcascade_jax.fitter.")
