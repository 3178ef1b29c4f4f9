"""Tiled fits: fits on stacks of tiles equal direct ones; one program per model structure."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imcascade_jax import buckets, tiles
from imcascade_jax import fit as core_fit
from imcascade_jax.model import make_model
from imcascade_jax.normal_equations import band_plan, normal_equations
from imcascade_jax.render import render

# User-facing set-up code: no implicit rank promotion (tests/conftest.py).
pytestmark = pytest.mark.strict_rank

SIG = np.array([0.8, 1.6, 3.2, 6.4])
PSF_SIG, PSF_A = np.array([1.1, 2.4]), np.array([0.75, 0.25])
# Tilted sky with clear slopes: padding must not move its reference point.
TRUTH = np.array([21.3, 26.6, 0.6, 0.7, 1.3, 1.6, 1.4, 0.9, 0.05, 2e-3, -3e-3])
SHAPE = (45, 50)


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


def test_20_shapes_share_one_capacity_with_little_padding():
    """The many-shapes benchmark's images: one tile capacity (one program per model
    structure), the tiles 1.16x the images' pixels."""
    grids = [tiles.tile_grid(shape) for shape in MANY_SHAPES]
    assert {g.capacity for g in grids} == {256}
    pixels = sum(a * b for a, b in MANY_SHAPES)
    padded = sum(g.n_tiles * 32 * 32 for g in grids)
    assert padded / pixels == pytest.approx(1.16, abs=0.005)


def test_tile_layout_round_trip_and_capacity():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(45, 70))
    grid = tiles.tile_grid(image.shape)
    assert grid.grid == (2, 3) and grid.n_tiles == 6 and grid.capacity == 256
    stack = tiles.to_tiles(image, grid)
    assert stack.shape == (256, 32, 32) and not stack[6:].any()
    np.testing.assert_array_equal(stack[4], np.pad(image[32:, 32:64], ((0, 19), (0, 0))))
    np.testing.assert_array_equal(grid.offsets[:6], [[0, 0], [0, 32], [0, 64], [32, 0],
                                                     [32, 32], [32, 64]])
    np.testing.assert_array_equal(tiles.from_tiles(stack, grid), image)
    # 17 x 17 tiles do not fit in 256 slots: the next class has 4x as many.
    assert tiles.tile_grid((530, 520)).capacity == 1024
    assert tiles.tile_grid((512, 512)).capacity == 256
    with pytest.raises(ValueError, match="'shape'"):
        tiles.tile_grid((0, 5))
    with pytest.raises(ValueError, match="'image'"):
        tiles.to_tiles(image[:-1], grid)


def test_narrow_components_are_the_narrower_half():
    assert tiles.narrow_components(make_model((40, 40), SIG, PSF_SIG, PSF_A)) == (0, 1)
    unsorted = make_model((40, 40), SIG[[2, 0, 3, 1]], PSF_SIG, PSF_A)
    assert tiles.narrow_components(unsorted) == (1, 3)
    assert tiles.narrow_components(make_model((40, 40), SIG, PSF_SIG, PSF_A,
                                              render_mode="erf")) is None


def test_far_tiles_without_the_narrow_components_give_the_same_equations():
    """On a 150x140 image most tiles are far from the centre: leaving the narrow components
    out there (exactly 0 under the cut-off) changes nothing but rounding."""
    shape = (150, 140)
    model = make_model(shape, np.array([0.8, 1.6, 3.2, 12.0, 30.0]), PSF_SIG, PSF_A,
                       log_weight_scale=False)
    param = np.array([70.3, 66.6, 0.6, 0.7, 5.0, 4.0, 3.0, 2.0, 1.0, 0.05, 2e-3, -3e-3])
    rng = np.random.default_rng(5)
    data = np.asarray(render_jit(model, param)) + rng.normal(0.0, 0.01, shape)
    sqrt_w = np.full(shape, 100.0)
    grid = tiles.tile_grid(shape)
    tile_model = model.replace(shape=grid.tile)
    narrow = tiles.narrow_components(model)
    assert narrow == (0, 1)
    args = (jnp.asarray(tiles.to_tiles(data, grid)), jnp.asarray(tiles.to_tiles(sqrt_w, grid)),
            jnp.asarray(grid.offsets), np.int32(grid.n_tiles))
    order, n_near = jax.jit(tiles._tile_order, static_argnums=1)(
        tile_model, narrow, jnp.asarray(param), args[2], args[3])
    assert 0 < int(n_near) < grid.n_tiles // 2  # the split is exercised
    equations = jax.jit(lambda p, narrow: tiles.tiled_equations(
        tile_model, core_fit.model_and_jacobian, p, *args, narrow), static_argnums=1)
    full = normal_equations(model, core_fit.model_and_jacobian, jnp.asarray(param),
                                     jnp.asarray(data), jnp.asarray(sqrt_w),
                                     band_plan(shape))
    for got in (equations(jnp.asarray(param), None), equations(jnp.asarray(param), narrow)):
        assert float(got.cost) == pytest.approx(float(full.cost), rel=1e-12)
        scale = np.sqrt(np.outer(np.diag(full.jtj), np.diag(full.jtj)))
        assert np.max(np.abs(np.asarray(got.jtj - full.jtj)) / scale) < 1e-12
        np.testing.assert_allclose(got.grad, full.grad, rtol=1e-10,
                                   atol=1e-12 * float(np.max(np.abs(full.grad))))


