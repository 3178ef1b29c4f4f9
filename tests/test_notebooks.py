"""The example notebooks run from top to bottom, and are stored executed.

Each notebook of ``notebooks/`` is executed with nbclient in a fresh kernel, from the
``notebooks/`` folder as Jupyter would (one test per notebook, so pytest-xdist spreads them).
``real_galaxy.ipynb`` reads real data from ``../shared/data/real`` when it is there and falls back
on a synthetic galaxy otherwise; when the data are present it is also run with them hidden, so
that both paths are tested.

Executing the notebooks is slow: ``test_notebook_runs`` is marked ``docs`` and left out of the
default run (``python -m pytest -m docs`` runs it, as ``.ci/run`` does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
REAL_DATA = ROOT.parent / "shared" / "data" / "real" / "pysersic_gals"
#: Seconds allowed per cell (the slowest takes ~25 s on a loaded 2-core CPU).
CELL_TIMEOUT = 600


def _cases():
    for path in NOTEBOOKS:
        yield pytest.param(path, None, id=path.stem)
    yield pytest.param(NOTEBOOK_DIR / "real_galaxy.ipynb", "no-data", id="real_galaxy-without-data")


def _outputs(nb, output_type=None):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if output_type is None or out.get("output_type") == output_type:
                yield cell, out


def test_notebooks_found():
    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart", "real_galaxy", "catalog_gpu", "differentiable"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path):
    """Readers on GitHub see the outputs: every code cell ran, in order, without errors."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    counts = [c.get("execution_count") for c in nb.cells if c.cell_type == "code"]
    assert counts and all(isinstance(n, int) for n in counts), f"{path.name}: not executed"
    assert counts == sorted(counts), f"{path.name}: cells executed out of order"
    assert not list(_outputs(nb, "error")), f"{path.name}: stored with an error"
    images = [o for _, o in _outputs(nb) if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: no figure stored"
    assert path.stat().st_size < 1_500_000, f"{path.name}: stored notebook too large"


@pytest.mark.docs
@pytest.mark.parametrize(("path", "variant"), list(_cases()))
def test_notebook_runs(path, variant, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if variant == "no-data":
        if not REAL_DATA.is_dir():
            pytest.skip("no real data here: the plain real_galaxy run already uses the fallback")
        # The kernel inherits this environment; the notebook then finds no data.
        monkeypatch.setenv("IMCASCADE_JAX_DATA", str(ROOT / "no-such-folder"))
    else:
        monkeypatch.delenv("IMCASCADE_JAX_DATA", raising=False)
    # Figures are captured as PNG outputs whatever backend the caller's environment sets.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    text = "".join(out.get("text", "") for _, out in _outputs(nb, "stream"))
    images = [o for _, o in _outputs(nb) if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: no figure produced"
    if path.stem == "real_galaxy":
        uses_real = variant is None and REAL_DATA.is_dir()
        marker = "Using the HSC cutout" if uses_real else "Real data not found"
        assert marker in text, f"expected {marker!r} in the notebook's output"
