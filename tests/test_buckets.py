"""Bucket padding: fits of padded images equal unpadded ones; one program per shape family."""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import numpy as np
import pytest

from imcascade_jax import buckets
from imcascade_jax import fit as core_fit
from imcascade_jax.model import make_model
from imcascade_jax.render import render

# User-facing set-up code: no implicit rank promotion (tests/conftest.py).
pytestmark = pytest.mark.strict_rank

SIG = np.array([0.8, 1.6, 3.2, 6.4])
PSF_SIG, PSF_A = np.array([1.1, 2.4]), np.array([0.75, 0.25])
# Tilted sky with clear slopes: padding must not move its reference point.
TRUTH = np.array([21.3, 26.6, 0.6, 0.7, 1.3, 1.6, 1.4, 0.9, 0.05, 2e-3, -3e-3])
SHAPE = (45, 50)  # buckets to (112, 112)


def _problem(shape, psf_sig=PSF_SIG, seed=0):
    model = make_model(shape, SIG, psf_sig, PSF_A)
    rng = np.random.default_rng(seed)
    noise = 0.01
    data = np.asarray(render(model, TRUTH)) + rng.normal(0.0, noise, shape)
    weight = np.full(shape, noise**-2)
    weight[3:6, 10:14] = 0.0  # a masked patch
    x0 = TRUTH + np.array([0.4, -0.3, 0.1, 0.2, -0.3, 0.2, 0.1, -0.2, 0.0, 0.0, 0.0])
    lb = np.array([15, 20, 0.1, 0, -3, -3, -3, -3, -1, -1, -1], float)
    ub = np.array([28, 33, 1.0, np.pi, 3, 3, 3, 3, 1, 1, 1], float)
    return model, data, weight, x0, lb, ub


# The 20 shapes of benchmarks/many_shapes.py, in its order.
MANY_SHAPES = [(129, 141), (269, 269), (199, 199), (213, 225), (177, 177), (111, 111),
               (298, 300), (72, 72), (172, 172), (126, 123), (254, 254), (273, 273), (88, 98),
               (61, 61), (261, 261), (263, 273), (190, 190), (250, 250), (236, 233), (91, 91)]


def test_own_buckets_are_multiples_of_16_square_for_near_square_images():
    assert buckets.bucket_size(150) == 160 and buckets.bucket_size(160) == 160
    assert all(buckets.bucket_size(n) >= n and buckets.bucket_size(n) % 16 == 0
               for n in range(1, 5000))
    # Every image up to 112 px shares the smallest bucket.
    assert {buckets.bucket_size(n) for n in range(1, 113)} == {112}
    assert buckets.bucket_shape((150, 150)) == (160, 160)  # 1.14x the pixels
    assert buckets.bucket_shape((120, 137)) == (144, 144)  # near-square: one square bucket
    assert buckets.bucket_shape((60, 181)) == (112, 192)  # elongated: each axis on its own
    with pytest.raises(ValueError, match="'n'"):
        buckets.bucket_size(0)


def test_a_compiled_larger_program_is_reused_within_the_area_limits():
    assert buckets.reusable((150, 150), (208, 208))  # 43264 px <= 2 x 160^2
    assert not buckets.reusable((150, 150), (240, 240))  # 57600 px > 2 x 160^2
    assert not buckets.reusable((150, 150), (208, 144))  # does not cover the image
    assert buckets.reusable((40, 40), (144, 144))  # <= 2 x 112^2
    assert not buckets.reusable((40, 40), (176, 176))
    assert buckets.choose_shape((150, 150), []) == (160, 160)
    assert buckets.choose_shape((150, 150), [(240, 240), (208, 208), (176, 176)]) == (176, 176)
    assert buckets.choose_shape((150, 150), [(240, 240)]) == (160, 160)


def test_20_shapes_need_5_programs_and_little_padding():
    """The many-shapes benchmark's sequence: 5 programs (7 and 9 components apart), the padded
    area 1.25x the images' (1.38x on a fixed 1.5x grid, which needs 6)."""
    compiled = {7: [], 9: []}
    pixels = padded = 0
    for shape in MANY_SHAPES:
        n = 9 if shape[0] > 100 else 7  # initialize_fitter's default component count
        target = buckets.choose_shape(shape, compiled[n])
        assert target[0] >= shape[0] and target[1] >= shape[1]
        if target not in compiled[n]:
            compiled[n].append(target)
        pixels += shape[0] * shape[1]
        padded += target[0] * target[1]
    assert compiled[7] == [(112, 112)]
    assert compiled[9] == [(144, 144), (272, 272), (192, 192), (304, 304)]
    assert padded / pixels == pytest.approx(1.25, abs=0.005)