render_jit = jax.jit(render)


class _Notes(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def fits():
    """A direct fit of a 130x100 image and tiled fits of it, of a 128x98 image with another
    PSF and of a 45x50 image; the compilations and notes the tiled fits caused."""
    problems = [_problem((130, 100), seed=2), _problem((128, 98), PSF_SIG * [0.9, 1.2], seed=3),
                _problem(SHAPE, seed=4)]
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


def test_tiled_fit_equals_direct_fit(fits):
    direct, tiled = fits["direct"], fits["padded"][0]
    shape = fits["problems"][0][0].shape
    assert int(direct.status) > 0 and int(tiled.status) == int(direct.status)
    np.testing.assert_allclose(tiled.x, direct.x, rtol=0, atol=1e-8)
    assert float(tiled.chi2) == pytest.approx(float(direct.chi2), rel=1e-8)
    assert tiled.residuals.shape == shape
    np.testing.assert_allclose(tiled.residuals, direct.residuals, rtol=0, atol=1e-8)
    scale = np.sqrt(np.outer(np.diag(direct.jtj), np.diag(direct.jtj)))
    assert np.max(np.abs(tiled.jtj - direct.jtj) / scale) < 1e-8
    # The sky's slopes are recovered, which needs the image's reference point on every tile.
    assert abs(float(tiled.x[-2]) - TRUTH[-2]) < 5e-4


def test_one_program_for_shapes_and_psfs_of_one_family(fits):
    """Three shapes and two different PSFs: a single compilation, announced once."""
    models = [p[0] for p in fits["problems"]]
    assert models[0].psf_sig[0] != models[1].psf_sig[0]
    args = [buckets.tiled_problem(*p)[0] for p in fits["problems"]]
    assert len({jax.tree_util.tree_structure(a) for a in args}) == 1
    assert fits["compiled"] == 1
    assert len(fits["notes"]) == 1 and "images up to 512x512 pixels" in fits["notes"][0]
    for model, res in zip(models, fits["padded"], strict=True):
        assert res.residuals.shape == model.shape and int(res.status) > 0
        assert abs(float(res.x[0]) - TRUTH[0]) < 0.05


def test_data_scale_on_the_host_is_the_solvers():
    """The tiled fit's unit is computed with NumPy on the image: the same power of two as the
    solver's own (JAX) computation, for ordinary, all-zero and unusable data."""
    rng = np.random.default_rng(7)
    data = rng.normal(3e-12, 1e-12, (37, 41))
    weight = np.where(rng.random((37, 41)) < 0.2, 0.0, 1.0)
    cases = [(data, weight), (data * 0.0, weight), (data, weight * 0.0),
             (np.abs(data) * 1e20, weight)]
    for d, w in cases:
        host = core_fit.data_scale(d, w, xp=np)
        assert float(host) == float(core_fit.data_scale(jnp.asarray(d), jnp.asarray(w)))
    assert float(core_fit.data_scale(data, weight, xp=np)) == 2.0**-38  # median |data| 3e-12


def test_only_large_images_skip_narrow_components_on_far_tiles():
    """Cutouts up to 512x512 px compile one loop body; larger frames, whose fits are long,
    also the one without the narrow components."""
    for shape, expected in (((512, 500), None), ((530, 520), (0, 1))):
        model = make_model(shape, SIG, PSF_SIG, PSF_A)
        zeros = np.zeros(shape)
        _, grid, narrow = buckets.tiled_problem(model, zeros, zeros + 1.0, TRUTH, TRUTH, TRUTH)
        assert narrow == expected and (grid.capacity > 256) == (expected is not None)


@pytest.mark.slow
def test_large_image_fit_with_far_tiles_equals_direct_fit():
    """A 530x520 image (1024 slots, far tiles without the narrow components) fitted through
    the tiled program gives the direct whole-image fit."""
    shape = (530, 520)
    model = make_model(shape, SIG * 3.0, PSF_SIG, PSF_A)
    truth = TRUTH.copy()
    truth[:2] = [262.4, 250.7]
    rng = np.random.default_rng(11)
    data = np.asarray(render_jit(model, truth)) + rng.normal(0.0, 0.01, shape)
    weight = np.full(shape, 1e4)
    x0 = truth + np.array([0.4, -0.3, 0.1, 0.2, -0.3, 0.2, 0.1, -0.2, 0.0, 0.0, 0.0])
    lb = np.array([250, 240, 0.1, 0, -3, -3, -3, -3, -1, -1, -1], float)
    ub = np.array([275, 265, 1.0, np.pi, 3, 3, 3, 3, 1, 1, 1], float)
    direct = core_fit.least_squares_jit(model, data, weight, x0, lb, ub)
    _, grid, narrow = buckets.tiled_problem(model, data, weight, x0, lb, ub)
    assert grid.capacity == 1024 and narrow == (0, 1)
    tiled = buckets.least_squares(model, data, weight, x0, lb, ub)
    assert int(direct.status) > 0 and int(tiled.status) == int(direct.status)
    np.testing.assert_allclose(tiled.x, direct.x, rtol=0, atol=1e-8)
    assert float(tiled.chi2) == pytest.approx(float(direct.chi2), rel=1e-10)
    np.testing.assert_allclose(tiled.residuals, direct.residuals, rtol=0, atol=1e-8)
    assert abs(float(tiled.x[0]) - truth[0]) < 0.01
