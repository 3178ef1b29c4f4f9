"""The documentation site builds with MkDocs in strict mode (any warning is an error), and its
API reference covers every public module."""

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
    for page in ("index.html", "api/fitter/index.html", "notebooks/quickstart/index.html"):
        assert (site / page).is_file(), f"{page} missing from the built site"
