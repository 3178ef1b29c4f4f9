"""The documentation site builds with MkDocs in strict mode (any warning is an error), its API
reference covers every public module, and the docstrings' Sphinx roles become links.

The strict build takes a while: it is marked ``docs`` and left out of the default run
(``python -m pytest -m docs`` runs it, as ``.ci/run`` does). The role conversion itself is
checked quickly, without building, by ``test_sphinx_roles_become_cross_references``.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import imcascade_jax

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
#: Sphinx roles as mkdocstrings would print them literally (in HTML, the backticks become <code>).
LITERAL_ROLE = re.compile(r":(?:py:)?(?:mod|func|meth|class|data|attr|obj|exc):(?:`|<code>)")


def test_api_reference_covers_every_public_module():
    public = {
        name for _, name, _ in pkgutil.iter_modules(imcascade_jax.__path__, "imcascade_jax.")
        if not name.rsplit(".", 1)[-1].startswith("_")
    }
    documented = set()
    for page in API.glob("*.md"):
        documented |= set(re.findall(r"^::: (imcascade_jax[\w.]*)", page.read_text(), flags=re.M))
    assert "imcascade_jax" in documented
    missing = public - documented
    assert not missing, f"modules without an API reference page: {sorted(missing)}"


def test_every_api_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in API.glob("*.md") if f"api/{p.name}" not in nav]
    assert not missing, f"API pages missing from mkdocs.yml's nav: {missing}"


def test_sphinx_roles_become_cross_references():
    """The griffe extension of ``mkdocs_hooks.py`` rewrites every role of the package's docstrings
    (documented targets as autorefs links, others as inline code)."""
    griffe = pytest.importorskip("griffe")
    sys.path.insert(0, str(ROOT))
    try:
        from mkdocs_hooks import SphinxRolesToAutorefs, sphinx_roles_to_autorefs
    finally:
        sys.path.remove(str(ROOT))
    pkg = griffe.load("imcascade_jax", extensions=griffe.load_extensions(SphinxRolesToAutorefs),
                      search_paths=[str(ROOT)])
    analysis, results = pkg["analysis"], pkg["results"]
    assert (sphinx_roles_to_autorefs(":func:`~imcascade_jax.analysis.flux`", analysis)
            == "[`flux`][imcascade_jax.analysis.flux]")
    assert sphinx_roles_to_autorefs(":mod:`imcascade_jax.render`", analysis) == (
        "[`imcascade_jax.render`][imcascade_jax.render]")
    method = results["ImcascadeResults.calc_r50"]
    assert (sphinx_roles_to_autorefs(":meth:`calc_rX`", method)
            == "[`calc_rX`][imcascade_jax.results.ImcascadeResults.calc_rX]")
    assert (sphinx_roles_to_autorefs(":meth:`Fitter.run_nuts <imcascade_jax.fitter.Fitter.run_nuts>`", method)
            == "[`Fitter.run_nuts`][imcascade_jax.fitter.Fitter.run_nuts]")
    # Private, external or unknown targets have no page: plain code, no broken link.
    for role, shown in ((":func:`_solve`", "`_solve`"), (":func:`asdf.open`", "`asdf.open`"),
                        (":class:`jax.tree_util.Partial`", "`jax.tree_util.Partial`"),
                        (":data:`NO_SUCH_NAME`", "`NO_SUCH_NAME`")):
        assert sphinx_roles_to_autorefs(role, analysis) == shown
    left = [obj.path for obj in _objects(pkg) if obj.docstring and LITERAL_ROLE.search(obj.docstring.value)]
    assert not left, f"Sphinx roles left in: {left}"


def _objects(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


@pytest.mark.docs
def test_docs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        pytest.importorskip(module)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    site = tmp_path / "site"
    for page in ("index.html", "api/fitter/index.html", "notebooks/quickstart/index.html",
                 "conventions/index.html", "conventions.png"):
        assert (site / page).is_file(), f"{page} missing from the built site"
    # The docstrings' Sphinx roles are rendered as links, never as literal markup.
    literal = {}
    for page in site.rglob("*.html"):
        found = LITERAL_ROLE.findall(page.read_text(encoding="utf-8"))
        if found:
            literal[str(page.relative_to(site))] = len(found)
    assert not literal, f"literal Sphinx roles in the site: {literal}"
    links = (site / "api" / "results" / "index.html").read_text(encoding="utf-8")
    assert 'href="../analysis/#imcascade_jax.analysis' in links
