"""``initialize_fitter``'s PSF decomposition is remembered by content (prepare.fit_psf)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from imcascade_jax import prepare
from imcascade_jax.psf_decompose import decompose_psf
from imcascade_jax.synthetic import moffat_psf


@pytest.fixture(autouse=True)
def _empty_cache():
    prepare.clear_psf_cache()
    yield
    prepare.clear_psf_cache()


@pytest.fixture
def counted(monkeypatch):
    """Replace the decomposition by a cheap one that counts its calls (widths from the sum)."""
    calls = []

    def fake(psf, oversamp=1.0):
        calls.append(psf.shape)
        return np.array([1.0, 2.0]) * float(psf.sum()) / oversamp, np.array([0.75, 0.25])

    monkeypatch.setattr(prepare, "decompose_psf", fake)
    return calls


def test_a_psf_seen_before_is_not_decomposed_again_and_gives_the_same_answer():
    psf = moffat_psf(size=21, core=2.5)
    sig, a = prepare.fit_psf(psf)
    # A copy of the same content (another array object) hits the cache.
    sig2, a2 = prepare.fit_psf(psf.copy())
    ref_sig, ref_a = decompose_psf(psf)
    np.testing.assert_array_equal(sig, ref_sig)
    np.testing.assert_array_equal(a, ref_a)
    np.testing.assert_array_equal(sig2, ref_sig)
    np.testing.assert_array_equal(a2, ref_a)
    assert prepare.psf_cache_info()["hits"] == 1
    assert prepare.psf_cache_info()["misses"] == 1


def test_callers_cannot_change_what_is_remembered(counted):
    psf = np.ones((9, 9))
    sig, a = prepare.fit_psf(psf)
    sig[:] = -1.0
    a[:] = -1.0
    sig2, a2 = prepare.fit_psf(psf)
    np.testing.assert_array_equal(sig2, [81.0, 162.0])
    np.testing.assert_array_equal(a2, [0.75, 0.25])
    assert len(counted) == 1


def test_content_shape_and_oversamp_make_different_entries(counted):
    psf = np.ones((8, 8))
    prepare.fit_psf(psf)
    prepare.fit_psf(psf * 2.0)  # other values
    prepare.fit_psf(np.ones((4, 16)))  # same bytes, other shape
    sig, _ = prepare.fit_psf(psf, oversamp=2.0)
    assert len(counted) == 4
    np.testing.assert_array_equal(sig, [32.0, 64.0])
    prepare.fit_psf(psf)
    # The PSF is read as float64 first: float32 ones are the same PSF.
    prepare.fit_psf(np.ones((8, 8), np.float32))
    assert len(counted) == 4


def test_psf_cache_key_depends_on_dtype_and_oversamp():
    psf = np.ones((8, 8))
    keys = {prepare.psf_cache_key(psf, 1.0), prepare.psf_cache_key(psf.astype(np.float32), 1.0),
            prepare.psf_cache_key(psf, 2.0), prepare.psf_cache_key(psf.reshape(4, 16), 1.0)}
    assert len(keys) == 4
    assert prepare.psf_cache_key(psf.copy(), 1) == prepare.psf_cache_key(psf, 1.0)


def test_the_cache_is_bounded_and_drops_the_least_recently_used(counted, monkeypatch):
    monkeypatch.setattr(prepare, "PSF_CACHE_SIZE", 2)
    first, second, third = (np.full((5, 5), v) for v in (1.0, 2.0, 3.0))
    prepare.fit_psf(first)
    prepare.fit_psf(second)
    prepare.fit_psf(first)  # first is now the most recent
    prepare.fit_psf(third)  # drops second
    assert prepare.psf_cache_info()["size"] == 2
    prepare.fit_psf(first)
    assert len(counted) == 3
    prepare.fit_psf(second)
    assert len(counted) == 4


def test_warnings_of_the_decomposition_are_raised_on_every_call(monkeypatch):
    def warns(psf, oversamp=1.0):
        warnings.warn("auto_fit: no fit passed the checks", UserWarning, stacklevel=2)
        return np.array([1.0]), np.array([1.0])

    monkeypatch.setattr(prepare, "decompose_psf", warns)
    for _ in range(2):
        with pytest.warns(UserWarning, match="no fit passed"):
            prepare.fit_psf(np.ones((7, 7)))
    assert prepare.psf_cache_info()["hits"] == 1


def test_errors_are_not_remembered():
    bad = np.zeros((9, 9))
    for _ in range(2):
        with pytest.raises(ValueError, match="'psf'.*positive peak"):
            prepare.fit_psf(bad)
    assert prepare.psf_cache_info() == {"hits": 0, "misses": 2, "size": 0,
                                        "maxsize": prepare.PSF_CACHE_SIZE}
