"""The README's examples marked ``<!-- readme-test -->`` run as written.

Each marked block (the fenced ``python`` block right after the marker) is executed in a fresh
namespace; the functional-core example must then have fitted its noisy copies of a known model.
Running it compiles a vmapped solver (~15 s of CPU): like the notebooks, it is a ``docs`` test,
run by ``python -m pytest -m docs`` (and ``.ci/run``), not by the default run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from imcascade_jax import analysis as an

README = Path(__file__).resolve().parents[1] / "README.md"
MARKED_BLOCK = re.compile(r"<!-- readme-test -->\s*\n```python\n(.*?)\n```", flags=re.S)


def _marked_blocks() -> list[str]:
    return MARKED_BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_a_marked_example():
    blocks = _marked_blocks()
    assert len(blocks) == 1 and "least_squares_jit" in blocks[0]


@pytest.mark.docs
def test_functional_core_example_runs_and_fits():
    (code,) = _marked_blocks()
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    fits, truth, grad = namespace["fits"], np.asarray(namespace["truth"]), np.asarray(namespace["grad"])
    assert grad.shape == truth.shape and np.all(np.isfinite(grad))
    # Every copy converged to the model it was drawn from: centre within 0.1 px (the noise is
    # 0.02 against a peak of ~3), flux inside 10 px within 3% (the total is not a fair test on a
    # 48x48 cutout: the 16 px wide component trades light with the tilted-plane sky).
    assert np.all(np.asarray(fits.status) > 0)
    x = np.asarray(fits.x)
    np.testing.assert_allclose(x[:, :2], np.broadcast_to(truth[:2], (len(x), 2)), atol=0.1)
    sig = namespace["sig"]
    inside = np.asarray(an.flux(10 ** x[:, 4:10], sig, 10.0))
    np.testing.assert_allclose(inside, float(an.flux(10 ** truth[4:10], sig, 10.0)), rtol=0.03)