render_jit = jax.jit(render)


def test_padded_problem_keeps_the_sky_reference_point():
    model, data, weight, *_ = _problem(SHAPE)
    padded, data_p, weight_p, crop = buckets.pad_problem(model, data, weight)
    assert padded.shape == (112, 112) and data_p.shape == weight_p.shape == (112, 112)
    np.testing.assert_array_equal(np.asarray(padded.sky_centre), [22.5, 25.0])
    assert np.all(weight_p[45:] == 0) and np.all(weight_p[:, 50:] == 0)
    np.testing.assert_array_equal(weight_p[crop], weight)
    np.testing.assert_allclose(np.asarray(render_jit(padded, TRUTH))[crop],
                               render_jit(model, TRUTH), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="'data'"):
        buckets.pad_problem(model, data[:-1], weight)


class _Notes(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def fits():
    """A direct fit of a 130x100 image and bucket-padded fits (144x112) of it, of a 128x98 image
    with another PSF and of a 120x90 image (their own bucket, 128x112, is not compiled: they
    reuse 144x112); the compilations and notes the padded fits caused."""
    problems = [_problem((130, 100), seed=2), _problem((128, 98), PSF_SIG * [0.9, 1.2], seed=3),
                _problem((120, 90), seed=4)]
    direct = core_fit.least_squares_jit(*problems[0], core_fit.DEFAULT_OPTIONS, True)
    logger = logging.getLogger("imcascade_jax")
    notes, level = _Notes(), logger.level
    logger.addHandler(notes)
    logger.setLevel(logging.INFO)
    try:
        before = buckets.compile_stats()["compiled"]
        padded = [buckets.least_squares(*p) for p in problems]
        compiled = buckets.compile_stats()["compiled"] - before
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)
    return dict(problems=problems, direct=direct, padded=padded, compiled=compiled,
                notes=[m for m in notes.messages if "Compiling the least-squares fit" in m])


def test_padded_fit_equals_unpadded_fit(fits):
    direct, padded = fits["direct"], fits["padded"][0]
    shape = fits["problems"][0][0].shape
    assert int(direct.status) > 0 and int(padded.status) == int(direct.status)
    np.testing.assert_allclose(padded.x, direct.x, rtol=0, atol=1e-8)
    assert float(padded.chi2) == pytest.approx(float(direct.chi2), rel=1e-8)
    assert padded.residuals.shape == shape
    np.testing.assert_allclose(padded.residuals, direct.residuals, rtol=0, atol=1e-8)
    scale = np.sqrt(np.outer(np.diag(direct.jtj), np.diag(direct.jtj)))
    assert np.max(np.abs(padded.jtj - direct.jtj) / scale) < 1e-8
    # The sky's slopes are recovered, which needs the original reference point.
    assert abs(float(padded.x[-2]) - TRUTH[-2]) < 5e-4


def test_one_program_for_shapes_and_psfs_of_one_family(fits):
    """Two shapes of one bucket, two different PSFs, and a smaller shape that reuses the
    compiled program: a single compilation, announced once."""
    models = [p[0] for p in fits["problems"]]
    assert models[0].psf_sig[0] != models[1].psf_sig[0]
    padded = [buckets.pad_problem(*p[:3])[0] for p in fits["problems"]]
    assert [p.shape for p in padded] == [(144, 112), (128, 112), (128, 112)]
    reused = [buckets.pad_problem(*p[:3], shape=(144, 112))[0] for p in fits["problems"]]
    assert len({jax.tree_util.tree_structure(p) for p in reused}) == 1
    assert fits["compiled"] == 1
    assert len(fits["notes"]) == 1 and "130x100 images (padded to 144x112)" in fits["notes"][0]
    for model, res in zip(models, fits["padded"], strict=True):
        assert res.residuals.shape == model.shape and int(res.status) > 0
        assert abs(float(res.x[0]) - TRUTH[0]) < 0.05


def test_crop_result_passes_extra_fields_through():
    class Result(NamedTuple):
        x: np.ndarray
        jac: object
        residuals: np.ndarray
        extra_image: np.ndarray
        note: str

    res = Result(np.zeros(3), None, np.ones((8, 16)), np.ones((2, 8, 16)), "kept")
    out = buckets.crop_result(res, (8, 16), (slice(0, 5), slice(0, 7)))
    assert out.jac is None and out.note == "kept" and out.x.shape == (3,)
    assert out.residuals.shape == (5, 7) and out.extra_image.shape == (2, 5, 7)
