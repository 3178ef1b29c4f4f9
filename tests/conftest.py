"""Shared fixtures: the seed quickstart model, a small model for fast renderer tests, imcascade 1.1.

Keep this file small and generic: only fixtures that several test modules can use.
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np
import pytest

# Strict dtype promotion for the whole suite: an int64 meeting an int32, or a float32 meeting
# a float64, is an error rather than a silent promotion (JAX's "strict" mode).
jax.config.update("jax_numpy_dtype_promotion", "strict")
# The compilation cache of the tests goes to a temporary folder, never the user's own.
os.environ.setdefault("IMCASCADE_JAX_CACHE", os.path.join(tempfile.gettempdir(), "imcascade_jax_test_cache"))


@pytest.fixture(autouse=True)
def _strict_rank_promotion(request):
    """Tests marked ``strict_rank`` run with ``jax_numpy_rank_promotion='raise'``.

    Not the whole suite: the renderers broadcast per-component arrays against pixel grids and
    quadrature nodes on purpose (implicit rank promotion), so the mode is applied to the tests
    of functions whose inputs come from users (parameter vectors, likelihoods, analysis).
    """
    if request.node.get_closest_marker("strict_rank") is None:
        yield
        return
    with jax.numpy_rank_promotion("raise"):
        yield

#: The seed quickstart: 9 widths, the 4-component Gaussian fit of its Moffat PSF, 150x150.
QUICKSTART = {
    "shape": (150, 150),
    "sig": np.logspace(np.log10(0.75), np.log10(51.4), 9),
    "psf_sig": np.array([1.2, 1.81, 2.93, 5.28]),
    "psf_a": np.array([0.27, 0.51, 0.19, 0.03]),
}

#: A small model for renderer tests: 6 components x 2 PSF components on 41x41.
SMALL = {
    "shape": (41, 41),
    "sig": np.array([0.5, 1.0, 1.8, 3.2, 5.5, 9.0]),
    "flux": np.array([5.0, 8.0, 10.0, 12.0, 9.0, 6.0]),
    "psf_sig": np.array([1.0, 2.5]),
    "psf_a": np.array([0.7, 0.3]),
}


@pytest.fixture(scope="session")
def quickstart():
    """Dict with the quickstart's ``shape``, ``sig``, ``psf_sig``, ``psf_a`` and a ``param``
    vector ``[x0, y0, q, phi, log10 fluxes (sum 250), tilted-plane sky]``."""
    from imcascade_jax.utils import guess_weights

    cfg = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in QUICKSTART.items()}
    flux = guess_weights(cfg["sig"], 6.0, 250.0)
    cfg["param"] = np.concatenate([[75.3, 74.8, 0.7, 1.2], np.log10(flux), [1e-3, 1e-5, -2e-5]])
    return cfg


@pytest.fixture(scope="session")
def quickstart_model(quickstart):
    """The quickstart as a hybrid, tilted-plane, log-weight :class:`~imcascade_jax.model.Model`."""
    from imcascade_jax.model import make_model

    return make_model(quickstart["shape"], quickstart["sig"], quickstart["psf_sig"],
                      quickstart["psf_a"])


@pytest.fixture(scope="session")
def small():
    """Dict with the small test model's ``shape``, ``sig``, ``flux`` (linear), ``psf_sig``,
    ``psf_a``."""
    return {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in SMALL.items()}


@pytest.fixture(scope="session")
def imcascade11():
    """The reference package ``imcascade`` (1.1); skips the test when it is not installed."""
    return pytest.importorskip("imcascade")


@pytest.fixture
def rng():
    """A seeded NumPy generator (fresh for each test)."""
    return np.random.default_rng(20240611)
