"""The package's layout holds what ``docs/architecture.md`` says.

- every module of ``imcascade_jax`` belongs to exactly one layer (core, application, shim);
- the core imports no application or shim module, the application imports no shim module
  (the command line, which drives the 1.1-style flow, is the one front end allowed to);
- no module is longer than ``MAX_MODULE_LINES`` lines, no function body longer than
  ``MAX_FUNCTION_LINES`` lines (docstrings not counted);
- ``docs/architecture.md`` names every module.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "imcascade_jax"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

#: Layer of every module, by dotted name relative to the package.
LAYERS = {
    "core": {
        "_config", "status", "model", "params", "render", "derivatives", "likelihood", "fit",
        "buckets", "tiles", "fit_memory", "fit_inputs", "normal_equations", "progress", "express", "priors",
        "logdensity", "nuts", "diagnostics", "nested", "sample", "analysis", "radii",
        "footprint", "multiband", "multiband.model", "multiband.fit", "multiband.express",
        "multiband.express_prior",
        "multiband.full", "multiband.analysis", "multiband.synthetic", "psf_decompose",
        "setup_maths", "synthetic",
    },
    "application": {
        "__init__", "inputs", "errors", "detect", "prepare", "defaults", "logs", "batch",
        "catalog_inputs", "catalog_setup", "catalog_batches", "catalog_schedule", "catalog_table",
        "io", "result_keys", "world", "plotting", "psf_figure", "cli", "cli_common", "cli_fit",
        "cli_catalog", "multiband.wcs", "multiband.fitter", "multiband.setup",
        "multiband.results", "multiband.files", "multiband.plotting", "cli_multiband",
        "cli_multiband_catalog",
    },
    "shim": {"fitter", "mgm", "psf_fitter", "results", "utils", "_posterior_methods"},
}
#: Application modules allowed to import the shim (front ends that run the 1.1-style flow).
FRONT_ENDS = {"cli", "cli_fit", "cli_catalog", "__init__"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(rel.parts)
        out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _layer_of(name: str) -> str | None:
    # A subpackage's modules not listed by name share the layer of the subpackage.
    for candidate in (name, name.split(".")[0]):
        for layer, names in LAYERS.items():
            if candidate in names:
                return layer
    return None


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Package-internal modules imported anywhere in the file (function-local imports too)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "imcascade_jax":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("imcascade_jax."):
                found.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("imcascade_jax."))
    return {m for m in found if m}


def test_every_module_has_one_layer():
    unclassified = [m for m in _modules() if _layer_of(m) is None]
    assert not unclassified, f"modules missing from LAYERS and docs/architecture.md: {unclassified}"
    overlap = LAYERS["core"] & LAYERS["application"] | LAYERS["core"] & LAYERS["shim"] | \
        LAYERS["application"] & LAYERS["shim"]
    assert not overlap


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_go_down_the_layers(name):
    layer = _layer_of(name)
    allowed = {"core": {"core"}, "application": {"core", "application"},
               "shim": {"core", "application", "shim"}}[layer]
    if name.split(".")[0] in FRONT_ENDS:
        allowed = allowed | {"shim"}
    offending = {}
    for imported in _imported_modules(_modules()[name]):
        target = _layer_of(imported)
        if target is not None and target not in allowed:
            offending[imported] = target
    assert not offending, f"{layer} module {name!r} imports {offending}"


def _body_length(node: ast.AST) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1


def test_module_and_function_sizes():
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        n_lines = len(text.splitlines())
        if n_lines > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {n_lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = _body_length(node)
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"function {name}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


def test_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [m for m in _modules() if m != "__init__" and f"`{m}`" not in page]
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_no_private_names_imported_across_modules():
    offending = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imcascade_jax"):
                offending += [f"{name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and node.module != "imcascade_jax"]
    assert not offending, offending
